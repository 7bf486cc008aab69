"""Checkpoint files: read, detect the format, load into a FlexiViT, save converted weights."""
from __future__ import annotations

import os

import torch

from ..ops import resize_patch_embed, resize_pos_embed
from .big_vision import convert_big_vision
from .common import Converted, _square_grid
from .open_clip import convert_open_clip
from .timm import convert_timm

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
