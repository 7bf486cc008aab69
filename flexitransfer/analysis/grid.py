"""Token grids and images: token maps, a common grid for two patch sizes, token -> pixels.

Two patch sizes give two token grids over the same image. To compare them token by token
we put both on the *coarser* grid (the one with fewer cells per side) by average-pooling
the finer map (``adaptive_avg_pool2d``: exact block means when the grids nest, e.g. 12x12
-> 4x4; overlapping near-equal windows when they do not, e.g. 6x6 -> 4x4).
"""
from __future__ import annotations

from functools import lru_cache
from typing import Tuple

import torch
import torch.nn.functional as F


def token_map(tokens: torch.Tensor, grid: Tuple[int, int], num_prefix: int) -> torch.Tensor:
    """(B, [prefix+]N, D) tokens -> (B, D, gh, gw) map of the patch tokens."""
    gh, gw = grid
    patches = tokens[:, num_prefix:]
    if patches.shape[1] != gh * gw:
        raise ValueError(f'{patches.shape[1]} patch tokens do not fill a {gh}x{gw} grid')
    return patches.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], gh, gw)


def common_grid(a: Tuple[int, int], b: Tuple[int, int]) -> Tuple[int, int]:
    """The coarser of two grids (per side), on which both token maps are compared."""
    return min(a[0], b[0]), min(a[1], b[1])


def pooled_rows(fmap: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
    """(B, D, h, w) map average-pooled to ``grid`` -> (B * gh * gw, D) rows (image-major)."""
    if tuple(fmap.shape[-2:]) != tuple(grid):
        fmap = F.adaptive_avg_pool2d(fmap, grid)
    return fmap.flatten(2).transpose(1, 2).reshape(-1, fmap.shape[1])


def to_pixels(maps: torch.Tensor, patch: Tuple[int, int]) -> torch.Tensor:
    """(..., gh, gw) per-token values -> (..., gh*ph, gw*pw): token (i, j) covers pixels
    [i*ph, (i+1)*ph) x [j*pw, (j+1)*pw) of the image, as the patch embedding cuts it."""
    ph, pw = patch
    return maps.repeat_interleave(ph, dim=-2).repeat_interleave(pw, dim=-1)


def token_centres(grid: Tuple[int, int], img_hw: Tuple[int, int]) -> torch.Tensor:
    """(N, 2) pixel centres (y, x) of the tokens of ``grid`` over an image, row-major."""
    (gh, gw), (h, w) = grid, img_hw
    ys = (torch.arange(gh, dtype=torch.float64) + 0.5) * h / gh
    xs = (torch.arange(gw, dtype=torch.float64) + 0.5) * w / gw
    return torch.stack(torch.meshgrid(ys, xs, indexing='ij'), -1).reshape(-1, 2)


@lru_cache(maxsize=256)
def region_of_tokens(grid: Tuple[int, int], img_hw: Tuple[int, int], regions: Tuple[int, int]) -> torch.Tensor:
    """(N,) index of the cell of a ``regions`` grid over the image that holds each token's centre
    (depends on sizes only: cached; do not modify the returned tensor)."""
    c = token_centres(grid, img_hw)
    (h, w), (rh, rw) = img_hw, regions
    r = (c[:, 0] * rh / h).floor().long().clamp(0, rh - 1)
    q = (c[:, 1] * rw / w).floor().long().clamp(0, rw - 1)
    return r * rw + q
