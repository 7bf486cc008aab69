"""Export a (baked) task model to ONNX, and check the graph against PyTorch.

What is exported is a function of the image batch alone (after the data preprocessor):

- ``target='tensor'``: ``model(x, mode='tensor')``, the task's deployable output
  (classification logits, segmentation logits at the feature stride, LiT image
  embeddings, a dense head's raw outputs);
- ``target='backbone'``: the FlexiViT's outputs (feature maps / tokens), for any task.

Outputs may be nested (tuples, lists, dicts of tensors); they are flattened into the
graph's outputs and the nesting is stored in the ONNX metadata, so the runtime
(:mod:`flexitransfer.deploy.session`) gives back what PyTorch gives. The batch axis is
dynamic; the image size is the one the model was baked for (static).
"""
from __future__ import annotations

import contextlib
import json
import warnings
from functools import partial
from typing import Any, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from ..engine.patch_size import flexi_modules
from ..models.backbones.flexivit import FlexiViT, check_patch_size
from ..ops import to_2tuple

EXPORT_TARGETS = ('tensor', 'backbone')


EXPORTERS = ('dynamo', 'torchscript')


META_PREFIX = 'flexitransfer.'



# ------------------------------------------------------------------ output nesting
def flatten(out) -> Tuple[List[torch.Tensor], Any]:
    """Tensors of a nested output (tuple / list / dict) in order, and a JSON-able description of the nesting."""
    if isinstance(out, torch.Tensor):
        return [out], 'T'
    if isinstance(out, (tuple, list)):
        leaves, specs = [], []
        for o in out:
            lv, sp = flatten(o)
            leaves += lv
            specs.append(sp)
        return leaves, {'tuple' if isinstance(out, tuple) else 'list': specs}
    if isinstance(out, dict):
        leaves, specs = [], []
        for k, o in out.items():
            lv, sp = flatten(o)
            leaves += lv
            specs.append([str(k), sp])
        return leaves, {'dict': specs}
    raise TypeError(f'cannot export an output of type {type(out).__name__}: only tensors, tuples, lists and dicts '
                    f'of tensors become ONNX outputs')


def unflatten(leaves: Sequence, spec):
    """Inverse of :func:`flatten`."""
    it = iter(leaves)

    def build(sp):
        if sp == 'T':
            return next(it)
        (kind, sub), = sp.items()
        if kind == 'dict':
            return {k: build(s) for k, s in sub}
        items = [build(s) for s in sub]
        return tuple(items) if kind == 'tuple' else items
    out = build(spec)
    if next(it, None) is not None:
        raise ValueError('more outputs than the stored nesting describes')
    return out



# ------------------------------------------------------------------ what is exported
def export_module(model: nn.Module, target: str = 'tensor') -> nn.Module:
    """The module whose ``forward(x)`` is exported for ``target``.

    Args:
        model (nn.Module): a (baked) task model.
        target (str): 'tensor' (``model(x, mode='tensor')``) or 'backbone' (its one unlocked FlexiViT).

    Returns:
        nn.Module: a module of the image batch alone.

    Raises:
        ValueError: an unknown target, or 'backbone' for a model without exactly one unlocked FlexiViT.
    """
    if target not in EXPORT_TARGETS:
        raise ValueError(f'export target must be one of {EXPORT_TARGETS}, got {target!r}')
    if target == 'backbone':
        mods = flexi_modules(model)
        if len(mods) != 1:
            raise ValueError(f'{type(model).__name__} has {len(mods)} unlocked FlexiViT backbones; '
                             f"target='backbone' exports exactly one")
        return mods[0]
    return _TensorMode(model)


class _TensorMode(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x, mode='tensor')


