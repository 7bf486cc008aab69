"""Quadtree partitions of an image into patches of sizes s, 2s, 4s, ... and the detail score.

A partition is stored as a **level map**: an integer tensor ``(B, Gh, Gw)`` on the finest grid
(``Gh = H / s``), where each fine cell holds the level ``k`` of the token that covers it (the
token's patch is ``s * 2**k``). A level-``k`` token covers an aligned ``2**k x 2**k`` block of
fine cells, so the map is constant on that block. Level ``num_levels - 1`` is the coarsest (the
quadtree's root cells, which tile the image).

Detail score (``laplacian_detail``): the energy of the Laplacian-pyramid band a coarse patch
cannot represent. A patch of size ``s * 2**k`` seen through the PI-resized kernel behaves like a
patch of size ``s`` on the image average-pooled by ``2**k`` (PI-resize is exact for upsampled
input), so splitting a level-``k`` cell into its four level-``k-1`` children recovers the band

    D_k(cell) = mean over the cell's pixels and channels of (blur_{2^(k-1)}(x) - blur_{2^k}(x))^2

with ``blur_f(x)`` = average-pool by ``f`` and nearest upsample back (``blur_1(x) = x``). For
k = 1 this is the energy a 2s cell loses when each 2x2 pixel block is replaced by its mean.
Flat regions score 0, edges and texture score high; the score is in the squared units of the
input (after the data preprocessor's normalisation).

Partitions come from a threshold on ``D`` (split every cell whose score exceeds it, top-down) or
from a token budget per image (split greedily the highest-scoring cell while the budget allows).
"""
from __future__ import annotations

import heapq
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

__all__ = ['allowed_levels', 'laplacian_detail', 'partition_by_threshold', 'partition_by_budget',
           'uniform_partition', 'token_count', 'level_masks', 'check_partition', 'random_partition']


def allowed_levels(img_hw: Tuple[int, int], base_patch: int, max_levels: int = 3) -> int:
    """How many levels (s, 2s, 4s, ...) tile an image: level k needs ``s * 2**k`` to divide H and W."""
    h, w = img_hw
    if h % base_patch or w % base_patch:
        raise ValueError(f'image size {h}x{w} is not divisible by the finest patch {base_patch}')
    n = 1
    while n < max_levels and h % (base_patch * 2 ** n) == 0 and w % (base_patch * 2 ** n) == 0:
        n += 1
    return n


def _blur(x: torch.Tensor, f: int) -> torch.Tensor:
    if f == 1:
        return x
    return F.interpolate(F.avg_pool2d(x, f), scale_factor=f, mode='nearest')


@torch.no_grad()
def laplacian_detail(x: torch.Tensor, base_patch: int, num_levels: int) -> List[torch.Tensor]:
    """Detail scores ``[None, D_1, ..., D_{L-1}]``: ``D_k`` is ``(B, H/(s 2^k), W/(s 2^k))``, one per
    level-``k`` cell (see the module docstring)."""
    x = x.float()
    s = base_patch
    scores: List[Optional[torch.Tensor]] = [None]
    prev = x
    for k in range(1, num_levels):
        cur = _blur(x, 2 ** k)
        band = (prev - cur).pow(2).mean(1, keepdim=True)
        scores.append(F.avg_pool2d(band, s * 2 ** k)[:, 0])
        prev = cur
    return scores


def uniform_partition(batch: int, fine_grid: Tuple[int, int], level: int, device=None) -> torch.Tensor:
    """Every cell at one level (level 0: all patches s; level 1: all 2s ...)."""
    return torch.full((batch, *fine_grid), int(level), dtype=torch.long, device=device)


def _expand(levels_at_k: torch.Tensor, k: int) -> torch.Tensor:
    f = 2 ** k
    return levels_at_k.repeat_interleave(f, -2).repeat_interleave(f, -1)


def partition_by_threshold(x: torch.Tensor, base_patch: int, threshold: Union[float, torch.Tensor],
                           num_levels: Optional[int] = None, scores=None) -> torch.Tensor:
    """Top-down quadtree: a cell at level k >= 1 is split when its parent was split (or it is a root)
    and ``D_k > threshold``. ``threshold``: a float, or one per image ``(B,)``. Returns the level map."""
    b, _, h, w = x.shape
    if num_levels is None:
        num_levels = allowed_levels((h, w), base_patch)
    if scores is None:
        scores = laplacian_detail(x, base_patch, num_levels)
    thr = torch.as_tensor(threshold, dtype=torch.float32, device=x.device).reshape(-1, 1, 1)
    top = num_levels - 1
    gh, gw = h // base_patch, w // base_patch
    # level per fine cell, refined top-down
    levels = torch.full((b, gh, gw), top, dtype=torch.long, device=x.device)
    for k in range(top, 0, -1):
        split = _expand(scores[k] > thr, k)  # (B, gh, gw): this cell's level-k ancestor wants to split
        levels = torch.where((levels == k) & split, torch.full_like(levels, k - 1), levels)
    return levels


