"""The OWL-ViT box prior: one box per token of the grid, as a logit-space bias.

``box = sigmoid(mlp(token) + bias)`` in normalised (cx, cy, w, h) of the *padded* image. The
bias depends only on the token grid (so on the patch size and the padded image size): it is
computed once per (grid, device, dtype) here and reused; nothing else builds it.

Reference: transformers ``OwlViTForObjectDetection.compute_box_bias`` (what we match, and our
test oracle), after scenic ``projects/owl_vit/models/utils.py``:
- centre prior at the cell's bottom-right corner ((j+1)/W, (i+1)/H), clipped to [0, 1], then
  ``logit(x) = log(x + 1e-4) - log1p(-x + 1e-4)`` (the 1e-4 keeps the corner cells finite);
- size prior: transformers uses the cell size per axis (1/W, 1/H); scenic uses 1/W for both
  (its ``full_like(..., 1 / feature_map.shape[-2])``). They agree on square grids, which is
  all either ships with; on non-square padded images we follow transformers (per axis).
"""
from __future__ import annotations

from functools import lru_cache
from typing import Tuple

import torch


def _logit(x: torch.Tensor) -> torch.Tensor:
    return torch.log(x + 1e-4) - torch.log1p(-x + 1e-4)


@lru_cache(maxsize=None)
def _box_bias_cpu(gh: int, gw: int) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(1, gh + 1, dtype=torch.float32) / gh,
                            torch.arange(1, gw + 1, dtype=torch.float32) / gw, indexing='ij')
    xy = torch.stack([xs, ys], -1).reshape(-1, 2).clip(0.0, 1.0)
    wh = torch.tensor([1.0 / gw, 1.0 / gh]).expand_as(xy)
    return torch.cat([_logit(xy), _logit(wh)], -1)  # (gh * gw, 4), row-major like the tokens


@lru_cache(maxsize=256)
def box_bias(grid: Tuple[int, int], device: torch.device = torch.device('cpu'),
             dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(gh*gw, 4) logit-space prior (cx, cy, w, h) for a token grid (gh, gw); cached, read-only."""
    gh, gw = (int(g) for g in grid)
    if gh < 1 or gw < 1:
        raise ValueError(f'box_bias: token grid must be positive, got {grid}')
    return _box_bias_cpu(gh, gw).to(device=device, dtype=dtype)
