from .bake import bake_model, deploy_config, infer_img_size, max_abs_diff, to_timm_vit, walk_backbone_cfgs

__all__ = ['bake_model', 'deploy_config', 'infer_img_size', 'max_abs_diff', 'to_timm_vit', 'walk_backbone_cfgs']
