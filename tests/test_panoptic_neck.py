"""The stride-aware simple feature pyramid: exact level sizes at every patch size, ViTDet at p = 16,
every parameter used, resolvable from mmdet and mmseg configs."""

from panoptic_common import PAPER_PATCHES

import pytest
import torch
import torch.nn as nn
from conftest import randomize


# ----------------------------------------------------------------------------- the neck
class _RefLN(nn.Module):
    """detectron2's LayerNorm for NCHW maps, as ViTDet uses it."""

    def __init__(self, c, eps=1e-6):
        super().__init__()
        self.weight, self.bias, self.eps = nn.Parameter(torch.ones(c)), nn.Parameter(torch.zeros(c)), eps

    def forward(self, x):
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        return self.weight[:, None, None] * ((x - u) / torch.sqrt(s + self.eps)) + self.bias[:, None, None]


class RefViTDetPyramid(nn.Module):
    """ViTDet's SimpleFeaturePyramid (detectron2, scale_factors=(4, 2, 1, 0.5), norm='LN', no top block)."""

    def __init__(self, dim, out):
        super().__init__()
        self.stages = nn.ModuleList()
        for scale in (4.0, 2.0, 1.0, 0.5):
            if scale == 4.0:
                layers = [nn.ConvTranspose2d(dim, dim // 2, 2, 2), _RefLN(dim // 2), nn.GELU(),
                          nn.ConvTranspose2d(dim // 2, dim // 4, 2, 2)]
                od = dim // 4
            elif scale == 2.0:
                layers, od = [nn.ConvTranspose2d(dim, dim // 2, 2, 2)], dim // 2
            elif scale == 1.0:
                layers, od = [], dim
            else:
                layers, od = [nn.MaxPool2d(2, 2)], dim
            layers += [nn.Conv2d(od, out, 1, bias=False), _RefLN(out), nn.Conv2d(out, out, 3, padding=1, bias=False),
                       _RefLN(out)]
            self.stages.append(nn.Sequential(*layers))

    def forward(self, x):
        return [s(x) for s in self.stages]


def _neck(**kw):
    from flexitransfer.models.necks import StrideAwareSimpleFPN
    return randomize(StrideAwareSimpleFPN(in_channels=kw.pop('in_channels', 32), out_channels=16, **kw))


@pytest.mark.parametrize('resample', ['to16', 'per_level'])
def test_neck_level_sizes_exact_at_every_patch(resample):
    """480 x 480 padded input: levels at strides 4, 8, 16, 32 are exactly 120, 60, 30, 15 at every p
    (a float scale factor gets p=12 -> s=32 wrong; a 2x max-pool cannot make 48 -> 32)."""
    neck = _neck(resample=resample).eval()
    for p in PAPER_PATCHES:
        g = 480 // p
        with torch.no_grad():
            outs = neck((torch.randn(1, 32, g, g),), img_size=(480, 480))
        assert [tuple(o.shape[-2:]) for o in outs] == [(120, 120), (60, 60), (30, 30), (15, 15)], p
        assert all(o.shape[:2] == (1, 16) and torch.isfinite(o).all() for o in outs)
    # an input that 32 does not divide (200 x 330 at p=10): ceil(H/s) x ceil(W/s)
    with torch.no_grad():
        outs = neck(torch.randn(2, 32, 20, 33), img_size=(200, 330))
    assert [tuple(o.shape[-2:]) for o in outs] == [(50, 83), (25, 42), (13, 21), (7, 11)]


def test_neck_is_vitdet_at_patch_16(monkeypatch):
    """At p=16 the module is ViTDet's pyramid: same outputs as an independent reference holding the
    same weights, and no resampling at all."""
    neck = _neck(in_channels=64).eval()
    ref = RefViTDetPyramid(64, 16).eval()
    ours = list(neck.parameters())
    theirs = list(ref.parameters())
    assert [p.shape for p in ours] == [p.shape for p in theirs]
    with torch.no_grad():
        for a, b in zip(theirs, ours):
            a.copy_(b)
    calls = []
    real = torch.nn.functional.interpolate
    monkeypatch.setattr(torch.nn.functional, 'interpolate', lambda *a, **k: calls.append(1) or real(*a, **k))
    x = torch.randn(2, 64, 30, 30)  # 480 / 16
    with torch.no_grad():
        outs, expect = neck((x,), img_size=(480, 480)), ref(x)
    assert not calls, 'p=16 must not resample'
    for o, e in zip(outs, expect):
        assert o.shape == e.shape
        torch.testing.assert_close(o, e, rtol=0, atol=1e-6)


@pytest.mark.parametrize('resample', ['to16', 'per_level'])
def test_neck_uses_every_parameter_at_every_patch(resample):
    """Same parameters at every p, all of them used (DDP without find_unused_parameters)."""
    neck = _neck(resample=resample)
    for p in (8, 12, 48):
        neck.zero_grad(set_to_none=True)
        g = 480 // p
        sum(o.square().mean() for o in neck(torch.randn(1, 32, g, g), img_size=(480, 480))).backward()
        unused = [n for n, q in neck.named_parameters() if q.grad is None or not q.grad.abs().sum() > 0]
        assert not unused, (p, unused)


def test_neck_resolves_from_mmdet_and_mmseg_configs():
    from mmdet.registry import MODELS as DET
    from mmengine.registry import DefaultScope, init_default_scope
    from mmseg.registry import MODELS as SEG

    from flexitransfer.models.necks import StrideAwareSimpleFPN
    cfg = dict(type='StrideAwareSimpleFPN', in_channels=32, out_channels=16)
    for scope, reg in (('mmdet', DET), ('mmseg', SEG)):
        DefaultScope._instance_dict.clear()
        init_default_scope(scope)
        assert isinstance(reg.build(dict(cfg)), StrideAwareSimpleFPN)
    DefaultScope._instance_dict.clear()
    with pytest.raises(ValueError, match='img_size'):
        StrideAwareSimpleFPN(in_channels=32)(torch.randn(1, 32, 8, 8))



def test_antialiased_shrink_runs_in_bf16_on_cpu():
    """bf16 autocast (tools/train.py --amp on a CPU with bf16 units) reaches the neck's antialiased resize,
    whose CPU kernel has no bf16 version: it resamples in float32 and returns bf16."""
    from flexitransfer.models.necks.simple_fpn import _resize
    x = torch.randn(1, 4, 16, 16)
    out = _resize(x.bfloat16(), (5, 5), 'bilinear', True)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), _resize(x, (5, 5), 'bilinear', True), atol=1e-2, rtol=0)
