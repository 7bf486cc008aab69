from .bake import bake_model, deploy_config, infer_img_size, max_abs_diff, to_timm_vit, walk_backbone_cfgs
from .dtypes import AUTOCAST_DTYPES, autocast_dtypes, check_autocast
from .onnx import EXPORT_TARGETS, EXPORTERS, check_onnx, export_onnx, read_meta
from .quantize import quantize_int8
from .runtime import OnnxFunction, build_runner, evaluate, install_onnx, make_session, register_predictor

__all__ = ['bake_model', 'deploy_config', 'infer_img_size', 'max_abs_diff', 'to_timm_vit', 'walk_backbone_cfgs',
           'AUTOCAST_DTYPES', 'autocast_dtypes', 'check_autocast', 'EXPORT_TARGETS', 'EXPORTERS', 'check_onnx', 'export_onnx',
           'read_meta', 'quantize_int8', 'OnnxFunction', 'build_runner', 'evaluate', 'install_onnx', 'make_session',
           'register_predictor']
