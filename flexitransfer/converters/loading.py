"""Checkpoints: detect the format, convert, load into a FlexiViT, save converted weights.

Reading (files of every layout, hub directories, shards) is ``reader.read_checkpoint``; every
function here goes through it.
"""
from __future__ import annotations

import os
from typing import List, Optional, Tuple

import torch
from mmengine.logging import print_log
from mmengine.registry import MODELS

from ..ops import resize_patch_embed, resize_pos_embed, to_2tuple
from .big_vision import convert_big_vision
from .common import Converted, _rebase_kernel, _square_grid
from .fit import StoreFit, store_fit
from .open_clip import convert_open_clip
from .owlvit import convert_owlvit, save_owlvit
from .reader import Checkpoint, CheckpointError, read_checkpoint, read_json
from .timm import convert_timm

#: what ``format_of`` can answer; all but 'flexitransfer' (already converted) are ``--from`` choices
FORMATS = ('big_vision', 'timm', 'open_clip', 'owlvit', 'flexitransfer')


def load_checkpoint_file(path) -> dict:
    """The tensors of any checkpoint ``read_checkpoint`` reads (kept for old callers).

    Args:
        path (str | os.PathLike): as :func:`read_checkpoint`'s.

    Returns:
        dict: tensor name -> tensor.
    """
    return read_checkpoint(path).state_dict


def format_of(ckpt: Checkpoint) -> str:
    """'big_vision' | 'timm' | 'open_clip' | 'owlvit' | 'flexitransfer', from the tensor names.

    Args:
        ckpt (Checkpoint): a read checkpoint (:func:`read_checkpoint`).

    Returns:
        str: the format name.
    """
    keys = list(ckpt.state_dict)
    if any(k.endswith('embedding/kernel') for k in keys):
        return 'big_vision'
    if any(k.startswith('owlvit.vision_model.') for k in keys):
        return 'owlvit'
    if any(k.endswith('visual.conv1.weight') or k == 'conv1.weight' for k in keys):
        return 'open_clip'
    if any(k.endswith('patch_embed.proj.weight') for k in keys):
        return 'timm'
    if any(k.endswith('patch_embed.weight') for k in keys):
        return 'flexitransfer'
    hint = (' (a transformers CLIP / ViT layout: not supported; from an open_clip hub repo download '
            'open_clip_model.safetensors)' if any('vision_model.embeddings.' in k for k in keys) else '')
    raise CheckpointError(f'checkpoint {ckpt.path!r}: unknown format{hint}; its {len(keys)} tensors are named like '
                          f'{keys[:4]}; expected big_vision (embedding/kernel), timm (patch_embed.proj.weight), '
                          f'open_clip (visual.conv1.weight), transformers OWL-ViT (owlvit.vision_model.*) or '
                          f'tools/convert_weights.py output (backbone.patch_embed.weight)')


def detect_format(path) -> str:
    """'big_vision' | 'timm' | 'open_clip' | 'owlvit' | 'flexitransfer' for a checkpoint file or hub directory.

    Args:
        path (str | os.PathLike): as :func:`read_checkpoint`'s.

    Returns:
        str: the format name (:func:`format_of`).
    """
    return format_of(read_checkpoint(path))


