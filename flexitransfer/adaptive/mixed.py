"""Mixed patch sizes inside one image: a FlexiViT forward over a quadtree partition.

Every token is embedded with the stored kernel PI-resized to its own patch (``s * 2**k``) and the
position grid resized to its own level's grid, both through the backbone's cached ``_resized`` (one
kernel and one grid per level). The class token and the tokens of all levels form one sequence;
images of a batch with different token counts are padded and the padding is masked out of attention
(a boolean key mask through timm's ``Block(x, attn_mask=...)``). Outputs follow the
backbone's ``out_type``:

* ``cls_token``: the class token; ``avg``: the area-weighted mean of the patch tokens (the mean of
  the dense map below; equals the plain mean for a uniform partition);
* ``featmap``: each token's output scattered back to the finest grid (a level-k token fills its
  ``2**k x 2**k`` cells), NCHW at stride ``s``, so every dense head runs unchanged;
* ``raw``: the class token followed by the dense map's tokens, ``(B, 1 + Gh*Gw, D)``.

``forward_mixed(backbone, x, levels, s)`` runs one forward for a given level map.
``use_mixed_patches(model, policy)`` (context manager) or ``set_mixed_policy(model, policy)``
make every FlexiViT of a task model (classifier, segmentor, ...) run mixed, with the partition
chosen per batch by ``policy(x)``.
"""
from __future__ import annotations

import contextlib
import types
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import torch
import torch.nn.functional as F

from ..models.backbones.flexivit import FlexiViT
from .partition import (allowed_levels, check_partition, level_masks, partition_by_budget,
                        partition_by_threshold, uniform_partition)

__all__ = ['MixedTokens', 'mixed_tokens', 'forward_mixed', 'MixedPatchPolicy', 'set_mixed_policy',
           'use_mixed_patches', 'get_mixed_policy']


@dataclass
class MixedTokens:
    """The embedded sequence of a batch and how to read it back."""
    tokens: torch.Tensor                 # (B, P + Nmax, D), P prefix (class) tokens, padded
    attn_mask: Optional[torch.Tensor]    # (B, 1, 1, P + Nmax) bool key mask (True = real token), None when no padding
    num_tokens: torch.Tensor             # (B,) patch tokens per image (no class token)
    cell_index: torch.Tensor             # (B, Gh, Gw) sequence index (incl. prefix) of the token covering each fine cell
    fine_grid: Tuple[int, int]
    # which token each sequence position holds: ``order[b, i]`` is a slot of the concatenation of the
    # levels' full grids (level k's grid ``level_grids[k]``, ``level_slots[k]`` slots: 0 when the batch has
    # no token at that level); ``valid[b, i]`` is False on padding
    order: Optional[torch.Tensor] = None
    valid: Optional[torch.Tensor] = None
    level_grids: Optional[List[Tuple[int, int]]] = None
    level_slots: Optional[List[int]] = None


