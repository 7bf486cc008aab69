"""Cross-scale token correspondence: do tokens at one patch size find "their" token at another?

For the tokens of an image at patch size a (query) and at patch size b (target), the cosine
similarity of every query token to every target token; a query token *corresponds* when its
most similar target token lies in the same image region. Regions are the cells of the
coarser of the two grids (``grid.common_grid``), and a token belongs to the cell holding its
centre. Chance level: the expected hit rate of a target token drawn uniformly at random,
i.e. for each query token the fraction of target tokens in its region, averaged.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F

from .grid import common_grid, region_of_tokens


def cosine_similarity(query: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B, Nq, D) x (B, Nt, D) -> (B, Nq, Nt) cosine similarities."""
    return F.normalize(query.double(), dim=-1) @ F.normalize(target.double(), dim=-1).transpose(-2, -1)


def correspondence(query: torch.Tensor, target: torch.Tensor, grid_q: Tuple[int, int], grid_t: Tuple[int, int],
                   img_hw: Tuple[int, int]) -> Tuple[int, int, float]:
    """Patch tokens (B, Nq, D) at grid_q and (B, Nt, D) at grid_t of the same images.

    Returns (hits, count, chance): how many query tokens' most similar target token is in
    their region, out of how many, and the chance probability of a hit.
    """
    regions = common_grid(grid_q, grid_t)
    rq = region_of_tokens(grid_q, img_hw, regions).to(query.device)
    rt = region_of_tokens(grid_t, img_hw, regions).to(query.device)
    if query.shape[1] != rq.numel() or target.shape[1] != rt.numel():
        raise ValueError(f'token counts {query.shape[1]}, {target.shape[1]} do not match grids {grid_q}, {grid_t}')
    best = cosine_similarity(query, target).argmax(dim=-1)   # (B, Nq)
    hits = int((rt[best] == rq[None]).sum())
    chance = float((rq[:, None] == rt[None, :]).double().mean(dim=1).mean())
    return hits, best.numel(), chance
