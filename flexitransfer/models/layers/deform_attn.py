"""Multi-scale deformable attention that runs on every device, whatever mmcv was compiled with.

mmcv 2.1.0's ``MultiScaleDeformableAttention.forward`` sends the value tensor to the compiled
``MultiScaleDeformableAttnFunction`` whenever ``mmcv.utils.IS_CUDA_AVAILABLE and value.is_cuda``
(or the MLU equivalent), and to the pure-PyTorch ``multi_scale_deformable_attn_pytorch``
otherwise. A mmcv built without a CUDA compiler (the prebuilt wheel in ``../shared/wheels``, or a
source build on a machine without nvcc and without ``FORCE_CUDA=1``) has no CUDA kernel, so
Mask2Former's pixel decoder would fail on a GPU with ``ms_deform_attn_impl_forward:
implementation for device cuda:0 not found``.

``FlexiMSDeformAttn`` makes the choice per device instead: the compiled kernel where it exists for
the value's device and dtype (checked once per (device, dtype) by running it on a tiny input,
see ``kernel_available``), the PyTorch implementation (same result) everywhere else. Nothing in mmcv
is patched: ``use_portable_deform_attn(model)`` replaces the plain mmcv modules inside one model
(same weights), and ``FlexiMask2Former`` calls it in its constructor.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Optional

import torch
import torch.nn as nn
from mmcv.ops.multi_scale_deform_attn import (
    MultiScaleDeformableAttention,
    MultiScaleDeformableAttnFunction,
    ext_module,
    multi_scale_deformable_attn_pytorch,
)
from mmengine.logging import print_log
from mmengine.registry import MODELS

__all__ = ['FlexiMSDeformAttn', 'kernel_available', 'use_portable_deform_attn', 'clear_kernel_cache']

#: (device, dtype) -> does mmcv's compiled kernel run there. Bounded: at most this many entries.
MAX_CACHED_DEVICES = 16
_KERNEL_CACHE: 'OrderedDict[tuple, bool]' = OrderedDict()


def _device_key(device) -> str:
    device = torch.device(device)
    if device.type == 'cuda' and device.index is None:
        device = torch.device('cuda', torch.cuda.current_device())
    return str(device)


def _probe(device: torch.device, dtype: torch.dtype = torch.float32) -> bool:
    """Run mmcv's compiled forward on a 1-query, 1-key input on ``device`` in ``dtype``; False if it cannot."""
    try:
        with torch.no_grad():
            value = torch.ones(1, 1, 1, 2, device=device, dtype=dtype)     # (bs, keys, heads, dims)
            shapes = torch.tensor([[1, 1]], dtype=torch.long, device=device)  # (levels, 2)
            start = torch.zeros(1, dtype=torch.long, device=device)
            loc = torch.full((1, 1, 1, 1, 1, 2), 0.5, device=device, dtype=dtype)  # (bs, q, heads, levels, points, 2)
            weight = torch.ones(1, 1, 1, 1, 1, device=device, dtype=dtype)
            out = ext_module.ms_deform_attn_forward(value, shapes, start, loc, weight, im2col_step=1)
            if device.type == 'cuda':
                torch.cuda.synchronize(device)  # surface asynchronous launch errors here
            return bool(torch.isfinite(out).all())
    except Exception as err:  # "implementation for device cuda:0 not found", no kernel image, ...
        why = (str(err).strip().splitlines() or [type(err).__name__])[0]
        print_log(f'mmcv multi-scale deformable attention: no compiled kernel for {device}, {dtype} ({why}); '
                  f'using the PyTorch implementation there', logger='current', level=logging.INFO)
        return False


def kernel_available(device, dtype: torch.dtype = torch.float32) -> bool:
    """Whether mmcv's compiled multi-scale deformable attention runs on ``device`` for ``dtype`` values
    (tried once per (device, dtype), cached)."""
    key = (_device_key(device), dtype)
    hit = _KERNEL_CACHE.get(key)
    if hit is None:
        hit = _KERNEL_CACHE[key] = _probe(torch.device(key[0]), dtype)
        while len(_KERNEL_CACHE) > MAX_CACHED_DEVICES:
            _KERNEL_CACHE.popitem(last=False)
    return hit


def clear_kernel_cache() -> None:
    _KERNEL_CACHE.clear()