def token_count(levels: torch.Tensor) -> torch.Tensor:
    """Tokens per image (without the class token) of a level map ``(B, Gh, Gw)``: ``(B,)``."""
    return sum(((levels == k).sum((-2, -1)) // (4 ** k)) for k in range(int(levels.max()) + 1))


def partition_by_budget(x: torch.Tensor, base_patch: int, budget: Union[int, float, Sequence],
                        num_levels: Optional[int] = None, scores=None) -> torch.Tensor:
    """Greedy quadtree under a token budget per image: start from the root cells, split the cell with
    the highest detail score while the split (+3 tokens) fits. ``budget``: tokens per image (int), a
    fraction of the finest grid's token count (float in (0, 1]), or one value per image."""
    b, _, h, w = x.shape
    if num_levels is None:
        num_levels = allowed_levels((h, w), base_patch)
    if scores is None:
        scores = laplacian_detail(x, base_patch, num_levels)
    gh, gw = h // base_patch, w // base_patch
    budgets = list(budget) if isinstance(budget, (list, tuple)) or torch.is_tensor(budget) else [budget] * b
    if len(budgets) != b:
        raise ValueError(f'{len(budgets)} budgets for {b} images')
    top = num_levels - 1
    sc = [None] + [s.cpu().tolist() for s in scores[1:]]
    out = torch.full((b, gh, gw), top, dtype=torch.long)
    f_top = 2 ** top
    for i in range(b):
        bud = float(budgets[i])
        bud = int(round(bud * gh * gw)) if isinstance(budgets[i], float) and bud <= 1.0 else int(bud)
        n = (gh // f_top) * (gw // f_top)
        heap = []
        if top > 0:
            for r in range(gh // f_top):
                for c in range(gw // f_top):
                    heapq.heappush(heap, (-sc[top][i][r][c], top, r, c))
        lv = out[i]
        while heap and n + 3 <= bud:
            _, k, r, c = heapq.heappop(heap)
            f = 2 ** k
            lv[r * f:(r + 1) * f, c * f:(c + 1) * f] = k - 1
            n += 3
            if k - 1 > 0:
                for dr in (0, 1):
                    for dc in (0, 1):
                        heapq.heappush(heap, (-sc[k - 1][i][2 * r + dr][2 * c + dc], k - 1, 2 * r + dr, 2 * c + dc))
    return out.to(x.device)


def random_partition(x: torch.Tensor, base_patch: int, generator: torch.Generator,
                     num_levels: Optional[int] = None) -> torch.Tensor:
    """A random budget per image (uniform between all-coarse and all-fine token counts), split greedily
    by detail: the training draw of ``MixedPartitionHook``."""
    b, _, h, w = x.shape
    if num_levels is None:
        num_levels = allowed_levels((h, w), base_patch)
    gh, gw = h // base_patch, w // base_patch
    lo, hi = (gh * gw) // 4 ** (num_levels - 1), gh * gw
    budgets = torch.randint(lo, hi + 1, (b,), generator=generator).tolist()
    return partition_by_budget(x, base_patch, budgets, num_levels)


def level_masks(levels: torch.Tensor, num_levels: int) -> List[torch.Tensor]:
    """Per level k, the bool map ``(B, Gh/2^k, Gw/2^k)`` of the level-k tokens present (a token is
    present when the top-left fine cell of its block holds level k)."""
    return [levels[:, ::2 ** k, ::2 ** k] == k for k in range(num_levels)]


def check_partition(levels: torch.Tensor, num_levels: int) -> None:
    """Raise if a level map is not a valid quadtree partition (blocks uniform and aligned)."""
    if levels.min() < 0 or levels.max() >= num_levels:
        raise ValueError(f'levels must lie in [0, {num_levels}), got [{int(levels.min())}, {int(levels.max())}]')
    gh, gw = levels.shape[-2:]
    for k in range(1, num_levels):
        f = 2 ** k
        if (gh % f or gw % f) and (levels == k).any():
            raise ValueError(f'level {k} (blocks of {f}x{f} cells) does not tile the {gh}x{gw} grid')
        if (levels == k).any():
            m = levels[:, ::f, ::f] == k
            if not torch.equal(_expand(m, k), levels == k):
                raise ValueError(f'level-{k} cells do not form aligned {f}x{f} blocks')
