"""Deploy a model at one patch size: bake, export (ONNX, timm), run in ONNX Runtime, verify, quantise.

One idea per module, imports pointing one way (export <- session <- predictors <- metric; verify):
``bake`` (the patch baked into kernel and position grid; deployment config), ``export`` (ONNX and
timm export, graph metadata), ``session`` (ONNX Runtime sessions), ``predictors`` (an exported
graph inside the task model, per model class), ``verify`` (output differences, real test
inputs), ``metric`` (the test metric through the test loop, in PyTorch or ONNX Runtime),
``quantize`` (int8), ``dtypes``, ``cascade`` (an anytime cascade as one graph per stage), ``fuse``
(ONNX Runtime's transformer fusions of an exported graph: one Attention node per block), ``speed``
(runtimes per patch, timed interleaved: ``tools/benchmark_onnx.py``), ``workflow`` (bake a
checkpoint, write, verify and export: ``tools/resize_deploy.py``).
"""
from ..engine.patch_size import walk_backbone_cfgs  # config walker, used with deploy_config
from .bake import bake_model, deploy_config, infer_img_size
from .cascade import OnnxCascade, export_cascade_onnx
from .dtypes import AUTOCAST_DTYPES, autocast_dtypes, check_autocast
from .export import EXPORT_TARGETS, EXPORTERS, export_module, export_onnx, read_meta, to_timm_vit
from .fuse import fuse_onnx, op_counts
from .metric import evaluate_onnx
from .predictors import has_predictor, install_onnx, register_predictor
from .quantize import quantize_int8
from .session import OnnxFunction, make_session
from .verify import VerificationError, check_onnx, max_abs_diff, test_inputs
from .workflow import BakeResult, bake_checkpoint

__all__ = ['bake_model', 'bake_checkpoint', 'BakeResult', 'VerificationError', 'deploy_config', 'infer_img_size',
           'max_abs_diff', 'to_timm_vit', 'walk_backbone_cfgs', 'AUTOCAST_DTYPES', 'autocast_dtypes',
           'check_autocast', 'EXPORT_TARGETS', 'EXPORTERS', 'check_onnx', 'export_module', 'export_onnx',
           'read_meta', 'quantize_int8', 'OnnxFunction', 'evaluate_onnx', 'has_predictor', 'install_onnx',
           'make_session', 'register_predictor', 'test_inputs', 'OnnxCascade', 'export_cascade_onnx', 'fuse_onnx',
           'op_counts']


def evaluate(*args, **kwargs):
    """The old name of :func:`evaluate_onnx` (documented in earlier READMEs): raises, naming the new names."""
    raise TypeError('flexitransfer.deploy.evaluate was renamed: use flexitransfer.deploy.evaluate_onnx (same '
                    'arguments), or flexitransfer.apis.evaluate for the PyTorch test loop')
