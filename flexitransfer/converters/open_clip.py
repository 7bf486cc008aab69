"""open_clip / OpenAI-CLIP image towers (``visual.*``) -> FlexiViT."""
from __future__ import annotations

from typing import Optional

from .common import Converted, _arch, _rebase_kernel, _square_grid


def convert_open_clip(state_dict: dict, base_patch_size=None, quick_gelu: Optional[bool] = None,
                      num_heads: Optional[int] = None) -> Converted:
    """Image tower of an open_clip / OpenAI-CLIP ViT (``visual.*`` keys).

    ``quick_gelu``: OpenAI's weights use QuickGELU; most open_clip LAION models
    use GELU. Defaults to QuickGELU when unknown (OpenAI format). ``num_heads``
    defaults to ``width // 64`` (open_clip's head_width).

    Args:
        state_dict (dict): the open_clip / OpenAI-CLIP state dict.
        base_patch_size (int, optional): PI-resize the kernel into this store. Default: its own size.
        quick_gelu (bool, optional): the activation is QuickGELU. Default: unknown, QuickGELU.
        num_heads (int, optional): attention heads. Default: ``width // 64``.

    Returns:
        tuple: ``(state_dict, backbone_kwargs, extras)``: FlexiViT-named tensors, the FlexiViT arguments
        that reproduce the source network, and head tensors (classifier, projection) by name.
    """
    sd_in = {k.replace('module.', '', 1): v for k, v in state_dict.items()}
    if 'visual.conv1.weight' not in sd_in:
        if 'conv1.weight' in sd_in:
            sd_in = {'visual.' + k: v for k, v in sd_in.items()}
        else:
            raise KeyError('not a CLIP ViT image tower: no visual.conv1.weight')
    v = {k[len('visual.'):]: t for k, t in sd_in.items() if k.startswith('visual.')}
    dims = v['conv1.weight'].shape[0]
    pe = v['positional_embedding']
    sd = {'patch_embed.weight': v['conv1.weight'], 'cls_token': v['class_embedding'].reshape(1, 1, dims),
          'cls_pos_embed': pe[:1].reshape(1, 1, dims), 'pos_embed': pe[1:].reshape(1, -1, dims),
          'norm_pre.weight': v['ln_pre.weight'], 'norm_pre.bias': v['ln_pre.bias'],
          'norm.weight': v['ln_post.weight'], 'norm.bias': v['ln_post.bias']}
    layers = 1 + max(int(k.split('.')[2]) for k in v if k.startswith('transformer.resblocks.'))
    names = {'ln_1': 'norm1', 'ln_2': 'norm2', 'attn.in_proj_weight': 'attn.qkv.weight',
             'attn.in_proj_bias': 'attn.qkv.bias', 'attn.out_proj': 'attn.proj',
             'mlp.c_fc': 'mlp.fc1', 'mlp.c_proj': 'mlp.fc2'}
    for k, t in v.items():
        if not k.startswith('transformer.resblocks.'):
            continue
        i, rest = k.split('.', 3)[2:]
        for a, b in names.items():
            if rest.startswith(a):
                rest = b + rest[len(a):]
                break
        sd[f'blocks.{i}.{rest}'] = t
    extras = {'proj': v['proj']} if 'proj' in v else {}
    mlp = sd['blocks.0.mlp.fc1.weight'].shape[0]
    kw = dict(arch=_arch(dims, layers, num_heads or max(1, dims // 64), mlp),
              base_patch_size=tuple(v['conv1.weight'].shape[-2:]),
              base_pos_grid=_square_grid(pe.shape[0] - 1, 'positional_embedding'), with_cls_token=True,
              pos_embed_cls=True, patch_bias=False, pre_norm=True,
              act='quick_gelu' if quick_gelu in (None, True) else 'gelu', norm_eps=1e-5)
    _rebase_kernel(sd, kw, base_patch_size)
    return sd, kw, extras
