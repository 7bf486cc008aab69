"""Checks of a deployed model: output differences, ONNX Runtime vs PyTorch, real test inputs."""
from __future__ import annotations

import copy
from typing import Optional, Sequence

import torch
import torch.nn as nn

from ..ops import to_2tuple
from .export import export_module
from .session import OnnxFunction


class VerificationError(RuntimeError):
    """A deployed model (or its export) differs from the model it came from by more than the tolerance.

    Args:
        message (str): what differs, by how much, and the tolerance.
        result: what was written and measured up to the failing check (``flexitransfer.deploy.BakeResult``).
    """

    def __init__(self, message: str, result=None):
        super().__init__(message)
        self.result = result


def max_abs_diff(a, b) -> float:
    """Max |a - b| over (nested) tensors / data samples.

    Args:
        a, b (torch.Tensor | list | tuple | dict): outputs of the same nesting.

    Returns:
        float: the largest absolute difference (0.0 for empty containers).

    Raises:
        TypeError: an output that is not a tensor, list, tuple or dict.
    """
    if isinstance(a, torch.Tensor):
        return (a.float() - b.float()).abs().max().item()
    if isinstance(a, (list, tuple)):
        return max([max_abs_diff(x, y) for x, y in zip(a, b)] or [0.0])
    if isinstance(a, dict):
        return max([max_abs_diff(a[k], b[k]) for k in a] or [0.0])
    raise TypeError(f'cannot compare outputs of type {type(a).__name__}')



def check_onnx(path: str, model: nn.Module, inputs: Sequence[torch.Tensor], threads: Optional[int] = None) -> float:
    """Max abs difference between the ONNX Runtime outputs of ``path`` and ``model``'s, over ``inputs``.

    Args:
        path (str): the .onnx file exported from ``model``.
        model (nn.Module): the model (the graph's target part of it is run).
        inputs (Sequence[torch.Tensor]): input batches.
        threads (int, optional): ONNX Runtime's intra-op threads.

    Returns:
        float: the largest absolute difference over all inputs and outputs.
    """
    fn = OnnxFunction(path, threads=threads)
    module = export_module(model, fn.meta['target']).eval()
    diff = 0.0
    with torch.no_grad():
        for x in inputs:
            diff = max(diff, max_abs_diff(module(x), fn(x)))
    return diff



def test_inputs(cfg, model: nn.Module, img_size, max_images: int = 4) -> torch.Tensor:
    """Real model inputs: the first test images after the model's data preprocessor, at ``img_size``
    (larger ones are cropped top-left, as a sliding window's first crop; smaller ones resized).

    Args:
        cfg (mmengine.Config): the config whose ``test_dataloader`` is read.
        model (nn.Module): the model whose ``data_preprocessor`` prepares the batch.
        img_size (int | tuple[int, int]): the input size (H, W).
        max_images (int): the batch size. Default: 4.

    Returns:
        torch.Tensor: (B, C, H, W) inputs.
    """
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

