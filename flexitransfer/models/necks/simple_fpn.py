"""A stride-aware simple feature pyramid (ViTDet, Li et al. 2022) for a backbone of any stride p.

ViTDet turns the single stride-16 map of a plain ViT into strides 4, 8, 16, 32 with, per
level: two 2x transposed convs (4), one (8), nothing (16) or a 2x max-pool (32); then a 1x1
and a 3x3 conv, each followed by a channel-wise LayerNorm. FlexiViT's map has stride p, and
p changes every training step, so this module makes the pyramid at *any* p:

* level sizes are ``ceil(H / s)`` of the padded input (H, W), computed once per (input size,
  strides) and cached (``level_sizes``);
* every resample uses an explicit ``size=`` (never a float scale factor: 12 -> 32 is 0.375 and
  floors wrong; a 2x max-pool cannot take 48 to 32).

Two ways to place the resample (``resample``):

* ``'per_level'`` (default): run each level's up/down-sampling branch (2 deconvs, 1 deconv,
  nothing, max-pool) on the stride-p map, resize its output to ``ceil(H/s)``, then the level's
  1x1 and 3x3 convs. The branches see the stride-p map itself, so a small p keeps its detail.
* ``'to16'``: bilinearly resample the stride-p map onto the stride-16 grid (``ceil(H/16)``),
  then ViTDet's branches unchanged (a resize after a branch only for inputs 32 does not divide).

In both, at p = 16 nothing is resampled and the module *is* ViTDet's pyramid. On the tiny
panoptic data 'per_level' gave higher PQ at p = 8, 12 and 24 than 'to16' for the same training,
so it is the default (docs/results/panoptic_neck.md).

Both use the same parameters at every p (every parameter gets a gradient at every p, so DDP
needs no ``find_unused_parameters``). The input size comes from the caller
(``forward(feats, img_size=...)``; ``FlexiMask2Former`` passes its padded batch shape); without
it the module assumes the map covers an input of ``grid * in_stride`` pixels, with
``in_stride`` given in the config, which is right only for a fixed-patch backbone.
"""
from __future__ import annotations

from functools import lru_cache
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmengine.registry import MODELS

#: ViTDet's scale factors per output stride, relative to stride 16.
VITDET_SCALES = {4: 4.0, 8: 2.0, 16: 1.0, 32: 0.5}
RESAMPLE_MODES = ('per_level', 'to16')


