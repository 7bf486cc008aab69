import pytest
import torch
from conftest import randomize
from mmengine.registry import MODELS as ENGINE_MODELS
from timm.layers import resample_abs_pos_embed, resample_patch_embed
from timm.models.vision_transformer import VisionTransformer

import flexitransfer.models.backbones.flexivit as fv
from flexitransfer.models.backbones import FlexiViT


def _timm_at_patch(m: FlexiViT, p: int, img: int = 240) -> VisionTransformer:
    """A plain timm ViT at patch p holding m's weights, resized by timm's own functions."""
    g = img // p
    t = VisionTransformer(img_size=img, patch_size=p, embed_dim=m.embed_dims, depth=m.num_layers,
                          num_heads=m.num_heads, no_embed_class=True, num_classes=0, global_pool='token').eval()
    sd = t.state_dict()
    own = m.state_dict()
    for k in sd:
        if k in own:
            sd[k] = own[k]
    sd['patch_embed.proj.weight'] = resample_patch_embed(own['patch_embed.weight'], [p, p],
                                                         interpolation='bilinear', antialias=False)
    sd['patch_embed.proj.bias'] = own['patch_embed.bias']
    sd['pos_embed'] = resample_abs_pos_embed(own['pos_embed'], (g, g), m.base_pos_grid, num_prefix_tokens=0,
                                             interpolation='bilinear')
    t.load_state_dict(sd)
    return t


def test_same_tokens_as_timm_at_every_patch(tiny_arch):
    m = randomize(FlexiViT(arch=tiny_arch)).eval()
    x = torch.randn(2, 3, 240, 240)
    for p in (8, 10, 12, 16, 24, 30, 48):
        t = _timm_at_patch(m, p)
        with torch.no_grad():
            diff = (t.forward_features(x) - m.forward_features(x, p)).abs().max().item()
        assert diff < 1e-4, (p, diff)


def test_featmap_output_mmseg_convention(tiny_arch):
    m = randomize(FlexiViT(arch=tiny_arch, out_indices=(0, 1), output_cls_token=True)).eval()
    x = torch.randn(2, 3, 240, 160)
    with torch.no_grad():
        outs = m(x, patch_size=16)
        tokens = m.forward_features(x, 16)
    assert len(outs) == 2
    fmap, cls = outs[-1]
    assert fmap.shape == (2, 64, 15, 10) and cls.shape == (2, 64)
    # last map = final-normed patch tokens, row-major over the (H/p, W/p) grid
    assert torch.allclose(fmap.flatten(2).transpose(1, 2), tokens[:, 1:], atol=1e-6)
    assert torch.allclose(cls, tokens[:, 0], atol=1e-6)


def test_non_square_patch_and_image(tiny_arch):
    m = randomize(FlexiViT(arch=tiny_arch)).eval()
    with torch.no_grad():
        (out,) = m(torch.randn(1, 3, 96, 160), patch_size=(16, 8))
    assert out.shape == (1, 64, 6, 20)


def test_pooling_out_types(tiny_arch):
    x = torch.randn(2, 3, 64, 64)
    tok = randomize(FlexiViT(arch=tiny_arch, out_type='raw')).eval()
    with torch.no_grad():
        raw = tok(x, 16)[0]
        for kind, ref in (('cls_token', raw[:, 0]), ('avg', raw[:, 1:].mean(1))):
            m = FlexiViT(arch=tiny_arch, out_type=kind)
            m.load_state_dict(tok.state_dict())
            assert torch.allclose(m.eval()(x, 16)[0], ref, atol=1e-6)
    gap = FlexiViT(arch=tiny_arch, with_cls_token=False, out_type='avg')
    assert gap(x, 16)[0].shape == (2, 64)


def test_clear_errors(tiny_arch):
    m = FlexiViT(arch=tiny_arch)
    with pytest.raises(ValueError, match='not divisible by the patch size 16x16.*240x240'):
        m(torch.randn(1, 3, 230, 240), 16)
    with pytest.raises(ValueError, match='larger than the image'):
        m(torch.randn(1, 3, 32, 32), 48)
    with pytest.raises(ValueError, match='unknown arch'):
        FlexiViT(arch='giant-ish')


def test_gradients_reach_the_stored_kernel(tiny_arch):
    m = randomize(FlexiViT(arch=tiny_arch)).train()
    x = torch.randn(2, 3, 120, 120)
    m(x, 12)[0].square().mean().backward()
    g = m.patch_embed.weight.grad
    assert g is not None and g.shape == (64, 3, 32, 32) and g.abs().sum() > 0
    assert m.pos_embed.grad.shape == (1, 49, 64) and m.pos_embed.grad.abs().sum() > 0


