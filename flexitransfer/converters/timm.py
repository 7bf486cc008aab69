"""timm ViT / FlexiViT state dicts -> FlexiViT.

The architecture is read from the tensors: patch size (``patch_embed.proj.weight``), embed
dims, depth, MLP ratio, qkv bias, class token, whether the class token has a position
embedding (timm's ``no_embed_class``: ``pos_embed`` holds only the grid although a
``cls_token`` exists, as in timm's ``flexivit_*``), the position grid (``pos_embed`` length
minus the prefix tokens; square, or the image size of the hub ``config.json``), ``norm_pre``
(CLIP-style pre-norm) and the final ``norm`` (absent when timm pools through ``fc_norm``).
What a state dict does not record (heads, activation, LayerNorm eps) comes from the timm hub
``config.json`` when there is one (the model it names is built on the meta device: no memory,
no download), else the defaults ``embed_dims // 64`` heads, GELU, eps 1e-6 (1e-5 with
``norm_pre``: timm's CLIP towers), or ``num_heads``.
"""
from __future__ import annotations

import math
import re
from typing import Optional

from .common import Converted, _arch, _rebase_kernel, _square_grid

_BLOCK_KEY = re.compile(r'blocks\.\d+\.(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)$')
_TOP_KEYS = {'cls_token', 'pos_embed', 'patch_embed.proj.weight', 'patch_embed.proj.bias', 'norm_pre.weight',
             'norm_pre.bias', 'norm.weight', 'norm.bias'}
_HEAD_PREFIXES = ('head.', 'fc_norm.', 'attn_pool.')
#: pieces of timm ViT variants that a FlexiViT (plain pre-LN ViT) has no place for
_UNSUPPORTED = (('reg_token', 'register tokens'), ('dist_token', 'a distillation token'),
                ('.ls1.', 'layer scale'), ('.ls2.', 'layer scale'), ('q_norm', 'qk-norm'), ('k_norm', 'qk-norm'),
                ('fc1_g', 'a SwiGLU MLP'), ('mlp.norm', 'a norm inside the MLP'),
                ('attn.norm', 'a norm inside attention'),
                ('patch_embed.norm', 'a norm in the patch embedding'), ('mask_token', 'a mask token'))
_ACT_NAMES = {'GELU': 'gelu', 'GELUTanh': 'gelu_tanh', 'QuickGELU': 'quick_gelu'}


def timm_config_hints(config) -> dict:
    """``num_heads``, ``act``, ``norm_eps``, ``img_size`` of the model a timm hub ``config.json``
    names (``architecture`` + ``model_args``), built on the meta device; {} when there is no such
    config or timm cannot build it."""
    if not isinstance(config, dict) or not isinstance(config.get('architecture'), str):
        return {}
    try:
        import timm
        import torch
        with torch.device('meta'):
            m = timm.create_model(config['architecture'], pretrained=False, **dict(config.get('model_args') or {}))
        blk = m.blocks[0]
    except Exception:
        return {}
    act = blk.mlp.act
    name = 'GELUTanh' if getattr(act, 'approximate', 'none') == 'tanh' else type(act).__name__
    hints = dict(num_heads=int(blk.attn.num_heads), norm_eps=float(getattr(blk.norm1, 'eps', 1e-6)),
                 img_size=tuple(getattr(m.patch_embed, 'img_size', None) or ()) or None)
    if name in _ACT_NAMES:
        hints['act'] = _ACT_NAMES[name]
    return hints