@MODELS.register_module()
class FlexiMSDeformAttn(MultiScaleDeformableAttention):
    """mmcv's ``MultiScaleDeformableAttention`` (same arguments, parameters and result) that uses the
    compiled kernel only where ``kernel_available(value.device, value.dtype)``, else
    ``multi_scale_deformable_attn_pytorch``.

    ``forward`` is mmcv 2.1.0's, with only the kernel choice changed.
    """

    def forward(self, query: torch.Tensor, key: Optional[torch.Tensor] = None,
                value: Optional[torch.Tensor] = None, identity: Optional[torch.Tensor] = None,
                query_pos: Optional[torch.Tensor] = None, key_padding_mask: Optional[torch.Tensor] = None,
                reference_points: Optional[torch.Tensor] = None, spatial_shapes: Optional[torch.Tensor] = None,
                level_start_index: Optional[torch.Tensor] = None, **kwargs) -> torch.Tensor:
        if value is None:
            value = query
        if identity is None:
            identity = query
        if query_pos is not None:
            query = query + query_pos
        if not self.batch_first:
            query, value = query.permute(1, 0, 2), value.permute(1, 0, 2)
        bs, num_query, _ = query.shape
        _, num_value, _ = value.shape
        assert (spatial_shapes[:, 0] * spatial_shapes[:, 1]).sum() == num_value

        value = self.value_proj(value)
        if key_padding_mask is not None:
            value = value.masked_fill(key_padding_mask[..., None], 0.0)
        value = value.view(bs, num_value, self.num_heads, -1)
        sampling_offsets = self.sampling_offsets(query).view(
            bs, num_query, self.num_heads, self.num_levels, self.num_points, 2)
        attention_weights = self.attention_weights(query).view(
            bs, num_query, self.num_heads, self.num_levels * self.num_points).softmax(-1)
        attention_weights = attention_weights.view(bs, num_query, self.num_heads, self.num_levels, self.num_points)
        if reference_points.shape[-1] == 2:
            offset_normalizer = torch.stack([spatial_shapes[..., 1], spatial_shapes[..., 0]], -1)
            sampling_locations = (reference_points[:, :, None, :, None, :]
                                  + sampling_offsets / offset_normalizer[None, None, None, :, None, :])
        elif reference_points.shape[-1] == 4:
            sampling_locations = (reference_points[:, :, None, :, None, :2] + sampling_offsets / self.num_points
                                  * reference_points[:, :, None, :, None, 2:] * 0.5)
        else:
            raise ValueError(f'Last dim of reference_points must be 2 or 4, but get '
                             f'{reference_points.shape[-1]} instead.')

        if kernel_available(value.device, value.dtype):
            output = MultiScaleDeformableAttnFunction.apply(value, spatial_shapes, level_start_index,
                                                            sampling_locations, attention_weights, self.im2col_step)
        else:
            output = multi_scale_deformable_attn_pytorch(value, spatial_shapes, sampling_locations,
                                                         attention_weights)
        output = self.output_proj(output)
        if not self.batch_first:
            output = output.permute(1, 0, 2)
        return self.dropout(output) + identity


def _portable_copy(m: MultiScaleDeformableAttention) -> FlexiMSDeformAttn:
    with torch.random.fork_rng(devices=[]):  # building it must not shift the caller's random stream
        new = FlexiMSDeformAttn(embed_dims=m.embed_dims, num_heads=m.num_heads, num_levels=m.num_levels,
                                num_points=m.num_points, im2col_step=m.im2col_step, dropout=m.dropout.p,
                                batch_first=m.batch_first, norm_cfg=m.norm_cfg, init_cfg=m.init_cfg,
                                value_proj_ratio=m.value_proj.out_features / m.embed_dims)
    ref = m.value_proj.weight
    new.to(device=ref.device, dtype=ref.dtype)
    new.load_state_dict(m.state_dict())
    new.train(m.training)
    new._is_init = getattr(m, '_is_init', False)
    return new


def use_portable_deform_attn(model: nn.Module) -> int:
    """Replace every plain mmcv ``MultiScaleDeformableAttention`` inside ``model`` (in place) by a
    ``FlexiMSDeformAttn`` holding the same weights. Returns how many were replaced."""
    targets = [(name, m) for name, m in model.named_modules()
               if name and type(m) is MultiScaleDeformableAttention]
    for name, m in targets:
        parent_name, _, attr = name.rpartition('.')
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, _portable_copy(m))
    return len(targets)
