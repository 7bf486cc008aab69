"""The OWL-ViT box prior: one box per token of the grid, as a logit-space bias.

``box = sigmoid(mlp(token) + bias)`` in normalised (cx, cy, w, h) of the *padded* image. The
bias depends only on the token grid (so on the patch size and the padded image size) and on
where the centre prior sits in the cell: it is computed once per (grid, centre, device, dtype)
here and reused; nothing else builds it.

Reference: transformers ``OwlViTForObjectDetection.compute_box_bias`` (what we match, and our
test oracle), after scenic ``projects/owl_vit/models/utils.py``:
- centre prior at the cell's bottom-right corner ((j+1)/W, (i+1)/H), clipped to [0, 1], then
  ``logit(x) = log(x + 1e-4) - log1p(-x + 1e-4)`` (the 1e-4 keeps the corner cells finite);
- size prior: transformers uses the cell size per axis (1/W, 1/H); scenic uses 1/W for both
  (its ``full_like(..., 1 / feature_map.shape[-2])``). They agree on square grids, which is
  all either ships with; on non-square padded images we follow transformers (per axis).

``centre='corner'`` (default) is that reference, what released OWL-ViT checkpoints were trained
with. ``centre='cell'`` puts the centre prior at the cell's own centre ((j+0.5)/W, (i+0.5)/H),
everything else equal. Training from scratch it matters: with the corner prior an object centred
in a cell is equally far from the priors of four tokens (its cell and the three up / left of it),
so the Hungarian matching has no preferred token and flips between them; with the cell prior the
token whose cell holds the object's centre is the nearest prior.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Tuple

import torch

CENTRES = ('corner', 'cell')


def _logit(x: torch.Tensor) -> torch.Tensor:
    return torch.log(x + 1e-4) - torch.log1p(-x + 1e-4)


@lru_cache(maxsize=256)
def _box_bias_cpu(gh: int, gw: int, centre: str = 'corner') -> torch.Tensor:
    start = 1.0 if centre == 'corner' else 0.5  # corner: exactly transformers' arange(1, W + 1) / W
    ys, xs = torch.meshgrid(torch.arange(start, gh + 1, dtype=torch.float32)[:gh] / gh,
                            torch.arange(start, gw + 1, dtype=torch.float32)[:gw] / gw, indexing='ij')
    xy = torch.stack([xs, ys], -1).reshape(-1, 2).clip(0.0, 1.0)
    wh = torch.tensor([1.0 / gw, 1.0 / gh]).expand_as(xy)
    return torch.cat([_logit(xy), _logit(wh)], -1)  # (gh * gw, 4), row-major like the tokens


@lru_cache(maxsize=256)
def box_bias(grid: Tuple[int, int], device: torch.device = torch.device('cpu'),
             dtype: torch.dtype = torch.float32, centre: str = 'corner') -> torch.Tensor:
    """(gh*gw, 4) logit-space prior (cx, cy, w, h) for a token grid (gh, gw); cached, read-only.
    ``centre``: 'corner' (OWL-ViT / transformers: the cell's bottom-right corner) or 'cell' (its centre)."""
    gh, gw = (int(g) for g in grid)
    if gh < 1 or gw < 1:
        raise ValueError(f'box_bias: token grid must be positive, got {grid}')
    if centre not in CENTRES:
        raise ValueError(f'box_bias: centre must be one of {CENTRES}, got {centre!r}')
    return _box_bias_cpu(gh, gw, centre).to(device=device, dtype=dtype)