def test_eval_reuses_resized_params_until_weights_change(tiny_arch, monkeypatch):
    m = randomize(FlexiViT(arch=tiny_arch)).eval()
    calls = []
    real = fv.resize_patch_embed
    monkeypatch.setattr(fv, 'resize_patch_embed', lambda *a, **k: calls.append(1) or real(*a, **k))
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        a = m(x, 12)[0]
        m(x, 12)
        m(x, 12)
        assert len(calls) == 1
        m(x, 16)
        assert len(calls) == 2
        m.patch_embed.weight.mul_(2.0)  # in-place change, as an optimizer step does
        b = m(x, 12)[0]
    assert len(calls) == 3 and not torch.allclose(a, b)
    # with autograd on, every forward resizes (gradients must flow)
    m(x, 12)
    assert len(calls) == 4


def test_resize_cache_is_bounded(tiny_arch):
    m = FlexiViT(arch=tiny_arch).eval()
    m.max_cached_sizes = 3
    with torch.no_grad():
        for side in (32, 48, 64, 80, 96):
            m(torch.randn(1, 3, side, side), 16)
    assert [k[1] for k in m._resize_cache] == [(4, 4), (5, 5), (6, 6)]


def test_baked_model_equals_flexible(tiny_arch):
    m = randomize(FlexiViT(arch=tiny_arch)).eval()
    x = torch.randn(2, 3, 240, 240)
    for p in (8, 30):
        baked = m.bake(p, 240)
        assert baked.patch_embed.weight.shape[-1] == p and baked.pos_embed.shape[1] == (240 // p) ** 2
        with torch.no_grad():
            assert (baked(x)[0] - m(x, p)[0]).abs().max() < 1e-5


def test_bilinear_kernel_resize_is_a_different_model(tiny_arch):
    m = randomize(FlexiViT(arch=tiny_arch)).eval()
    b = FlexiViT(arch=tiny_arch, kernel_resize='bilinear').eval()
    b.load_state_dict(m.state_dict())
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        assert (m(x, 32)[0] - b(x, 32)[0]).abs().max() < 1e-6  # same at the stored size
        assert (m(x, 12)[0] - b(x, 12)[0]).abs().max() > 1e-2


@pytest.mark.parametrize('scope', ['mmengine', 'mmseg', 'mmdet'])
def test_registered_for_openmmlab(scope):
    from mmengine.registry import DefaultScope, init_default_scope
    init_default_scope(scope)
    if scope == 'mmseg':
        from mmseg.registry import MODELS
    elif scope == 'mmdet':
        from mmdet.registry import MODELS
    else:
        MODELS = ENGINE_MODELS
    m = MODELS.build(dict(type='FlexiViT', arch=dict(embed_dims=32, num_layers=1, num_heads=2), patch_size=8))
    assert isinstance(m, FlexiViT)
    DefaultScope._instance_dict.clear()


def test_forward_leaves_no_state_and_reports_through_a_record(tiny_arch):
    """The grid and tokens of a forward go to the record the caller passes; nothing is left on the module."""
    from flexitransfer.models.backbones.flexivit import TokenRecord
    m = FlexiViT(arch=tiny_arch, patch_size=16).eval()
    before = set(vars(m))
    rec = TokenRecord()
    with torch.no_grad():
        m(torch.randn(2, 3, 64, 48), record=rec)
        m(torch.randn(1, 3, 64, 48), 8, record=rec)
    assert set(vars(m)) == before
    assert rec.grids == [(4, 3), (8, 6)] and rec.tokens_per_image().tolist() == [12, 12, 48]


def test_loop_reads_the_grid_from_the_backbone_input_or_the_task_input(tiny_arch):
    """The multi-patch loops' token count: the grid of the backbone's input (a crop where the task model
    slides), else (a whole-model graph in the task model's place) the grid of the task model's input."""
    from flexitransfer.engine.loops import SeenGrid

    class Sliding(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = FlexiViT(arch=tiny_arch, patch_size=8).eval()

        def forward(self, inputs, data_samples=None, mode='tensor'):
            return [self.backbone(inputs[..., :32, :48])[0] for _ in range(2)]

    model, x = Sliding(), torch.randn(1, 3, 64, 96)
    with torch.no_grad(), SeenGrid(model, model.backbone) as seen:
        model(x, mode='predict')
    assert seen.grid == (4, 6)
    model.forward = lambda inputs, data_samples=None, mode='tensor': inputs  # the backbone never runs
    with SeenGrid(model, model.backbone) as seen:
        model(inputs=x)
    assert seen.grid == (8, 12)
    with SeenGrid(model, model.backbone) as seen:
        pass
    assert seen.grid is None
    assert not model._forward_pre_hooks and not model.backbone._forward_pre_hooks
