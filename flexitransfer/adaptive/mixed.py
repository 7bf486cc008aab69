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

``forward_mixed(backbone, x, levels, s)`` runs one forward for a given level map: the tokens come from
``mixed_tokens`` and go through the backbone's own blocks and outputs (``FlexiViT.forward_tokens``).
``use_mixed_patches(model, policy)`` (context manager) or ``set_mixed_policy(model, policy)`` set the
``mixed_policy`` of every FlexiViT of a task model (classifier, segmentor, ...): their forwards then run
mixed, with the partition chosen per batch by ``policy.embed``. The token counts a forward ran are
returned to whoever asks: ``forward_mixed(..., record=r)``, or ``engine.record_tokens(model)`` around a
task model's forward.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import torch

from ..engine.patch_size import require_flexi_modules
from ..models.backbones.flexivit import FlexiViT, TokenRecord, TokenSequence
from .partition import (
    allowed_levels,
    check_partition,
    level_masks,
    partition_by_budget,
    partition_by_threshold,
    uniform_partition,
)

__all__ = ['MixedTokens', 'mixed_tokens', 'forward_mixed', 'MixedPatchPolicy', 'set_mixed_policy',
           'use_mixed_patches', 'get_mixed_policy']


@dataclass
class MixedTokens(TokenSequence):
    """The embedded sequence of a batch and how to read it back (``TokenSequence``: ``tokens`` padded to
    the largest count, ``attn_mask`` None when nothing is padded, ``num_tokens`` per image, ``cell_index``
    into the sequence incl. the prefix, ``grid`` the finest grid).

    Which token each sequence position holds: ``order[b, i]`` is a slot of the concatenation of the
    levels' full grids (level k's grid ``level_grids[k]``, ``level_slots[k]`` slots: 0 when the batch has
    no token at that level); ``valid[b, i]`` is False on padding.
    """
    order: Optional[torch.Tensor] = None
    valid: Optional[torch.Tensor] = None
    level_grids: Optional[List[Tuple[int, int]]] = None
    level_slots: Optional[List[int]] = None


def mixed_tokens(backbone: FlexiViT, x: torch.Tensor, levels: torch.Tensor, base_patch: int,
                 num_levels: Optional[int] = None, check: bool = True) -> MixedTokens:
    """Patch + position embedding of a mixed partition (before the blocks).

    Args:
        backbone (FlexiViT): embeds each level with its ``embed_patches`` and adds its prefix.
        x (Tensor): images (B, C, H, W).
        levels (Tensor): level map (B, H/s, W/s): the level k of the token covering each finest cell.
        base_patch (int): the finest patch s (level k: patch ``s * 2**k``).
        num_levels (int, optional): levels of the quadtree; default ``levels.max() + 1``.
        check (bool): check that ``levels`` is an aligned quadtree partition.

    Returns:
        MixedTokens: the padded sequence, its key mask and how each cell reads its token back.
    """
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
            embs.append(backbone.embed_patches(x, (p, p))[0])
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
    seq = backbone.add_prefix(seq)
    attn_mask = None
    real = torch.arange(nmax, device=x.device)[None] < n[:, None]
    if int(n.min()) != nmax:
        valid = torch.cat([real.new_ones(b, npt), real], 1)
        attn_mask = valid[:, None, None]  # bool, True = attend (SDPA; timm turns it into -inf otherwise; AMP-safe)
    return MixedTokens(seq, (gh, gw), num_tokens=n, attn_mask=attn_mask, cell_index=cell_index, order=order,
                       valid=real, level_grids=grids, level_slots=[e.shape[1] for e in embs])


def forward_mixed(backbone: FlexiViT, x: torch.Tensor, levels: torch.Tensor, base_patch: int,
                  num_levels: Optional[int] = None, check: bool = True, record: Optional[TokenRecord] = None):
    """``FlexiViT.forward`` over a mixed partition (see the module doc).

    Args:
        backbone, x, levels, base_patch, num_levels, check: as ``mixed_tokens``.
        record (TokenRecord, optional): gets the finest grid and the patch tokens per image.

    Returns:
        tuple: one entry per ``out_indices`` of the backbone.
    """
    return backbone.forward_tokens(mixed_tokens(backbone, x, levels, base_patch, num_levels, check), record)


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

    def embed(self, backbone: FlexiViT, x: torch.Tensor) -> MixedTokens:
        """The mixed sequence of a batch under this policy (``FlexiViT.embed`` calls it when this policy
        is the backbone's ``mixed_policy``).

        Args:
            backbone (FlexiViT): the backbone whose embedding is used.
            x (Tensor): images (B, C, H, W).

        Returns:
            MixedTokens: see ``mixed_tokens``.
        """
        levels, n = self.levels_for(x)
        # partitions built here are valid by construction; a user's levels_fn is checked
        return mixed_tokens(backbone, x, levels, self.base_patch, n, check=self.levels_fn is not None)

    def __repr__(self):
        what = {k: v for k, v in dict(threshold=self.threshold, budget=self.budget, level=self.level).items()
                if v is not None}
        return f'MixedPatchPolicy(base_patch={self.base_patch}, num_levels={self.num_levels}, {what})'


def set_mixed_policy(model: torch.nn.Module, policy: Optional[MixedPatchPolicy]) -> None:
    """Make every (unlocked) FlexiViT in ``model`` run mixed patch sizes under ``policy``.

    The task model's own forward is untouched: its backbone call returns the same structure (class token /
    pooled vector / stride-s feature maps). A backbone call with an explicit patch size still runs uniform.

    Args:
        model (nn.Module): a task model or a FlexiViT.
        policy (MixedPatchPolicy, optional): None restores the ordinary uniform-patch forward.
    """
    for m in require_flexi_modules(model, 'to run with mixed patches'):
        m.mixed_policy = policy


def get_mixed_policy(model: torch.nn.Module) -> Optional[MixedPatchPolicy]:
    """The mixed policy of the first FlexiViT in ``model`` (None: uniform patches, or no FlexiViT)."""
    mods = [m for m in model.modules() if isinstance(m, FlexiViT)]
    return mods[0].mixed_policy if mods else None


@contextlib.contextmanager
def use_mixed_patches(model: torch.nn.Module, policy: MixedPatchPolicy):
    """``with use_mixed_patches(model, MixedPatchPolicy(8, budget=0.5)): model(x, mode='predict')``; the
    previous policy comes back on exit."""
    old = get_mixed_policy(model)
    set_mixed_policy(model, policy)
    try:
        yield model
    finally:
        set_mixed_policy(model, old)
