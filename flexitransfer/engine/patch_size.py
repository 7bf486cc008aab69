"""Patch-size policy: which p a model runs at. Not the backbone's business.

``set_patch_size`` sets p on every FlexiViT in a model (wrapped or not), except
those marked ``lock_patch_size = True`` (e.g. a distillation teacher).
``draw_patch_size`` is the training draw, seeded by the iteration so that every
rank of a distributed run picks the same p without communicating.
"""
from __future__ import annotations

from typing import Iterator, Optional, Sequence, Tuple

import numpy as np
import torch.nn as nn

from ..models.backbones.flexivit import DEFAULT_PATCH_SIZES, FlexiViT
from ..ops import to_2tuple


def flexi_modules(model: nn.Module):
    return [m for m in model.modules() if isinstance(m, FlexiViT) and not getattr(m, 'lock_patch_size', False)]


def walk_backbone_cfgs(node, path=()) -> Iterator[Tuple[tuple, dict]]:
    """(path, cfg) of every FlexiViT config dict in a (model) config whose patch size the engine sets
    (not locked): the config-side twin of ``flexi_modules``."""
    if isinstance(node, dict):
        if node.get('type') == 'FlexiViT' and not node.get('lock_patch_size', False):
            yield path, node
        for k, v in node.items():
            yield from walk_backbone_cfgs(v, path + (k,))
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield from walk_backbone_cfgs(v, path + (i,))


def set_patch_size(model: nn.Module, patch_size) -> None:
    mods = flexi_modules(model)
    if not mods:
        raise ValueError(f'{type(model).__name__} has no FlexiViT backbone whose patch size can be set')
    for m in mods:
        m.patch_size = to_2tuple(patch_size)


def get_patch_size(model: nn.Module) -> Optional[Tuple[int, int]]:
    mods = flexi_modules(model)
    return mods[0].patch_size if mods else None


def normalize_probs(patch_sizes: Sequence, probs: Optional[Sequence[float]]) -> Optional[np.ndarray]:
    if probs is None:
        return None
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape != (len(patch_sizes),) or (probs < 0).any() or probs.sum() <= 0:
        raise ValueError(f'probs must be {len(patch_sizes)} non-negative weights, one per patch size; got {probs}')
    return probs / probs.sum()


def draw_patch_size(iteration: int, patch_sizes: Sequence = DEFAULT_PATCH_SIZES,
                    probs: Optional[Sequence[float]] = None, seed: int = 0):
    """The patch size of training iteration ``iteration``: a pure function of (seed, iteration)."""
    rng = np.random.default_rng([int(seed), int(iteration)])
    idx = rng.choice(len(patch_sizes), p=normalize_probs(patch_sizes, probs))
    return patch_sizes[int(idx)]
