"""OWL-ViT oracle: transformers' OwlViTForObjectDetection (small random config, no download)
converted into our OWLViTDetector gives the same logits and boxes; the box prior per grid."""
import pytest
import torch
from conftest import randomize
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample

import flexitransfer  # noqa: F401
from flexitransfer.converters import convert_owlvit
from flexitransfer.engine import record_tokens
from flexitransfer.models.heads import box_bias


@pytest.fixture(scope='module', autouse=True)
def _mmdet_scope():
    """Build through mmdet's registry whatever default scope an earlier test left behind
    (mmengine keeps the last ``init_default_scope`` globally, e.g. 'mmseg' after a seg test)."""
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmdet'):
        yield


transformers = pytest.importorskip('transformers')


def _hf_owlvit(seed=0, image_size=64, patch=16):
    from transformers import OwlViTConfig, OwlViTForObjectDetection
    cfg = OwlViTConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, num_attention_heads=2, num_hidden_layers=2,
                         max_position_embeddings=16),
        vision_config=dict(hidden_size=48, intermediate_size=96, num_attention_heads=2, num_hidden_layers=2,
                           image_size=image_size, patch_size=patch),
        projection_dim=32)
    torch.manual_seed(seed)
    model = OwlViTForObjectDetection(cfg).eval()
    randomize(model, seed)
    return model, cfg


def _ours(sd, kw, **extra):
    model = MODELS.build(dict(type='OWLViTDetector', templates=('{}',), **kw, **extra)).eval()
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected and [k for k in missing if not k.endswith('attn_mask')] == []
    return model


def _samples(texts, hw):
    out = []
    for t in texts:
        s = DetDataSample()
        s.set_metainfo(dict(text=tuple(t), img_shape=hw, batch_input_shape=hw))
        out.append(s)
    return out


@pytest.fixture(scope='module')
def oracle():
    hf, cfg = _hf_owlvit()
    sd, kw, extras = convert_owlvit(hf.state_dict(), cfg)
    return hf, _ours(sd, kw), kw, extras


def test_converted_owlvit_matches_transformers(oracle):
    hf, ours, kw, extras = oracle
    assert kw['backbone']['act'] == 'quick_gelu' and kw['text_tower']['quick_gelu']
    assert set(extras) == {'owlvit.visual_projection.weight', 'owlvit.logit_scale'}
    check_matches_transformers(hf, ours)


def check_matches_transformers(hf, ours):
    """Logits (padded queries too), boxes and text features of a converted detector == transformers'."""
    texts = [('a red circle', 'a photo of a dog'), ('a blue square', 'cat', 'a yellow triangle')]
    tokens = ours.text_tower.tokenize([t for q in texts for t in q])  # open_clip BPE == CLIP tokenizer ids
    ids = torch.zeros(2, 3, tokens.shape[1], dtype=torch.long)  # image 0: its third query is padding (ids 0)
    ids[0, :2], ids[1] = tokens[:2], tokens[2:]
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf(input_ids=ids.reshape(6, -1), pixel_values=x)
        logits, boxes = ours._forward(x, _samples(texts, (64, 64)))
    assert logits.shape == ref.logits.shape == (2, 16, 3) and boxes.shape == ref.pred_boxes.shape
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.bool)[:, None, :].expand_as(logits)
    assert (logits[mask] - ref.logits[mask]).abs().max() < 1e-4
    assert (logits[~mask] == torch.finfo(torch.float32).min).all() and (ref.logits[~mask] == logits[~mask]).all()
    assert (boxes - ref.pred_boxes).abs().max() < 1e-4
    # text tower alone: open_clip TextTransformer (EOT by argmax of ids) == transformers text model + projection
    with torch.no_grad():
        t_ref = hf.owlvit.get_text_features(input_ids=tokens).pooler_output
        assert (ours.text_tower(tokens) - t_ref).abs().max() < 1e-4


@pytest.mark.parametrize('patch,grid', [(8, (8, 8)), (4, (16, 16))])  # downsampling pinvs: cheap on a CPU
def test_converted_owlvit_runs_at_other_patch_sizes(oracle, patch, grid):
    _, ours, _, _ = oracle
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    ours.backbone.patch_size = (patch, patch)
    try:
        with torch.no_grad(), record_tokens(ours) as rec:
            logits, boxes = ours._forward(x, _samples([('a red circle', 'a dog')], (64, 64)))
    finally:
        ours.backbone.patch_size = (16, 16)
    assert logits.shape == (1, grid[0] * grid[1], 2) and boxes.shape == (1, grid[0] * grid[1], 4)
    assert torch.isfinite(logits).all() and ((boxes > 0) & (boxes < 1)).all()
    assert rec.grids[-1] == grid


def test_box_bias_matches_transformers_on_non_square_grids():
    from transformers import OwlViTForObjectDetection as H
    for gh, gw in [(3, 5), (12, 18), (2, 2), (7, 1)]:
        ref = H.compute_box_bias(H, gh, gw)
        assert torch.equal(box_bias((gh, gw)), ref), (gh, gw)
    assert box_bias((3, 5)) is box_bias((3, 5))  # cached per grid, computed once


@pytest.mark.parametrize('patch,centre', [(8, 'corner'), (16, 'corner'), (48, 'corner'), (16, 'cell'), (48, 'cell')])
def test_zero_box_mlp_gives_grid_priors_on_padded_non_square_image(patch, centre, tiny_arch):
    """'corner': OWL-ViT's prior, centred on the cell's bottom-right corner ((j + 1) / W); 'cell': on the
    cell's centre ((j + 1/2) / W). Same size prior (the cell)."""
    model = MODELS.build(dict(
        type='OWLViTDetector', templates=('{}',), default_queries=('red',), box_prior_centre=centre,
        backbone=dict(type='FlexiViT', arch=tiny_arch, patch_size=patch, base_patch_size=8),  # cheap resizes
        text_tower=dict(type='OpenCLIPTextTower', width=32, heads=2, layers=1, context_length=16, output_dim=16)))
    randomize(model)
    with torch.no_grad():
        model.box_head.dense2.weight.zero_()
        model.box_head.dense2.bias.zero_()
        x = torch.randn(2, 3, 96, 144)
        _, boxes = model._forward(x)  # no data samples: tensor mode with the default queries
    gh, gw = 96 // patch, 144 // patch
    off = 1.0 if centre == 'corner' else 0.5
    ys, xs = torch.meshgrid((torch.arange(gh) + off) / gh, (torch.arange(gw) + off) / gw, indexing='ij')
    eps = 1e-4  # sigmoid(log(x + eps) - log1p(eps - x)) == (x + eps) / (1 + 2 eps), exactly
    f = lambda v: (v + eps) / (1 + 2 * eps)
    want = torch.stack([f(xs), f(ys), f(torch.full_like(xs, 1 / gw)), f(torch.full_like(ys, 1 / gh))], -1)
    assert boxes.shape == (2, gh * gw, 4)
    assert (boxes - want.reshape(1, -1, 4)).abs().max() < 1e-6
