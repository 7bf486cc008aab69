from .checkpoint import allow_mmengine_checkpoints, check_checkpoint
from .dist import choose_backend, init_distributed
from .hooks import RandomPatchSizeHook
from .loops import MultiPatchTestLoop, MultiPatchValLoop, format_patch_table
from .patch import draw_patch_size, flexi_modules, get_patch_size, set_patch_size, walk_backbone_cfgs
from .validate import check_datasets_nonempty, check_patch_value, validate_patch_config

__all__ = ['allow_mmengine_checkpoints', 'check_checkpoint', 'choose_backend', 'init_distributed',
           'RandomPatchSizeHook', 'MultiPatchTestLoop', 'MultiPatchValLoop', 'format_patch_table', 'draw_patch_size', 'flexi_modules', 'get_patch_size', 'set_patch_size',
           'check_datasets_nonempty', 'check_patch_value', 'validate_patch_config', 'walk_backbone_cfgs']
