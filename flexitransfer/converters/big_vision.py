"""big_vision ``.npz`` (ViT / FlexiViT params) -> FlexiViT."""
from __future__ import annotations

import os

import numpy as np
import torch

from .common import Converted, _arch, _rebase_kernel, _square_grid


def convert_big_vision(src, base_patch_size=None) -> Converted:
    """big_vision ViT / FlexiViT params (``.npz`` path or a flat ``{'a/b': array}`` dict).

    Args:
        src (str | os.PathLike | dict): the ``.npz`` file, or its flat ``{'a/b': array}`` dict.
        base_patch_size (int, optional): PI-resize the kernel into this store. Default: its own size.

    Returns:
        tuple: ``(state_dict, backbone_kwargs, extras)``: FlexiViT-named tensors, the FlexiViT arguments
        that reproduce the source network, and head tensors (classifier, projection) by name.
    """
    if isinstance(src, (str, os.PathLike)):
        with np.load(src, allow_pickle=False) as f:
            params = {k: f[k] for k in f.files}
    else:
        params = dict(src)
    params = {k.replace('params/', '', 1) if k.startswith('params/') else k: v for k, v in params.items()}
    t = lambda k: torch.from_numpy(np.asarray(params[k], dtype=np.float32).copy())
    required = ['embedding/kernel', 'embedding/bias', 'pos_embedding']
    missing = [k for k in required if k not in params]
    if missing:
        raise KeyError(f'not a big_vision ViT checkpoint: missing {missing} (keys look like '
                       f'{sorted(params)[:5]})')
    kernel = t('embedding/kernel')  # (ph, pw, C, D)
    dims = kernel.shape[-1]
    layers = 0
    while f'Transformer/encoderblock_{layers}/LayerNorm_0/scale' in params:
        layers += 1
    if layers == 0:
        raise KeyError('not a big_vision ViT checkpoint: no Transformer/encoderblock_0/...')
    heads = params['Transformer/encoderblock_0/MultiHeadDotProductAttention_0/query/kernel'].shape[1]
    mlp = params['Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel'].shape[1]
    pos = t('pos_embedding')
    sd = {'patch_embed.weight': kernel.permute(3, 2, 0, 1).contiguous(),
          'patch_embed.bias': t('embedding/bias'), 'pos_embed': pos.reshape(1, -1, dims)}
    has_cls = 'cls' in params
    if has_cls:
        sd['cls_token'] = t('cls').reshape(1, 1, dims)
    for i in range(layers):
        p = f'Transformer/encoderblock_{i}/'
        q = f'blocks.{i}.'
        att = p + 'MultiHeadDotProductAttention_0/'
        sd[q + 'norm1.weight'] = t(p + 'LayerNorm_0/scale')
        sd[q + 'norm1.bias'] = t(p + 'LayerNorm_0/bias')
        sd[q + 'attn.qkv.weight'] = torch.cat(
            [t(att + f'{n}/kernel').reshape(dims, dims).T for n in ('query', 'key', 'value')])
        sd[q + 'attn.qkv.bias'] = torch.cat([t(att + f'{n}/bias').reshape(-1) for n in ('query', 'key', 'value')])
        sd[q + 'attn.proj.weight'] = t(att + 'out/kernel').reshape(dims, dims).T
        sd[q + 'attn.proj.bias'] = t(att + 'out/bias')
        sd[q + 'norm2.weight'] = t(p + 'LayerNorm_1/scale')
        sd[q + 'norm2.bias'] = t(p + 'LayerNorm_1/bias')
        for j in (0, 1):
            sd[q + f'mlp.fc{j + 1}.weight'] = t(p + f'MlpBlock_0/Dense_{j}/kernel').T
            sd[q + f'mlp.fc{j + 1}.bias'] = t(p + f'MlpBlock_0/Dense_{j}/bias')
    sd['norm.weight'] = t('Transformer/encoder_norm/scale')
    sd['norm.bias'] = t('Transformer/encoder_norm/bias')
    extras = {}
    if 'head/kernel' in params:
        extras = {'head.weight': t('head/kernel').T.contiguous(), 'head.bias': t('head/bias')}
    kw = dict(arch=_arch(dims, layers, heads, mlp), base_patch_size=tuple(kernel.shape[:2]),
              base_pos_grid=_square_grid(pos.reshape(-1, dims).shape[0], 'pos_embedding'),
              with_cls_token=has_cls, pos_embed_cls=False, patch_bias=True, pre_norm=False,
              act='gelu', norm_eps=1e-6)
    _rebase_kernel(sd, kw, base_patch_size)
    return sd, kw, extras