def mixed_tokens(backbone: FlexiViT, x: torch.Tensor, levels: torch.Tensor, base_patch: int,
                 num_levels: Optional[int] = None, check: bool = True) -> MixedTokens:
    """Patch + position embedding of a mixed partition (before the blocks)."""
    if x.ndim != 4 or x.shape[1] != backbone.in_channels:
        raise ValueError(f'expected input (B, {backbone.in_channels}, H, W), got {tuple(x.shape)}')
    b, _, h, w = x.shape
    s = int(base_patch)
    if num_levels is None:
        num_levels = max(int(levels.max()) + 1, 1)
    if num_levels > allowed_levels((h, w), s, num_levels):
        raise ValueError(f'{num_levels} levels of patch {s} do not tile a {h}x{w} image')
    gh, gw = h // s, w // s
    if tuple(levels.shape) != (b, gh, gw):
        raise ValueError(f'level map must be (B, H/s, W/s) = {(b, gh, gw)}, got {tuple(levels.shape)}')
    if check:
        check_partition(levels, num_levels)
    masks = level_masks(levels, num_levels)
    embs, keeps, offsets, grids = [], [], [], []
    off = 0
    for k in range(num_levels):
        p = s * 2 ** k
        grid = (h // p, w // p)
        if not bool(masks[k].any()):
            # no token at this level in the whole batch: skip its embedding work
            embs.append(x.new_zeros(b, 0, backbone.embed_dims))
            keeps.append(masks[k].new_zeros(b, 0))
        else:
            weight, pos = backbone._resized((p, p), grid)
            e = F.conv2d(x, weight, backbone.patch_embed.bias, stride=p).flatten(2).transpose(1, 2) + pos
            embs.append(e)
            keeps.append(masks[k].flatten(1))
        offsets.append(off)
        grids.append(grid)
        off += embs[-1].shape[1]
    allt = torch.cat(embs, 1)                       # (B, sum N_k', D)
    keep = torch.cat(keeps, 1)                      # (B, sum N_k')
    n = keep.sum(1)
    nmax = int(n.max())
    order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices  # kept tokens first, in level order
    order = order[:, :nmax]
    seq = torch.gather(allt, 1, order[..., None].expand(-1, -1, allt.shape[-1]))
    # where each concatenated-token slot went in the sequence
    inv = torch.full_like(keep, -1, dtype=torch.long)
    inv.scatter_(1, order, torch.arange(nmax, device=x.device).expand(b, -1))
    # each fine cell -> the slot of its level's token -> its sequence position
    rows = torch.arange(gh, device=x.device)[:, None]
    cols = torch.arange(gw, device=x.device)[None, :]
    slot = torch.zeros_like(levels)
    for k in range(num_levels):
        if embs[k].shape[1] == 0:
            continue
        idx_k = offsets[k] + (rows >> k) * grids[k][1] + (cols >> k)
        slot = torch.where(levels == k, idx_k.expand_as(levels), slot)
    npt = backbone.num_prefix_tokens
    cell_index = torch.gather(inv, 1, slot.flatten(1)).reshape(b, gh, gw) + npt
    if backbone.cls_token is not None:
        cls = backbone.cls_token if backbone.cls_pos_embed is None else backbone.cls_token + backbone.cls_pos_embed
        seq = torch.cat([cls.expand(b, -1, -1), seq], 1)
    seq = backbone.norm_pre(backbone.pos_drop(seq))
    attn_mask = None
    if int(n.min()) != nmax:
        valid = torch.arange(nmax, device=x.device)[None] < n[:, None]
        valid = torch.cat([valid.new_ones(b, npt), valid], 1)
        attn_mask = valid[:, None, None]  # bool, True = attend (SDPA; timm turns it into -inf otherwise; AMP-safe)
    real = torch.arange(nmax, device=x.device)[None] < n[:, None]
    return MixedTokens(seq, attn_mask, n, cell_index, (gh, gw), order, real, grids, [e.shape[1] for e in embs])


def _run_block(backbone, blk, x, attn_mask):
    if getattr(backbone, 'with_cp', False) and backbone.training and torch.is_grad_enabled():
        from torch.utils.checkpoint import checkpoint
        return checkpoint(blk, x, attn_mask, use_reentrant=False)
    return blk(x, attn_mask=attn_mask)


def scatter_dense(y: torch.Tensor, cell_index: torch.Tensor) -> torch.Tensor:
    """Token outputs ``(B, L, D)`` -> dense map ``(B, D, Gh, Gw)`` on the finest grid."""
    b, gh, gw = cell_index.shape
    d = y.shape[-1]
    dense = torch.gather(y, 1, cell_index.flatten(1)[..., None].expand(-1, -1, d))
    return dense.transpose(1, 2).reshape(b, d, gh, gw)


def forward_mixed(backbone: FlexiViT, x: torch.Tensor, levels: torch.Tensor, base_patch: int,
                  num_levels: Optional[int] = None, check: bool = True):
    """``FlexiViT.forward`` over a mixed partition: a tuple, one entry per ``out_indices`` (see module doc)."""
    mt = mixed_tokens(backbone, x, levels, base_patch, num_levels, check)
    backbone.last_grid = mt.fine_grid
    backbone.last_num_tokens = mt.num_tokens
    h = mt.tokens
    last = backbone.num_layers - 1
    outs = []
    for i, blk in enumerate(backbone.blocks):
        h = _run_block(backbone, blk, h, mt.attn_mask)
        if i not in backbone.out_indices:
            continue
        y = backbone.norm(h) if (backbone.final_norm and i == last) else h
        ot = backbone.out_type
        if ot == 'cls_token':
            outs.append(y[:, 0])
            continue
        dense = scatter_dense(y, mt.cell_index)
        if ot == 'avg':
            outs.append(dense.mean((-2, -1)))
        elif ot == 'raw':
            parts = [y[:, :backbone.num_prefix_tokens], dense.flatten(2).transpose(1, 2)]
            outs.append(torch.cat(parts, 1))
        else:
            outs.append([dense, y[:, 0]] if backbone.output_cls_token else dense)
    return tuple(outs)


class MixedPatchPolicy:
    """How a batch is partitioned: finest patch ``base_patch`` (s), up to ``num_levels`` levels
    (s, 2s, 4s; fewer where the image is not divisible), and either a detail ``threshold``, a token
    ``budget`` per image (int, or a fraction of the finest token count), or a fixed ``level``
    (uniform, for checks). ``levels_fn(x)`` overrides all of them (e.g. a forced partition)."""

    def __init__(self, base_patch: int, num_levels: int = 3, threshold: Optional[float] = None,
                 budget=None, level: Optional[int] = None,
                 levels_fn: Optional[Callable[[torch.Tensor], torch.Tensor]] = None):
        if sum(v is not None for v in (threshold, budget, level, levels_fn)) != 1:
            raise ValueError('give exactly one of threshold, budget, level, levels_fn')
        self.base_patch, self.num_levels = int(base_patch), int(num_levels)
        self.threshold, self.budget, self.level, self.levels_fn = threshold, budget, level, levels_fn

    def levels_for(self, x: torch.Tensor) -> Tuple[torch.Tensor, int]:
        n = allowed_levels(tuple(x.shape[-2:]), self.base_patch, self.num_levels)
        if self.levels_fn is not None:
            lv = self.levels_fn(x)
            return lv, max(n, int(lv.max()) + 1)
        if self.level is not None:
            if self.level >= n:
                raise ValueError(f'level {self.level} needs patch {self.base_patch * 2 ** self.level} to divide '
                                 f'the image {tuple(x.shape[-2:])}')
            s = self.base_patch
            return uniform_partition(x.shape[0], (x.shape[-2] // s, x.shape[-1] // s), self.level, x.device), n
        if self.threshold is not None:
            return partition_by_threshold(x, self.base_patch, self.threshold, n), n
        return partition_by_budget(x, self.base_patch, self.budget, n), n

    def __repr__(self):
        what = {k: v for k, v in dict(threshold=self.threshold, budget=self.budget, level=self.level).items()
                if v is not None}
        return f'MixedPatchPolicy(base_patch={self.base_patch}, num_levels={self.num_levels}, {what})'


def _policy_forward(self: FlexiViT, x: torch.Tensor, patch_size=None):
    policy = self.mixed_policy
    levels, n = policy.levels_for(x)
    # partitions built here are valid by construction; a user's levels_fn is checked
    return forward_mixed(self, x, levels, policy.base_patch, n, check=policy.levels_fn is not None)


def _flexi(model: torch.nn.Module) -> List[FlexiViT]:
    mods = [m for m in model.modules() if isinstance(m, FlexiViT) and not getattr(m, 'lock_patch_size', False)]
    if not mods:
        raise ValueError(f'{type(model).__name__} has no FlexiViT backbone to run with mixed patches')
    return mods


def set_mixed_policy(model: torch.nn.Module, policy: Optional[MixedPatchPolicy]) -> None:
    """Make every (unlocked) FlexiViT in ``model`` run mixed patch sizes under ``policy``; ``None``
    restores the ordinary uniform-patch forward. The task model's own forward is untouched: its
    backbone call returns the same structure (class token / pooled vector / stride-s feature maps)."""
    for m in _flexi(model):
        if policy is None:
            m.__dict__.pop('forward', None)
            m.__dict__.pop('mixed_policy', None)
        else:
            m.mixed_policy = policy
            m.forward = types.MethodType(_policy_forward, m)


def get_mixed_policy(model: torch.nn.Module) -> Optional[MixedPatchPolicy]:
    mods = [m for m in model.modules() if isinstance(m, FlexiViT)]
    return getattr(mods[0], 'mixed_policy', None) if mods else None


@contextlib.contextmanager
def use_mixed_patches(model: torch.nn.Module, policy: MixedPatchPolicy):
    """``with use_mixed_patches(model, MixedPatchPolicy(8, budget=0.5)): model(x, mode='predict')``."""
    old = get_mixed_policy(model)
    set_mixed_policy(model, policy)
    try:
        yield model
    finally:
        set_mixed_policy(model, old)
