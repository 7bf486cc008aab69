"""What the converters share: the result type, the arch dict, grid and kernel helpers."""
from __future__ import annotations

import math
from typing import Dict, Tuple

import torch

from ..ops import resize_patch_embed, to_2tuple

Converted = Tuple[Dict[str, torch.Tensor], dict, Dict[str, torch.Tensor]]


def _square_grid(n: int, what: str) -> Tuple[int, int]:
    g = int(round(math.sqrt(n)))
    if g * g != n:
        raise ValueError(f'{what}: {n} position tokens do not form a square grid')
    return (g, g)


def _arch(dims: int, layers: int, heads: int, mlp: int) -> dict:
    return dict(embed_dims=dims, num_layers=layers, num_heads=heads, mlp_ratio=mlp / dims)


def _rebase_kernel(sd: dict, kw: dict, base_patch_size) -> None:
    """PI-resize the stored kernel into a new base size (e.g. 16 -> 32)."""
    if base_patch_size is None:
        return
    new = to_2tuple(base_patch_size)
    sd['patch_embed.weight'] = resize_patch_embed(sd['patch_embed.weight'].double(), new, 'pi').float()
    kw['base_patch_size'] = new