@lru_cache(maxsize=256)
def level_sizes(img_size: Tuple[int, int], strides: Tuple[int, ...]) -> Tuple[Tuple[int, int], ...]:
    """``(ceil(H/s), ceil(W/s))`` for every stride s: the exact size of each pyramid level."""
    h, w = img_size
    return tuple((-(-h // s), -(-w // s)) for s in strides)


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of an NCHW map (detectron2's ``LayerNorm`` used by ViTDet)."""

    def __init__(self, num_channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class ConvNorm(nn.Sequential):
    """Conv2d (no bias) + channel LayerNorm: detectron2's ``Conv2d(..., norm='LN')``."""

    def __init__(self, cin: int, cout: int, k: int, eps: float):
        super().__init__(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), LayerNorm2d(cout, eps))


def _resize(x: torch.Tensor, size: Tuple[int, int], mode: str, antialias: bool) -> torch.Tensor:
    """Resample to exactly ``size`` (no-op when already there); antialias only when shrinking."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if mode == 'nearest':
        return F.interpolate(x, size=size, mode='nearest')
    aa = antialias and (x.shape[-2] > size[0] or x.shape[-1] > size[1])
    if aa and x.device.type == 'cpu' and x.dtype in (torch.bfloat16, torch.float16):
        # the antialiased CPU kernel has no bf16 / fp16 version: resample in float32 (as under autocast on CUDA)
        return F.interpolate(x.float(), size=size, mode=mode, align_corners=False, antialias=True).to(x.dtype)
    return F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=aa)


@MODELS.register_module()
class StrideAwareSimpleFPN(BaseModule):
    """ViTDet's simple feature pyramid for a backbone whose stride p varies (FlexiViT).

    Args:
        in_channels: channels of the backbone map (ViT embed dims).
        out_channels: channels of every pyramid level.
        strides: output strides, a subset of (4, 8, 16, 32).
        resample: 'per_level' (branch, then resize each level) or 'to16' (resize to the stride-16
            grid, then ViTDet's branches).
        interp: interpolation of the resamples ('bilinear' | 'bicubic' | 'nearest').
        antialias: antialias bilinear/bicubic resamples that shrink (e.g. p=8 -> stride 16).
        in_index: which map of the backbone's output tuple to use.
        in_stride: stride of the input map when ``forward`` gets no ``img_size`` (fixed-patch
            backbones only; FlexiViT's p varies: pass ``img_size``).
        norm_eps: LayerNorm epsilon (1e-6 as ViTDet).
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int = 256,
                 strides: Sequence[int] = (4, 8, 16, 32),
                 resample: str = 'per_level',
                 interp: str = 'bilinear',
                 antialias: bool = True,
                 in_index: int = -1,
                 in_stride: Optional[int] = None,
                 norm_eps: float = 1e-6,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        bad = [s for s in strides if s not in VITDET_SCALES]
        if bad or not strides:
            raise ValueError(f'strides must be a non-empty subset of {sorted(VITDET_SCALES)}, got {list(strides)}')
        if resample not in RESAMPLE_MODES:
            raise ValueError(f'resample must be one of {RESAMPLE_MODES}, got {resample!r}')
        if in_channels % 4:
            raise ValueError(f'in_channels must be divisible by 4 (stride-4 branch uses in_channels // 4), '
                             f'got {in_channels}')
        self.in_channels, self.out_channels = in_channels, out_channels
        self.strides = tuple(int(s) for s in strides)
        self.resample, self.interp, self.antialias = resample, interp, antialias
        self.in_index, self.in_stride = in_index, in_stride
        d = in_channels
        self.stages = nn.ModuleList()
        for s in self.strides:
            scale = VITDET_SCALES[s]
            if scale == 4.0:
                layers = [nn.ConvTranspose2d(d, d // 2, 2, stride=2), LayerNorm2d(d // 2, norm_eps), nn.GELU(),
                          nn.ConvTranspose2d(d // 2, d // 4, 2, stride=2)]
                dim = d // 4
            elif scale == 2.0:
                layers, dim = [nn.ConvTranspose2d(d, d // 2, 2, stride=2)], d // 2
            elif scale == 1.0:
                layers, dim = [], d
            else:
                # ceil_mode: ceil(ceil(H/16) / 2) == ceil(H/32), so odd stride-16 grids stay exact
                layers, dim = [nn.MaxPool2d(2, stride=2, ceil_mode=True)], d
            proj = [ConvNorm(dim, out_channels, 1, norm_eps), ConvNorm(out_channels, out_channels, 3, norm_eps)]
            self.stages.append(nn.ModuleDict(dict(scale=nn.Sequential(*layers), proj=nn.Sequential(*proj))))

    def _img_size(self, x: torch.Tensor, img_size) -> Tuple[int, int]:
        if img_size is not None:
            return int(img_size[0]), int(img_size[1])
        if self.in_stride is None:
            raise ValueError('StrideAwareSimpleFPN needs the padded input size to place its levels at any patch '
                             'size: call forward(feats, img_size=(H, W)) (FlexiMask2Former does this), or set '
                             'in_stride=P in the neck config for a fixed-patch backbone')
        return x.shape[-2] * self.in_stride, x.shape[-1] * self.in_stride

    def forward(self, inputs, img_size: Optional[Sequence[int]] = None) -> Tuple[torch.Tensor, ...]:
        x = inputs[self.in_index] if isinstance(inputs, (list, tuple)) else inputs
        if isinstance(x, (list, tuple)):  # backbone with output_cls_token: [featmap, cls]
            x = x[0]
        hw = self._img_size(x, img_size)
        sizes = level_sizes(hw, self.strides)
        if self.resample == 'to16':
            x = _resize(x, level_sizes(hw, (16,))[0], self.interp, self.antialias)
        outs: List[torch.Tensor] = []
        for stage, size in zip(self.stages, sizes):
            y = _resize(stage['scale'](x), size, self.interp, self.antialias)  # exact ceil(H/s) x ceil(W/s)
            outs.append(stage['proj'](y))
        return tuple(outs)

