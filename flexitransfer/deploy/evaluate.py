"""Test-set metrics of a deployed model, in PyTorch or with its exported graph in ONNX Runtime,
through the same test loop, data and metric code as ``tools/test.py`` (``flexitransfer.apis``)."""
from __future__ import annotations

from typing import Optional

from .predictors import install_onnx

def build_runner(cfg, checkpoint: str, onnx_path: Optional[str] = None, patch_sizes=None,
                 work_dir: Optional[str] = None, data_root=None, threads: Optional[int] = None,
                 log_level: Optional[str] = None):
    """An mmengine Runner as ``tools/test.py`` builds it (checkpoint loaded strictly), the ONNX graph
    installed if given."""
    from ..apis import build_test_runner
    runner = build_test_runner(cfg, checkpoint, patch_sizes=patch_sizes, work_dir=work_dir, data_root=data_root,
                               log_level=log_level)
    if onnx_path:
        install_onnx(runner.model, onnx_path, threads)
    return runner


def evaluate(cfg, checkpoint: str, onnx_path: Optional[str] = None, patch_sizes=None, data_root=None,
             threads: Optional[int] = None, log_level: str = 'WARNING') -> dict:
    """Test-set metrics of the PyTorch model, or of the ONNX graph inside it (as ``runner.test()`` returns them)."""
    from ..apis import evaluate as evaluate_torch
    before = (lambda runner: install_onnx(runner.model, onnx_path, threads)) if onnx_path else None
    return evaluate_torch(cfg, checkpoint, patch_sizes=patch_sizes, data_root=data_root, log_level=log_level,
                          before_test=before)

