"""Attention maps over the token grid: the class token's attention per head, and rollout.

Input are attention probabilities (B, heads, L, L) as recorded by
``flexitransfer.analysis.record`` (rows are distributions over keys).
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch


def query_attention(probs: torch.Tensor, grid: Tuple[int, int], num_prefix: int) -> torch.Tensor:
    """(B, H, gh, gw): the class token's attention to every patch token; without a class
    token, the mean attention each patch token receives (mean over all queries).

    Values are the softmax weights themselves (a class token's row also gives weight to
    itself, so over the patches it sums to 1 minus that).
    """
    gh, gw = grid
    if probs.shape[-1] != num_prefix + gh * gw:
        raise ValueError(f'attention over {probs.shape[-1]} tokens does not match {num_prefix} prefix + '
                         f'{gh}x{gw} patch tokens')
    row = probs[..., 0, :] if num_prefix else probs.mean(dim=-2)
    return row[..., num_prefix:].reshape(*probs.shape[:-2], gh, gw)


def rollout(probs: Sequence[torch.Tensor], residual: float = 0.5) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema, 2020): per layer the head-mean attention mixed with
    the identity for the residual path, ``A = (1 - residual) * mean_h(P) + residual * I``
    (rows renormalised), multiplied from the first layer to the last. Returns (B, L, L),
    row-stochastic; feed it to ``query_attention`` with a heads axis of 1."""
    if not 0 <= residual <= 1:
        raise ValueError(f'residual must be in [0, 1], got {residual}')
    out = None
    for p in probs:
        a = p.mean(dim=1)
        eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
        a = (1 - residual) * a + residual * eye
        a = a / a.sum(dim=-1, keepdim=True)
        out = a if out is None else a @ out
    if out is None:
        raise ValueError('rollout needs at least one layer of attention')
    return out