class _Flat(nn.Module):
    """``module(x)`` with its (nested) output flattened into a tuple of tensors."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x):
        return tuple(flatten(self.module(x))[0])


@contextlib.contextmanager
def _uncached_resize(model: nn.Module):
    """Every FlexiViT resizes directly while being traced: its no-grad cache keys on data pointers,
    which traced (fake) tensors do not have. On a baked model the resize is the identity."""
    mods = [m for m in model.modules() if isinstance(m, FlexiViT)]
    for m in mods:
        m._resized = m._resize_now
    try:
        yield
    finally:
        for m in mods:
            del m._resized



# ------------------------------------------------------------------ ONNX
def export_onnx(model: nn.Module, img_size, path: str, target: str = 'tensor', exporter: str = 'dynamo',
                opset: Optional[int] = None, in_channels: Optional[int] = None, meta: Optional[dict] = None,
                fuse: bool = True, attention_op: str = 'Attention') -> dict:
    """Write ``path`` (one self-contained .onnx file) and return the metadata stored in it.

    ``model`` should be baked at its deployment patch (:func:`flexitransfer.deploy.bake_model`):
    the graph then holds the p x p kernel and the position grid as constants, with no resize.
    ``fuse`` (default): ONNX Runtime's transformer fusions (:mod:`flexitransfer.deploy.fuse`): each
    block's attention one ``attention_op`` node ('Attention' or 'MultiHeadAttention'), LayerNorm,
    skip-LayerNorm and bias-GELU fused; the metadata's ``fused_ops`` counts them. ``fuse=False``:
    the plain ONNX graph (standard ops only, any runtime).

    Args:
        model (nn.Module): the (baked) task model.
        img_size (int | tuple[int, int]): the input size (H, W) of the graph (static; the batch is dynamic).
        path (str): the .onnx file to write.
        target (str): 'tensor' or 'backbone' (:func:`export_module`). Default: 'tensor'.
        exporter (str): 'dynamo' (``torch.onnx.export(dynamo=True)``) or 'torchscript'. Default: 'dynamo'.
        opset (int, optional): the ONNX opset. Default: the exporter's (17 for 'torchscript').
        in_channels (int, optional): input channels. Default: the model's FlexiViT's (3 without one).
        meta (dict, optional): more metadata to store (e.g. ``patch_size``, ``config``).
        fuse (bool): apply ONNX Runtime's transformer fusions. Default: True.
        attention_op (str): 'Attention' or 'MultiHeadAttention'. Default: 'Attention'.

    Returns:
        dict: the graph's metadata (:func:`read_meta`): target, model class, img_size, in_channels,
        output nesting, exporter, ``fused_ops`` counts, and ``meta``.

    Raises:
        ValueError: an unknown exporter or target.
    """
    import onnx

    from .fuse import FUSED_OPS, fusable_attention, fuse_onnx
    if exporter not in EXPORTERS:
        raise ValueError(f'exporter must be one of {EXPORTERS}, got {exporter!r}')
    h, w = to_2tuple(img_size)
    if in_channels is None:
        in_channels = next((m.in_channels for m in model.modules() if isinstance(m, FlexiViT)), 3)
    module = export_module(model, target).eval()
    flat = _Flat(module).eval()
    g = torch.Generator().manual_seed(0)
    example = torch.randn(2, in_channels, h, w, generator=g)  # batch 2: a batch of 1 would be specialised
    with torch.no_grad():
        leaves, spec = flatten(module(example))
    names = [f'out{i}' for i in range(len(leaves))]
    with warnings.catch_warnings(), _uncached_resize(model), \
            (fusable_attention(module) if fuse else contextlib.nullcontext()):
        warnings.simplefilter('ignore')
        if exporter == 'dynamo':
            batch = torch.export.Dim('batch', min=1, max=4096)
            prog = torch.onnx.export(flat, (example,), dynamo=True, input_names=['input'], output_names=names,
                                     dynamic_shapes={'x': {0: batch}}, opset_version=opset, verbose=False)
            prog.save(path, external_data=False)
        else:
            torch.onnx.export(flat, (example,), path, dynamo=False, input_names=['input'], output_names=names,
                              dynamic_axes={'input': {0: 'batch'}, **{n: {0: 'batch'} for n in names}},
                              opset_version=opset or 17)
    info = dict(target=target, model=type(model).__name__, img_size=[h, w], in_channels=in_channels,
                outputs=json.dumps(spec), exporter=exporter, **(meta or {}))
    onnx.checker.check_model(onnx.load(path))
    if fuse:
        vits = [m for m in module.modules() if isinstance(m, FlexiViT)]
        if vits:
            counts = fuse_onnx(path, vits[0].num_heads, vits[0].embed_dims, attention_op,
                               blocks=sum(len(v.blocks) for v in vits))
            info['fused_ops'] = {k: counts[k] for k in FUSED_OPS if counts.get(k)}
    m = onnx.load(path)
    del m.metadata_props[:]
    for k, v in info.items():
        p = m.metadata_props.add()
        p.key, p.value = META_PREFIX + k, v if isinstance(v, str) else json.dumps(v)
    onnx.save(m, path)
    return read_meta(path)


def read_meta(path: str) -> dict:
    """The flexitransfer metadata of an exported graph (target, img_size, output nesting, patch...).

    Args:
        path (str): an .onnx file written by :func:`export_onnx` (or :func:`quantize_int8`).

    Returns:
        dict: key -> value (JSON values decoded).

    Raises:
        ValueError: the graph was not written by :func:`export_onnx`.
    """
    import onnx
    m = onnx.load(path, load_external_data=False)
    out = {}
    for p in m.metadata_props:
        if p.key.startswith(META_PREFIX):
            k = p.key[len(META_PREFIX):]
            try:
                out[k] = json.loads(p.value)
            except json.JSONDecodeError:
                out[k] = p.value
    if 'outputs' not in out:
        raise ValueError(f'{path} was not written by flexitransfer.deploy.export_onnx (no output description in '
                         f'its metadata): export it with tools/resize_deploy.py --onnx')
    return out



# ------------------------------------------------------------------ timm
def to_timm_vit(backbone: FlexiViT, img_size: Sequence[int]):
    """Export a baked FlexiViT as a timm ``VisionTransformer`` (same tokens).

    Args:
        backbone (FlexiViT): a FlexiViT baked at ``img_size`` (:meth:`FlexiViT.bake`).
        img_size (Sequence[int]): its input size (H, W).

    Returns:
        timm.models.vision_transformer.VisionTransformer: in eval mode, no classifier
        (``forward_features`` gives the backbone's tokens).

    Raises:
        ValueError: the backbone is not baked at ``img_size``.
    """
    from timm.models.vision_transformer import VisionTransformer
    patch = backbone.base_patch_size
    if tuple(backbone.base_pos_grid) != check_patch_size(to_2tuple(img_size), patch):
        raise ValueError('bake the backbone at this image size first (FlexiViT.bake / tools/resize_deploy.py)')
    act = type(backbone.blocks[0].mlp.act)
    t = VisionTransformer(
        img_size=tuple(to_2tuple(img_size)), patch_size=patch, embed_dim=backbone.embed_dims,
        depth=backbone.num_layers, num_heads=backbone.num_heads,
        mlp_ratio=backbone.blocks[0].mlp.fc1.out_features / backbone.embed_dims,
        class_token=backbone.cls_token is not None, no_embed_class=not backbone.pos_embed_cls,
        pre_norm=not isinstance(backbone.norm_pre, nn.Identity), fc_norm=False, num_classes=0,
        global_pool='token' if backbone.cls_token is not None else 'avg',
        norm_layer=partial(nn.LayerNorm, eps=backbone.blocks[0].norm1.eps), act_layer=act,
        dynamic_img_size=False)
    sd = {k: v for k, v in backbone.state_dict().items() if k not in ('patch_embed.weight', 'patch_embed.bias',
                                                                       'pos_embed', 'cls_pos_embed')}
    sd['patch_embed.proj.weight'] = backbone.patch_embed.weight
    if backbone.patch_embed.bias is not None:
        sd['patch_embed.proj.bias'] = backbone.patch_embed.bias
    pos = backbone.pos_embed
    if backbone.pos_embed_cls:
        pos = torch.cat([backbone.cls_pos_embed, pos], dim=1)
    sd['pos_embed'] = pos
    missing, unexpected = t.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.startswith('patch_embed.proj.bias')]
    if missing or unexpected:
        raise RuntimeError(f'timm export mismatch: missing {missing}, unexpected {unexpected}')
    return t.eval()

