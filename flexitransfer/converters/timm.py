"""timm ViT / FlexiViT state dicts -> FlexiViT."""
from __future__ import annotations

import math
from typing import Optional

from .common import Converted, _arch, _rebase_kernel, _square_grid

def convert_timm(state_dict: dict, base_patch_size=None, num_heads: Optional[int] = None) -> Converted:
    """timm ``VisionTransformer`` / FlexiViT state dict (any patch size).

    ``num_heads`` is not recorded in a state dict: default ``embed_dims // 64``
    (every timm / big_vision ViT-Ti/S/B/L).

    The kernel stays at its own size unless ``base_patch_size`` asks for a
    PI-resize into that store (e.g. 32 for FlexiViT's).
    """
    sd_in = {k.replace('module.', '', 1): v for k, v in state_dict.items()}
    if 'patch_embed.proj.weight' not in sd_in:
        raise KeyError('not a timm ViT state dict: no patch_embed.proj.weight')
    sd = {}
    extras = {}
    for k, v in sd_in.items():
        if k.startswith('patch_embed.proj.'):
            sd['patch_embed.' + k.split('.')[-1]] = v
        elif k.startswith(('head.', 'fc_norm.')):
            extras[k] = v
        elif k == 'pos_embed':
            continue
        else:
            sd[k] = v
    dims = sd['patch_embed.weight'].shape[0]
    has_cls = 'cls_token' in sd
    pos = sd_in['pos_embed']
    n = pos.shape[1]
    if has_cls and math.isqrt(n - 1) ** 2 == n - 1 and math.isqrt(n) ** 2 != n:
        sd['cls_pos_embed'], pos = pos[:, :1], pos[:, 1:]
    sd['pos_embed'] = pos
    layers = 1 + max(int(k.split('.')[1]) for k in sd if k.startswith('blocks.'))
    mlp = sd['blocks.0.mlp.fc1.weight'].shape[0]
    kw = dict(arch=_arch(dims, layers, num_heads or max(1, dims // 64), mlp),
              base_patch_size=tuple(sd['patch_embed.weight'].shape[-2:]),
              base_pos_grid=_square_grid(pos.shape[1], 'pos_embed'), with_cls_token=has_cls,
              pos_embed_cls='cls_pos_embed' in sd, patch_bias='patch_embed.bias' in sd,
              pre_norm='norm_pre.weight' in sd, act='gelu', norm_eps=1e-6)
    _rebase_kernel(sd, kw, base_patch_size)
    return sd, kw, extras
