from __future__ import annotations

import math
import os
from typing import Dict, Optional, Tuple

import numpy as np
import torch

from ..ops import resize_patch_embed, resize_pos_embed, to_2tuple

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


# ------------------------------------------------------------------ big_vision
def convert_big_vision(src, base_patch_size=None) -> Converted:
    """big_vision ViT / FlexiViT params (``.npz`` path or a flat ``{'a/b': array}`` dict)."""
    if isinstance(src, (str, os.PathLike)):
        with np.load(src, allow_pickle=False) as f:
            params = {k: f[k] for k in f.files}
    else:
        params = dict(src)
    params = {k.replace('params/', '', 1) if k.startswith('params/') else k: v for k, v in params.items()}
    t = lambda k: torch.from_numpy(np.asarray(params[k], dtype=np.float32).copy())  # noqa: E731
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


# ------------------------------------------------------------------------ timm
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


# ------------------------------------------------------------------- open_clip
def convert_open_clip(state_dict: dict, base_patch_size=None, quick_gelu: Optional[bool] = None,
                      num_heads: Optional[int] = None) -> Converted:
    """Image tower of an open_clip / OpenAI-CLIP ViT (``visual.*`` keys).

    ``quick_gelu``: OpenAI's weights use QuickGELU; most open_clip LAION models
    use GELU. Defaults to QuickGELU when unknown (OpenAI format). ``num_heads``
    defaults to ``width // 64`` (open_clip's head_width).
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
    kw = dict(arch=_arch(dims, layers, num_heads or max(1, dims // 64), mlp), base_patch_size=tuple(v['conv1.weight'].shape[-2:]),
              base_pos_grid=_square_grid(pe.shape[0] - 1, 'positional_embedding'), with_cls_token=True,
              pos_embed_cls=True, patch_bias=False, pre_norm=True,
              act='quick_gelu' if quick_gelu in (None, True) else 'gelu', norm_eps=1e-5)
    _rebase_kernel(sd, kw, base_patch_size)
    return sd, kw, extras


# ------------------------------------------------------------ files & loading
def load_checkpoint_file(path: str) -> dict:
    """A torch checkpoint as a plain dict (weights only, safe)."""
    try:
        obj = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # noqa: BLE001 -- name the file and the problem
        raise ValueError(f'could not read checkpoint {path!r}: {e}') from e
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    return obj


def _format_of(sd: dict, path: str) -> str:
    """Format of an already loaded torch checkpoint, from its key names."""
    keys = list(sd.get('state_dict', sd))
    if any(k.endswith('visual.conv1.weight') or k == 'conv1.weight' for k in keys):
        return 'open_clip'
    if any(k.endswith('patch_embed.proj.weight') for k in keys):
        return 'timm'
    if any(k.endswith('patch_embed.weight') for k in keys):
        return 'flexitransfer'
    raise ValueError(f'{path!r}: unknown checkpoint format (keys start {keys[:5]})')


def detect_format(path: str) -> str:
    """'big_vision' | 'timm' | 'open_clip' | 'flexitransfer' for a checkpoint file."""
    if str(path).endswith('.npz'):
        return 'big_vision'
    return _format_of(load_checkpoint_file(path), path)


def _backbone_state(sd: dict) -> dict:
    """FlexiViT keys from a flexitransfer/mmengine checkpoint (strips 'backbone.' and similar)."""
    sd = sd.get('state_dict', sd)
    for prefix in ('backbone.', 'image_tower.backbone.', 'module.backbone.'):
        sub = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
        if sub:
            return sub
    return dict(sd)


def load_state_into(backbone, sd: dict, strict: bool = True) -> None:
    """Load FlexiViT-named tensors into ``backbone``, resizing kernel and grid into its store.

    Resizing goes through ``flexitransfer.ops``: the kernel by PI-resize, the
    grid bilinearly. Other shape mismatches raise an error that names them.
    """
    sd = dict(sd)
    own = backbone.state_dict()
    w = sd.get('patch_embed.weight')
    if w is not None and tuple(w.shape[-2:]) != backbone.base_patch_size:
        sd['patch_embed.weight'] = resize_patch_embed(w.double(), backbone.base_patch_size, 'pi').to(w.dtype)
    pos = sd.get('pos_embed')
    if pos is not None and pos.shape[1] != own['pos_embed'].shape[1]:
        sd['pos_embed'] = resize_pos_embed(pos.double(), _square_grid(pos.shape[1], 'pos_embed'),
                                           backbone.base_pos_grid, backbone.pos_resize_antialias).to(pos.dtype)
    bad = [f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}'
           for k, v in sd.items() if k in own and own[k].shape != v.shape]
    if bad:
        raise ValueError('checkpoint does not fit this FlexiViT (wrong arch? check embed_dims/num_layers):\n  '
                         + '\n  '.join(bad[:10]))
    missing, unexpected = backbone.load_state_dict(sd, strict=False)
    if strict and (missing or unexpected):
        raise ValueError(f'checkpoint does not fit this FlexiViT: missing {missing[:10]}, '
                         f'unexpected {unexpected[:10]}')


def load_pretrained(backbone, path: str, strict: bool = True) -> None:
    """Load any supported checkpoint file (format detected) into a FlexiViT backbone."""
    if str(path).endswith('.npz'):
        sd = convert_big_vision(path)[0]
    else:
        raw = load_checkpoint_file(path)  # read once; the format comes from its keys
        fmt = _format_of(raw, path)
        if fmt == 'timm':
            sd = convert_timm(raw.get('state_dict', raw))[0]
        elif fmt == 'open_clip':
            sd = convert_open_clip(raw.get('state_dict', raw))[0]
        else:
            sd = _backbone_state(raw)
    load_state_into(backbone, sd, strict=strict)


def save_converted(converted: Converted, dst: str, source: str) -> None:
    """Write an mmengine-style checkpoint: ``state_dict`` with ``backbone.`` keys (so
    ``load_from`` and ``FlexiViT(pretrained=...)`` both work) and ``meta`` with
    the FlexiViT kwargs and the source format."""
    sd, kw, extras = converted
    state = {f'backbone.{k}': v.contiguous() for k, v in sd.items()}
    state.update({f'extras.{k}': v.contiguous() for k, v in extras.items()})
    meta = {'flexitransfer_backbone': {k: (list(v) if isinstance(v, tuple) else v) for k, v in kw.items()},
            'converted_from': source}
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    torch.save({'state_dict': state, 'meta': meta}, dst)
