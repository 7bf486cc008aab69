"""Checks of a deployed model: output differences, ONNX Runtime vs PyTorch, real test inputs."""
from __future__ import annotations

import copy
from typing import Optional, Sequence

import torch
import torch.nn as nn

from ..ops import to_2tuple
from .export import export_module
from .session import OnnxFunction

def max_abs_diff(a, b) -> float:
    """Max |a - b| over (nested) tensors / data samples."""
    if isinstance(a, torch.Tensor):
        return (a.float() - b.float()).abs().max().item()
    if isinstance(a, (list, tuple)):
        return max([max_abs_diff(x, y) for x, y in zip(a, b)] or [0.0])
    if isinstance(a, dict):
        return max([max_abs_diff(a[k], b[k]) for k in a] or [0.0])
    raise TypeError(f'cannot compare outputs of type {type(a).__name__}')



def check_onnx(path: str, model: nn.Module, inputs: Sequence[torch.Tensor], threads: Optional[int] = None) -> float:
    """Max abs difference between the ONNX Runtime outputs of ``path`` and ``model``'s, over ``inputs``."""
    fn = OnnxFunction(path, threads=threads)
    module = export_module(model, fn.meta['target']).eval()
    diff = 0.0
    with torch.no_grad():
        for x in inputs:
            diff = max(diff, max_abs_diff(module(x), fn(x)))
    return diff



def test_inputs(cfg, model: nn.Module, img_size, max_images: int = 4) -> torch.Tensor:
    """Real model inputs: the first test images after the model's data preprocessor, at ``img_size``
    (larger ones are cropped top-left, as a sliding window's first crop; smaller ones resized)."""
    import torch.nn.functional as F
    from mmengine.runner import Runner
    dl = copy.deepcopy(cfg.test_dataloader)
    dl['batch_size'] = max_images
    dl['num_workers'] = 0
    dl['persistent_workers'] = False
    batch = next(iter(Runner.build_dataloader(dl)))
    with torch.no_grad():
        x = model.data_preprocessor(batch, False)['inputs']
    h, w = to_2tuple(img_size)
    if x.shape[-2] >= h and x.shape[-1] >= w:
        return x[..., :h, :w].contiguous()
    return F.interpolate(x, size=(h, w), mode='bilinear', align_corners=False)