def _grid(n: int, has_cls: bool, patch, img_size):
    """(grid, class token has a position) from ``pos_embed``'s length."""
    if img_size:
        g = (img_size[0] // patch[0], img_size[1] // patch[1])
        if n == g[0] * g[1]:
            return g, False
        if has_cls and n == g[0] * g[1] + 1:
            return g, True
    if has_cls and math.isqrt(n - 1) ** 2 == n - 1 and math.isqrt(n) ** 2 != n:
        return _square_grid(n - 1, 'pos_embed'), True
    if math.isqrt(n) ** 2 != n:
        raise ValueError(f'timm pos_embed has {n} tokens: neither a square grid nor a class token plus one; '
                         f'a non-square grid needs the hub config.json (its img_size) next to the weights')
    return _square_grid(n, 'pos_embed'), False


def convert_timm(state_dict: dict, base_patch_size=None, num_heads: Optional[int] = None,
                 config: Optional[dict] = None) -> Converted:
    """timm ``VisionTransformer`` / FlexiViT state dict (any patch size).

    ``num_heads`` is not recorded in a state dict: ``num_heads`` if given, else the hub
    ``config``'s model, else ``embed_dims // 64`` (every timm / big_vision ViT-Ti/S/B/L).

    The kernel stays at its own size unless ``base_patch_size`` asks for a
    PI-resize into that store (e.g. 32 for FlexiViT's).

    Args:
        state_dict (dict): the timm state dict.
        base_patch_size (int, optional): PI-resize the kernel into this store. Default: its own size.
        num_heads (int, optional): attention heads (see above).
        config (dict, optional): the hub directory's ``config.json``.

    Returns:
        tuple: ``(state_dict, backbone_kwargs, extras)``: FlexiViT-named tensors, the FlexiViT arguments
        that reproduce the source network, and head tensors (classifier, projection) by name.
    """
    sd_in = {k.replace('module.', '', 1): v for k, v in state_dict.items()}
    if 'patch_embed.proj.weight' not in sd_in:
        raise KeyError('not a timm ViT state dict: no patch_embed.proj.weight')
    unknown = [k for k in sd_in if not (k in _TOP_KEYS or _BLOCK_KEY.match(k) or k.startswith(_HEAD_PREFIXES))]
    if unknown:
        what = sorted({d for k in unknown for s, d in _UNSUPPORTED if s in k}) or ['tensors of another layout']
        raise ValueError(f'timm checkpoint with {", ".join(what)} ({len(unknown)} tensors, e.g. {unknown[:3]}): '
                         f'a FlexiViT is a plain ViT (class token, pre-LN blocks) and cannot hold them; '
                         f'choose a plain ViT / FlexiViT checkpoint')
    sd = {}
    extras = {}
    for k, v in sd_in.items():
        if k.startswith('patch_embed.proj.'):
            sd['patch_embed.' + k.split('.')[-1]] = v
        elif k.startswith(_HEAD_PREFIXES):
            extras[k] = v
        elif k != 'pos_embed':
            sd[k] = v
    dims = sd['patch_embed.weight'].shape[0]
    patch = tuple(sd['patch_embed.weight'].shape[-2:])
    has_cls = 'cls_token' in sd
    hints = timm_config_hints(config)
    pos = sd_in['pos_embed']
    grid, cls_pos = _grid(pos.shape[1], has_cls, patch, hints.get('img_size'))
    if cls_pos:
        sd['cls_pos_embed'], pos = pos[:, :1], pos[:, 1:]
    sd['pos_embed'] = pos
    layers = 1 + max(int(k.split('.')[1]) for k in sd if k.startswith('blocks.'))
    mlp = sd['blocks.0.mlp.fc1.weight'].shape[0]
    pre_norm = 'norm_pre.weight' in sd
    kw = dict(arch=_arch(dims, layers, num_heads or hints.get('num_heads') or max(1, dims // 64), mlp),
              base_patch_size=patch, base_pos_grid=grid, with_cls_token=has_cls, pos_embed_cls=cls_pos,
              patch_bias='patch_embed.bias' in sd, pre_norm=pre_norm, final_norm='norm.weight' in sd,
              qkv_bias='blocks.0.attn.qkv.bias' in sd, act=hints.get('act', 'gelu'),
              norm_eps=hints.get('norm_eps', 1e-5 if pre_norm else 1e-6))
    _rebase_kernel(sd, kw, base_patch_size)
    return sd, kw, extras
