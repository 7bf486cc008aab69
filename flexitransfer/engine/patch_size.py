"""Patch-size policy: which p a model runs at. Not the backbone's business.

``set_patch_size`` sets p on every FlexiViT in a model (wrapped or not), except
those marked ``lock_patch_size = True`` (e.g. a distillation teacher).
``draw_patch_size`` is the training draw, seeded by the iteration so that every
rank of a distributed run picks the same p without communicating.
``record_tokens`` hands the caller what the FlexiViTs of a task model ran (grid, tokens per image).
"""
from __future__ import annotations

import contextlib
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch.nn as nn

from ..models.backbones.flexivit import DEFAULT_PATCH_SIZES, FlexiViT, TokenRecord
from ..ops import to_2tuple


def flexi_modules(model: nn.Module) -> List[FlexiViT]:
    """The FlexiViTs in ``model`` (itself included) whose patch the engine sets: all but those marked
    ``lock_patch_size = True``."""
    return [m for m in model.modules() if isinstance(m, FlexiViT) and not getattr(m, 'lock_patch_size', False)]


def require_flexi_modules(model: nn.Module, purpose: str) -> List[FlexiViT]:
    """``flexi_modules(model)``, or a ValueError naming the model and ``purpose`` when there are none."""
    mods = flexi_modules(model)
    if not mods:
        raise ValueError(f'{type(model).__name__} has no FlexiViT backbone {purpose}')
    return mods


@contextlib.contextmanager
def record_tokens(model: nn.Module) -> Iterator[TokenRecord]:
    """``with record_tokens(model) as rec: model(x, ...)``: every forward of an (unlocked) FlexiViT of
    ``model`` inside the block is given ``rec`` (``FlexiViT.forward(..., record=rec)``), so the caller reads
    the grids and tokens per image it ran (``rec.grids``, ``rec.num_tokens``) without the module keeping any.

    Args:
        model (nn.Module): a task model or a FlexiViT.

    Yields:
        TokenRecord: filled in call order.
    """
    rec = TokenRecord()

    def give(module, args, kwargs):
        return args, dict(kwargs, record=rec)

    mods = require_flexi_modules(model, 'to record tokens of')
    if any('forward' in vars(m) for m in mods):  # e.g. deploy.install_onnx: a graph runs in its place
        raise ValueError(f'a FlexiViT of {type(model).__name__} runs a replaced forward (an installed ONNX '
                         'graph?) that takes no record: record the tokens of the PyTorch model')
    handles = [m.register_forward_pre_hook(give, with_kwargs=True) for m in mods]
    try:
        yield rec
    finally:
        for h in handles:
            h.remove()


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
    """Set the patch size of every (unlocked) FlexiViT in ``model``.

    Args:
        model (nn.Module): a task model or a FlexiViT.
        patch_size (int | tuple[int, int]): the patch its forwards run at.
    """
    for m in require_flexi_modules(model, 'whose patch size can be set'):
        m.patch_size = to_2tuple(patch_size)


def get_patch_size(model: nn.Module) -> Optional[Tuple[int, int]]:
    """The patch size of the first (unlocked) FlexiViT in ``model``, None when it has none."""
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