def convert_checkpoint(ckpt: Checkpoint, fmt: Optional[str] = None, base_patch_size=None,
                       num_heads: Optional[int] = None, quick_gelu: Optional[bool] = None,
                       config: Optional[dict] = None) -> Converted:
    """A read checkpoint -> ``(state_dict, kwargs, extras)`` by its converter.

    ``fmt``: the format the caller expects (``--from``); a checkpoint of another format stops with
    a message saying which ``--from`` fits. ``config`` replaces the hub directory's ``config.json``
    (``--hf-config``). open_clip: heads and activation come from ``open_clip_config.json`` when the
    directory has one, unless ``num_heads`` / ``quick_gelu`` are given.

    Args:
        ckpt (Checkpoint): a read checkpoint (:func:`read_checkpoint`).
        fmt (str, optional): the expected format. Default: the detected one.
        base_patch_size (int, optional): PI-resize the kernel into this store. Default: its own size.
        num_heads (int, optional): attention heads (timm, open_clip).
        quick_gelu (bool, optional): open_clip's activation is QuickGELU.
        config (dict, optional): replaces the hub directory's ``config.json``.

    Returns:
        tuple: ``(state_dict, backbone_kwargs, extras)``: FlexiViT-named tensors, the FlexiViT arguments
        that reproduce the source network, and head tensors (classifier, projection) by name.

    Raises:
        CheckpointError: the checkpoint holds another format than ``fmt``.
    """
    found = format_of(ckpt)
    fmt = fmt or found
    if fmt != found:
        fix = ('it is already converted: use it directly (pretrained= / load_from=)' if found == 'flexitransfer'
               else f'use --from {found}')
        raise CheckpointError(f'checkpoint {ckpt.path!r} holds {found} weights, not {fmt}; {fix}')
    sd, cfg = ckpt.state_dict, ckpt.config if config is None else config
    if fmt == 'big_vision':
        return _rebase(convert_big_vision(sd), base_patch_size, ckpt.path)[0]
    if fmt == 'timm':
        return _rebase(convert_timm(sd, None, num_heads, config=cfg), base_patch_size, ckpt.path)[0]
    if fmt == 'open_clip':
        mc = (ckpt.open_clip_config or {}).get('model_cfg') or {}
        vc = mc.get('vision_cfg') or {}
        if num_heads is None and 'width' in vc:
            num_heads = max(1, int(vc['width']) // int(vc.get('head_width', 64)))
        if quick_gelu is None and mc:
            quick_gelu = bool(mc.get('quick_gelu', False))
        return _rebase(convert_open_clip(sd, None, quick_gelu=quick_gelu, num_heads=num_heads), base_patch_size,
                       ckpt.path)[0]
    if fmt == 'owlvit':
        return convert_owlvit(sd, cfg)
    meta = (ckpt.meta or {}).get('flexitransfer_backbone') or {}
    return _backbone_state(sd), dict(meta), {k[len('extras.'):]: v for k, v in sd.items() if k.startswith('extras.')}


def _rebase(out: Converted, base_patch_size, source: str) -> Tuple[Converted, StoreFit]:
    """``out`` with its kernel PI-resized into ``base_patch_size`` (None: kept), and how that store
    keeps the source kernel (a one-line warning when the round trip back to it is not the identity)."""
    sd, kw, _ = out
    src = sd['patch_embed.weight']
    _rebase_kernel(sd, kw, base_patch_size)
    grid = to_2tuple(kw['base_pos_grid'])
    if tuple(kw['base_patch_size']) == tuple(src.shape[-2:]):
        return out, StoreFit(tuple(src.shape[-2:]), grid, tuple(src.shape[-2:]), grid)
    # the backbone class through the registry: the converters sit below the models (no import of them)
    backbone = MODELS.get('FlexiViT')(**kw)
    backbone.load_state_dict(sd)
    fit = store_fit(backbone, src, None)
    fit.warn(f'converting {source!r} into a {kw["base_patch_size"][0]}x{kw["base_patch_size"][1]} kernel store',
             cli=True)
    return out, fit


def _backbone_state(sd: dict) -> dict:
    """FlexiViT keys from a flexitransfer/mmengine checkpoint (strips 'backbone.' and similar)."""
    sd = sd.get('state_dict', sd)
    for prefix in ('backbone.', 'image_tower.backbone.', 'module.backbone.'):
        sub = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
        if sub:
            return sub
    return dict(sd)


def _arch_of(sd: dict) -> str:
    w = sd.get('patch_embed.weight')
    layers = len({k.split('.')[1] for k in sd if k.startswith('blocks.')})
    return f'embed_dims={w.shape[0] if w is not None else "?"}, num_layers={layers}'


def _src_grid(pos: torch.Tensor, src_grid, backbone, name: str) -> Tuple[int, int]:
    """The checkpoint's position grid: ``src_grid`` if given, else the store's when the lengths agree,
    else a square one."""
    if src_grid:
        return to_2tuple(src_grid)
    if pos.shape[1] == backbone.pos_embed.shape[1]:
        return tuple(backbone.base_pos_grid)
    return _square_grid(pos.shape[1], f'{name}: pos_embed')


def load_state_into(backbone, sd: dict, strict: bool = True, source: Optional[str] = None,
                    src_grid=None) -> Tuple[List[str], List[str]]:
    """Load FlexiViT-named tensors into ``backbone``, resizing kernel and grid into its store.

    Resizing goes through ``flexitransfer.ops``: the kernel by PI-resize, the grid bilinearly
    (``src_grid``: the checkpoint's grid when it is not square). Other shape mismatches raise an
    error that names them (and ``source``, the file they came from).

    Args:
        backbone (FlexiViT): the backbone (loaded in place).
        sd (dict): FlexiViT-named tensors (a converter's ``state_dict``).
        strict (bool): every tensor of the backbone must be given and no other. Default: True.
        source (str, optional): the file the tensors came from, for messages.
        src_grid (tuple[int, int], optional): the checkpoint's position grid when not square.

    Returns:
        tuple[list[str], list[str]]: the backbone's tensors not given, and the given ones it has no place for.

    Raises:
        CheckpointError: a tensor of another shape, or (``strict``) missing / unexpected tensors.
    """
    sd = dict(sd)
    own = backbone.state_dict()
    name = f'checkpoint {source!r}' if source else 'checkpoint'
    w = sd.get('patch_embed.weight')
    if w is not None and tuple(w.shape[-2:]) != backbone.base_patch_size:
        sd['patch_embed.weight'] = resize_patch_embed(w.double(), backbone.base_patch_size, 'pi').to(w.dtype)
    pos = sd.get('pos_embed')
    grid = _src_grid(pos, src_grid, backbone, name) if pos is not None and pos.shape[-1] == backbone.embed_dims \
        else tuple(backbone.base_pos_grid)
    if grid != tuple(backbone.base_pos_grid):
        sd['pos_embed'] = resize_pos_embed(pos.double(), grid, backbone.base_pos_grid,
                                           backbone.pos_resize_antialias).to(pos.dtype)
    bad = [f'{k} {tuple(v.shape)} vs model {tuple(own[k].shape)}'
           for k, v in sd.items() if k in own and own[k].shape != v.shape]
    if bad:
        raise CheckpointError(
            f'{name} does not fit this FlexiViT (embed_dims={backbone.embed_dims}, num_layers={backbone.num_layers}): '
            f'{len(bad)} tensor(s) of another shape ({"; ".join(bad[:4])}{"; ..." if len(bad) > 4 else ""}); it holds '
            f'{_arch_of(sd)}: build the FlexiViT with the arch tools/convert_weights.py prints (also in the '
            f"converted checkpoint's meta['flexitransfer_backbone'])")
    missing, unexpected = backbone.load_state_dict(sd, strict=False)
    if strict and (missing or unexpected):
        raise CheckpointError(f'{name} does not fit this FlexiViT: missing {missing[:10]}, unexpected '
                              f'{unexpected[:10]}; build the FlexiViT with the arguments tools/convert_weights.py '
                              f'prints (pre_norm, with_cls_token, pos_embed_cls, patch_bias, final_norm)')
    return missing, unexpected


def load_pretrained(backbone, path, strict: bool = True) -> StoreFit:
    """Load any checkpoint ``read_checkpoint`` reads (format detected) into a FlexiViT backbone.

    Args:
        backbone (FlexiViT): the backbone (loaded in place; kernel and grid resized into its store).
        path (str | os.PathLike): as :func:`read_checkpoint`'s.
        strict (bool): as :func:`load_state_into`'s. Default: True.

    Logs one line (mmengine's current logger: the run's log file and terminal): the file, its format, what
    was resized from what to what, the tensors loaded and missing. A store that does not give the
    checkpoint's kernel or grid back (see :mod:`.fit`) also raises a one-line ``UserWarning`` naming the
    output error at the checkpoint's own patch and the argument that avoids it.

    Returns:
        StoreFit: the checkpoint's and the store's sizes, the lossy pieces and the measured error.

    Raises:
        CheckpointError: an unreadable checkpoint, or tensors that do not fit the backbone.
    """
    ckpt = read_checkpoint(path)
    fmt = format_of(ckpt)
    sd, kw, _ = convert_checkpoint(ckpt, fmt)
    if fmt == 'owlvit':  # a whole detector: its vision tower
        sd, kw = _backbone_state(sd), kw['backbone']
    source, pos = os.fspath(path), sd.get('pos_embed')
    missing, unexpected = load_state_into(backbone, sd, strict=strict, source=source, src_grid=kw.get('base_pos_grid'))
    grid = _src_grid(pos, kw.get('base_pos_grid'), backbone, source) if pos is not None else None
    fit = store_fit(backbone, sd.get('patch_embed.weight'), pos, grid)
    cls = ''
    if 'cls_pos_embed' in sd:
        cls = f', class-token position embedding {"dropped" if "cls_pos_embed" in unexpected else "kept"}'
    extra = f', unexpected: {_names(unexpected)}' if unexpected else ''
    print_log(f'pretrained: {source} ({fmt}) -> FlexiViT: {fit.resizes()}{cls}; {len(sd) - len(unexpected)} '
              f'tensors, missing: {_names(missing)}{extra}{fit.note()}', logger='current')
    fit.warn(f'pretrained {source!r}')
    return fit


def _names(keys: List[str]) -> str:
    return 'none' if not keys else ', '.join(keys[:5]) + (f', ... ({len(keys)})' if len(keys) > 5 else '')


def save_converted(converted: Converted, dst: str, source: str) -> None:
    """Write an mmengine-style checkpoint: ``state_dict`` with ``backbone.`` keys (so
    ``load_from`` and ``FlexiViT(pretrained=...)`` both work) and ``meta`` with
    the FlexiViT kwargs and the source format.

    Args:
        converted (tuple): a converter's ``(state_dict, backbone_kwargs, extras)``.
        dst (str): the checkpoint file to write (its folder is created).
        source (str): where the weights came from (kept in ``meta['converted_from']``).
    """
    sd, kw, extras = converted
    state = {f'backbone.{k}': v.contiguous() for k, v in sd.items()}
    state.update({f'extras.{k}': v.contiguous() for k, v in extras.items()})
    meta = {'flexitransfer_backbone': {k: (list(v) if isinstance(v, tuple) else v) for k, v in kw.items()},
            'converted_from': source}
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    torch.save({'state_dict': state, 'meta': meta}, dst)


def convert_file(src: str, dst: str, fmt: str, base_patch_size=None, num_heads: Optional[int] = None,
                 quick_gelu: Optional[bool] = None) -> str:
    """``tools/convert_weights.py --from big_vision|timm|open_clip``: read ``src``, convert, write ``dst``
    (:func:`save_converted`).

    Args:
        src (str): a weight file, hub directory or ``*.index.json`` (:func:`read_checkpoint`).
        dst (str): the checkpoint file to write.
        fmt (str): the source format ('big_vision' | 'timm' | 'open_clip').
        base_patch_size (int, optional): PI-resize the kernel into this store; a ``UserWarning`` names
            the output error when the store does not give the source kernel back. Default: its own size.
        num_heads (int, optional): as :func:`convert_checkpoint`'s.
        quick_gelu (bool, optional): as :func:`convert_checkpoint`'s.

    Returns:
        str: one line: the file written, the source and its format, what was resized, the FlexiViT
        arguments that build the network.
    """
    out = convert_checkpoint(read_checkpoint(src), fmt, None, num_heads, quick_gelu=quick_gelu)
    fit = _rebase(out, base_patch_size, src)[1]
    save_converted(out, dst, fmt)
    sd, kw, extras = out
    return (f'wrote {dst}: {src} ({fmt}) -> FlexiViT: {fit.resizes()}; {len(sd)} tensors, extras: {sorted(extras)}'
            f'{fit.note(cli=True)}; build it with FlexiViT({kw})')


def convert_owlvit_file(src: str, dst: str, hf_config: Optional[str] = None) -> str:
    """``tools/convert_weights.py --from owlvit``: a transformers ``save_pretrained`` directory
    (its ``config.json`` is read; single or sharded weights) or a checkpoint file (+ optional
    ``config.json`` via ``hf_config``, which also overrides the directory's) -> ``dst``; returns a
    one-line summary."""
    ckpt = read_checkpoint(src)
    out = convert_checkpoint(ckpt, 'owlvit', config=read_json(hf_config, '--hf-config') if hf_config else None)
    save_owlvit(out, dst)
    return f'wrote {dst}: OWLViTDetector({out[1]}) with {len(out[0])} tensors'
