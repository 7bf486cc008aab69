"""Adaptive compute: mixed patch sizes inside one image (quadtree partitions), the training hook,
anytime cascades and their calibration. Tiny models, a few seconds in all."""
import itertools

import numpy as np
import pytest
import torch
from conftest import randomize

from flexitransfer.adaptive import (
    MixedPatchPolicy,
    check_partition,
    forward_mixed,
    mixed_tokens,
    partition_by_budget,
    partition_by_threshold,
    token_count,
    uniform_partition,
    use_mixed_patches,
)
from flexitransfer.engine import record_tokens
from flexitransfer.models.backbones import FlexiViT
from flexitransfer.models.backbones.flexivit import TokenRecord

S = 4     # finest patch
IMG = 32  # levels 4, 8, 16


def tiny(out_type='featmap', **kw):
    m = FlexiViT(arch=dict(embed_dims=32, num_layers=2, num_heads=2), patch_size=S, base_patch_size=8,
                 base_pos_grid=4, out_type=out_type, **kw)
    return randomize(m).eval()


def images(b=3, seed=0, h=IMG, w=IMG):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 3, h, w, generator=g) * 0.3
    x[:, :, : h // 2] = 0.5  # a flat top half: few tokens there
    return x


def forced_levels(b=1):
    """Fine grid 8x8: top-left 16px cell coarse (level 2), top-right 16px cell split into four 8px
    cells of which one is split into four 4px cells, bottom half all fine."""
    lv = torch.zeros(b, 8, 8, dtype=torch.long)
    lv[:, :4, :4] = 2
    lv[:, :4, 4:] = 1
    lv[:, 2:4, 6:8] = 0
    return lv


@pytest.mark.parametrize('level', [0, 1, 2])
def test_uniform_partition_equals_plain_forward(level):
    torch.manual_seed(0)
    m = tiny(output_cls_token=True)
    x = images()
    p = S * 2 ** level
    with torch.no_grad():
        fmap, cls = m(x, p)[0]
        lv = uniform_partition(x.shape[0], (IMG // S, IMG // S), level)
        mfmap, mcls = forward_mixed(m, x, lv, S, 3)[0]
    f = 2 ** level
    assert (mcls - cls).abs().max() < 1e-5
    up = fmap.repeat_interleave(f, -2).repeat_interleave(f, -1)  # a coarse token fills its cells
    assert mfmap.shape == (3, 32, IMG // S, IMG // S)
    assert (mfmap - up).abs().max() < 1e-5
    assert token_count(lv).tolist() == [(IMG // p) ** 2] * 3


@pytest.mark.parametrize('out_type', ['cls_token', 'avg', 'raw'])
def test_uniform_partition_other_outputs(out_type):
    m = tiny(out_type)
    x = images(2)
    with torch.no_grad():
        ref = m(x, 2 * S)[0]
        out = forward_mixed(m, x, uniform_partition(2, (8, 8), 1), S)[0]
    if out_type == 'raw':  # class token + the dense map's tokens: compare the class token and a coarse token
        assert out.shape == (2, 1 + 64, 32)
        assert (out[:, 0] - ref[:, 0]).abs().max() < 1e-5
        assert (out[:, 1] - ref[:, 1]).abs().max() < 1e-5 and (out[:, 2] - ref[:, 1]).abs().max() < 1e-5
    else:
        assert (out - ref).abs().max() < 1e-5


@pytest.mark.parametrize('fused', [True, False])  # timm's SDPA path and its explicit softmax path
def test_padding_and_masking_change_nothing(fused):
    m = tiny(output_cls_token=True)
    for blk in m.blocks:
        blk.attn.fused_attn = fused
    x = images(3, seed=1)
    lv = torch.stack([uniform_partition(1, (8, 8), 2)[0], forced_levels()[0], uniform_partition(1, (8, 8), 0)[0]])
    with torch.no_grad():
        mt = mixed_tokens(m, x, lv, S, 3)
        assert mt.num_tokens.tolist() == [4, 40, 64]
        assert mt.attn_mask is not None and mt.tokens.shape[1] == 1 + 64
        fmap, cls = forward_mixed(m, x, lv, S, 3)[0]
        for i in range(3):
            f1, c1 = forward_mixed(m, x[i:i + 1], lv[i:i + 1], S, 3)[0]
            assert (f1 - fmap[i:i + 1]).abs().max() < 1e-5
            assert (c1 - cls[i:i + 1]).abs().max() < 1e-5


def test_token_count_matches_partition():
    lv = forced_levels(2)
    check_partition(lv, 3)
    # 1 coarse (16px) + 3 mid (8px) + 4 fine in the split 8px cell + 32 fine in the bottom half
    assert token_count(lv).tolist() == [40, 40]
    m = tiny()
    with torch.no_grad():
        mt = mixed_tokens(m, images(2), lv, S, 3)
    assert mt.num_tokens.tolist() == [40, 40] and mt.tokens.shape[1] == 41 and mt.attn_mask is None
    bad = lv.clone()
    bad[0, 0, 0] = 1  # breaks the 4x4 block of the coarse cell
    with pytest.raises(ValueError, match='aligned'):
        check_partition(bad, 3)


def test_forced_partition_scatter_back_cell_by_cell():
    """Each fine cell of the dense output holds the output of the token that covers it: compare with the
    token sequence computed independently (embedding each token by its own patch)."""
    m = tiny('raw')
    x = images(1, seed=2)
    lv = forced_levels()
    # the independent sequence: cls, then tokens listed (level, row, col) in level-then-raster order
    toks, where = [], []
    for k in range(3):
        p = S * 2 ** k
        g = IMG // p
        w, pos = m._resize_now((p, p), (g, g))
        for r in range(g):
            for c in range(g):
                if lv[0, r * 2 ** k, c * 2 ** k] == k and (lv[0, r * 2 ** k:(r + 1) * 2 ** k,
                                                              c * 2 ** k:(c + 1) * 2 ** k] == k).all():
                    patch = x[:, :, r * p:(r + 1) * p, c * p:(c + 1) * p]
                    toks.append((patch * w).sum((1, 2, 3)) + m.patch_embed.bias + pos[0, r * g + c])
                    where.append((k, r, c))
    with torch.no_grad():
        seq = torch.cat([m.cls_token, torch.stack(toks, 0)[None]], 1)
        for blk in m.blocks:
            seq = blk(seq)
        seq = m.norm(seq)
        m.out_type = 'featmap'
        dense = forward_mixed(m, x, lv, S, 3)[0]
    assert len(toks) == 40
    for t, (k, r, c) in enumerate(where):
        f = 2 ** k
        for i in range(r * f, (r + 1) * f):
            for j in range(c * f, (c + 1) * f):
                assert (dense[0, :, i, j] - seq[0, 1 + t]).abs().max() < 1e-5, (k, r, c, i, j)


def test_partitions_by_threshold_and_budget():
    x = images(2, seed=3)
    lv = partition_by_threshold(x, S, 0.0, 3)
    check_partition(lv, 3)
    assert (lv[:, :4] == 2).all()          # the flat top half stays coarse even at threshold 0
    assert (lv[:, 4:] == 0).all()          # the noisy half splits down to the finest patch
    assert (partition_by_threshold(x, S, 1e9, 3) == 2).all()
    for budget in (4, 10, 25, 40, 64):
        lv = partition_by_budget(x, S, budget, 3)
        check_partition(lv, 3)
        n = token_count(lv)
        assert (n <= budget).all() and (n >= min(budget - 2, 64)).all()
    assert (partition_by_budget(x, S, 1.0, 3) == 0).all()


def test_task_models_use_mixed_patches():
    from mmengine.registry import MODELS
    clf = MODELS.build(dict(type='FlexiImageClassifier', num_classes=5, head_zero_init=False,
                            backbone=dict(type='FlexiViT', arch=dict(embed_dims=32, num_layers=2, num_heads=2),
                                          patch_size=8, base_patch_size=8, base_pos_grid=4)))
    randomize(clf).eval()
    x = images(2)
    with torch.no_grad():
        ref = clf(x)
        with use_mixed_patches(clf, MixedPatchPolicy(S, level=1)), record_tokens(clf) as rec:
            out = clf(x)
        mixed = rec.num_tokens[-1]
        after = clf(x)
    assert (out - ref).abs().max() < 1e-5 and torch.equal(after, ref)
    assert mixed.tolist() == [16, 16]


def test_segmentor_uses_mixed_patches():
    from mmseg.registry import MODELS
    seg = MODELS.build(dict(
        type='EncoderDecoder',
        backbone=dict(type='FlexiViT', arch=dict(embed_dims=32, num_layers=2, num_heads=2), patch_size=8,
                      base_patch_size=8, base_pos_grid=4),
        decode_head=dict(type='FCNHead', in_channels=32, channels=32, num_convs=0, concat_input=False,
                         kernel_size=1, num_classes=3, align_corners=False)))
    randomize(seg).eval()
    x = images(2)
    with torch.no_grad():
        ref = seg(x, mode='tensor')  # logits at stride 8
        with use_mixed_patches(seg, MixedPatchPolicy(S, level=1)):
            out = seg(x, mode='tensor')  # logits at stride 4, each 8px token's logits filling its 2x2 cells
    assert out.shape[-2:] == (8, 8) and ref.shape[-2:] == (4, 4)
    assert (out - ref.repeat_interleave(2, -2).repeat_interleave(2, -1)).abs().max() < 1e-5


def test_mixed_hook_draws_per_iteration_and_restores():
    from types import SimpleNamespace

    from flexitransfer.adaptive import get_mixed_policy
    from flexitransfer.engine import MixedPartitionHook, draw_mixed_policy
    a, b = draw_mixed_policy(7, [4, 8], seed=1), draw_mixed_policy(7, [4, 8], seed=1)
    assert (a.base_patch, a.budget) == (b.base_patch, b.budget)  # every rank draws the same
    draws = {(draw_mixed_policy(i, [4, 8]).base_patch, round(draw_mixed_policy(i, [4, 8]).budget, 6))
             for i in range(20)}
    assert len(draws) == 20 and {d[0] for d in draws} == {4, 8}
    assert all(1 / 16 <= d[1] <= 1 for d in draws)
    m = tiny('cls_token').train()
    hub = SimpleNamespace(info={}, update_info=lambda k, v: hub.info.__setitem__(k, v))
    runner = SimpleNamespace(model=m, iter=3, message_hub=hub)
    hook = MixedPartitionHook(base_patches=[S], seed=0)
    hook.before_train_iter(runner, 0)
    assert get_mixed_policy(m).budget == hub.info['mixed_budget']
    x = images(2)
    rec = TokenRecord()
    out = m(x, record=rec)[0]
    out.sum().backward()  # gradients flow through the mixed forward into the stored kernel
    assert m.patch_embed.weight.grad.abs().sum() > 0
    assert (rec.num_tokens[-1] <= round(hub.info['mixed_budget'] * 64)).all()
    hook.before_val(runner)
    assert get_mixed_policy(m) is None and 'forward' not in m.__dict__


# ------------------------------------------------------------------------------------------ cascade
def _brute_cascade(conf, correct, costs, thr):
    """One image at a time, as the cascade runs."""
    hits, spent = 0, 0.0
    for n in range(conf.shape[1]):
        for i in range(conf.shape[0]):
            spent += costs[i]
            if i == conf.shape[0] - 1 or conf[i, n] >= thr[i]:
                hits += correct[i, n]
                break
    return 100.0 * hits / conf.shape[1], spent / conf.shape[1]


@pytest.mark.parametrize('mode', ['target', 'budget'])
def test_calibration_picks_the_cheapest_thresholds(mode):
    from flexitransfer.adaptive import NEVER, calibrate
    rng = np.random.default_rng(0)
    k, n = 3, 40
    logits = torch.tensor(rng.normal(size=(k, n, 4)) * np.array([1.0, 2.0, 3.0])[:, None, None])
    labels = torch.tensor(rng.integers(0, 4, n))
    prob = logits.softmax(-1)
    conf = prob.max(-1).values.numpy()
    correct = (prob.argmax(-1) == labels).numpy()
    costs = [1.0, 4.0, 16.0]
    cands = [np.concatenate([[0.0], np.unique(conf[i]), [NEVER]]) for i in range(k - 1)]
    sims = [(t, *_brute_cascade(conf, correct, costs, t)) for t in itertools.product(*cands)]
    if mode == 'target':
        goal = 0.5 * (max(a for _, a, _ in sims) + min(a for _, a, _ in sims))
        res = calibrate(conf, correct, costs, target_acc=goal, num_candidates=None)
        best_cost = min(c for _, a, c in sims if a >= goal - 1e-9)
        assert res.met and res.accuracy >= goal - 1e-9 and res.mean_cost == pytest.approx(best_cost)
    else:
        budget = 6.0
        res = calibrate(conf, correct, costs, budget=budget, num_candidates=None)
        best_acc = max(a for _, a, c in sims if c <= budget)
        assert res.met and res.mean_cost <= budget and res.accuracy == pytest.approx(best_acc)
    acc, cost = _brute_cascade(conf, correct, costs, res.thresholds)
    assert (acc, cost) == pytest.approx((res.accuracy, res.mean_cost))
    assert sum(res.stop_fraction) == pytest.approx(1.0)


def test_cascade_extremes_equal_the_single_patch_models(tmp_path):
    from mmengine.registry import MODELS

    from flexitransfer.adaptive import FlexiCascade, load_thresholds, save_thresholds
    clf = MODELS.build(dict(type='FlexiImageClassifier', num_classes=5, head_zero_init=False,
                            backbone=dict(type='FlexiViT', arch=dict(embed_dims=32, num_layers=2, num_heads=2),
                                          patch_size=8, base_patch_size=8, base_pos_grid=4)))
    randomize(clf).eval()
    x = images(6, seed=4)

    def at(p):
        clf.backbone.patch_size = (p, p)
        with torch.no_grad():
            return clf(x)
    coarse, fine = at(16), at(4)
    out, stage = FlexiCascade(clf, [16, 8, 4], [0.0, 0.0])(x)
    assert (out - coarse).abs().max() < 1e-5 and (stage == 0).all()
    out, stage = FlexiCascade(clf, [16, 8, 4], [1.5, 1.5])(x)
    assert (out - fine).abs().max() < 1e-5 and (stage == 2).all()
    # in between: each image's logits are those of its own stopping stage, whatever left the batch
    mid = at(8)
    thr = float(torch.softmax(coarse, -1).max(-1).values.median())
    out, stage = FlexiCascade(clf, [16, 8, 4], [thr, 0.0])(x)
    assert 0 < int((stage == 0).sum()) < 6 and set(stage.tolist()) == {0, 1}
    assert (out - torch.where((stage == 0)[:, None], coarse, mid)).abs().max() < 1e-5
    out, stage = FlexiCascade(clf, [16, 8, 4], [thr, 1.5])(x)
    assert (out - torch.where((stage == 0)[:, None], coarse, fine)).abs().max() < 1e-5
    save_thresholds(str(tmp_path / 'c.json'), [16, 8, 4], [thr, 1.5], note='x')
    assert load_thresholds(str(tmp_path / 'c.json'))['thresholds'] == [thr, 1.5]


def test_mixed_hook_builds_from_a_config():
    from mmengine.registry import HOOKS
    hook = HOOKS.build(dict(type='MixedPartitionHook', base_patches=[10, 12], num_levels=3, seed=1))
    assert hook.base_patches == [10, 12] and hook.seed == 1
    with pytest.raises(ValueError, match='positive'):
        HOOKS.build(dict(type='MixedPartitionHook', base_patches=[0]))


def test_cascade_study_writes_table_plot_and_thresholds(tmp_path):
    """What tools/cascade.py runs, on a random tiny classifier: calibration split, test split, files."""
    import json

    from mmengine.registry import MODELS

    from flexitransfer.adaptive.run import run_cascade
    clf = MODELS.build(dict(type='FlexiImageClassifier', num_classes=4, head_zero_init=False,
                            backbone=dict(type='FlexiViT', arch=dict(embed_dims=32, num_layers=2, num_heads=2),
                                          patch_size=8, base_patch_size=8, base_pos_grid=4)))
    randomize(clf).eval()
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, 4, (8,), generator=g)) for _ in range(4)]
    study = run_cascade(clf, batches[:2], batches[2:], [16, 8, 4], budget_gflops=1.0, out_prefix=str(tmp_path / 'c'),
                        thresholds_path=str(tmp_path / 'c.json'), latency_runs=1, extra_patches=[32])
    assert [r['method'] for r in study['fixed']] == ['fixed p32', 'fixed p16', 'fixed p8', 'fixed p4']
    assert study['n_val'] == study['n_test'] == 16
    assert abs(sum(map(float, study['chosen']['stop_fraction'].split())) - 1) < 1e-6
    assert study['chosen']['gflops'] <= 1.0 and study['chosen']['latency_ms'] > 0
    assert json.load(open(tmp_path / 'c.json'))['patch_sizes'] == [16, 8, 4]
    for ext in ('.md', '.csv', '.png'):
        assert (tmp_path / ('c' + ext)).stat().st_size > 0


def test_mixed_forward_with_checkpointing_same_gradients():
    x, lv = images(2, seed=5), forced_levels(2)
    grads = []
    for cp in (False, True):
        m = tiny('cls_token', with_cp=cp).train()
        forward_mixed(m, x, lv, S, 3)[0].pow(2).sum().backward()
        grads.append(m.patch_embed.weight.grad.clone())
    assert (grads[0] - grads[1]).abs().max() < 1e-5


def test_owl_detector_one_box_per_token_with_its_own_prior():
    from mmdet.registry import MODELS

    from flexitransfer.adaptive.detect import owl_mixed_forward
    det = MODELS.build(dict(
        type='OWLViTDetector', templates=('{}',), default_queries=('red', 'blue'),
        backbone=dict(type='FlexiViT', arch=dict(embed_dims=32, num_layers=2, num_heads=2), patch_size=S,
                      base_patch_size=8, base_pos_grid=4),
        text_tower=dict(type='OpenCLIPTextTower', width=32, heads=2, layers=1, context_length=16, output_dim=16)))
    randomize(det).eval()
    x = images(2, seed=6)
    with torch.no_grad():
        for level in (0, 1):  # uniform partitions equal the detector's own forward at p = s, 2s
            det.backbone.patch_size = (S * 2 ** level,) * 2
            ref_logits, ref_boxes = det._forward(x)
            logits, boxes, _, valid = owl_mixed_forward(det, x, uniform_partition(2, (8, 8), level), S, 3)
            assert valid.all() and (logits - ref_logits).abs().max() < 1e-5 and (boxes - ref_boxes).abs().max() < 1e-5
        # a forced partition with a zero box MLP: every token's box is its own cell's prior
        det.box_head.dense2.weight.zero_()
        det.box_head.dense2.bias.zero_()
        lv = torch.stack([forced_levels()[0], uniform_partition(1, (8, 8), 2)[0]])
        logits, boxes, _, valid = owl_mixed_forward(det, x, lv, S, 3)
    assert valid.sum(1).tolist() == [40, 4] and torch.isinf(logits[1, 4:]).all()
    eps = 1e-4
    f = lambda v: (v + eps) / (1 + 2 * eps)
    got = sorted(tuple(float(v) for v in b) for b in boxes[0])
    want = []
    for k in range(3):
        g = IMG // (S * 2 ** k)
        for r in range(g):
            for c in range(g):
                blk = lv[0, r * 2 ** k:(r + 1) * 2 ** k, c * 2 ** k:(c + 1) * 2 ** k]
                if (blk == k).all():
                    want.append(tuple(f(v) for v in ((c + 1) / g, (r + 1) / g, 1 / g, 1 / g)))
    assert len(want) == 40 and torch.allclose(torch.tensor(got), torch.tensor(sorted(want)), atol=1e-5)


# ----------------------------------------------------------------------------- every task; LiT; ONNX
def _tiny_lit():
    from conftest import ROOT
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope
    cfg = Config.fromfile(f'{ROOT}/configs/retrieval/tiny_lit_flexi.py')
    init_default_scope('mmengine')
    lit = MODELS.build(dict(cfg.model, zero_shot=dict(classnames=['red', 'green', 'blue', 'yellow'],
                                                      templates=['a {} shape', 'a {} thing'])))
    return randomize(lit).eval()


def test_mixed_patches_in_panoptic_and_lit():
    """The partition with every cell fine gives the plain forward at p = s for Mask2Former's outputs and
    LiT's image embedding; every cell coarse gives LiT's p = 2s embedding."""
    from conftest import ROOT
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    import flexitransfer.models.panoptic  # noqa: F401
    from flexitransfer.engine import set_patch_size
    cfg = Config.fromfile(f'{ROOT}/configs/panoptic/tiny_panoptic_flexi.py')
    init_default_scope('mmdet')
    from mmdet.registry import MODELS
    pan = randomize(MODELS.build(cfg.model)).eval()
    x = images(1, h=96, w=96)
    set_patch_size(pan, 12)
    with torch.no_grad():
        ref_cls, ref_mask = pan(x, mode='tensor')
        with use_mixed_patches(pan, MixedPatchPolicy(12, level=0)):
            cls, mask = pan(x, mode='tensor')
    assert max((a - b).abs().max().item() for a, b in zip(cls + mask, ref_cls + ref_mask)) < 1e-5
    lit = _tiny_lit()
    x = images(2, h=60, w=60)[..., :60, :60]
    with torch.no_grad():
        for level, p in ((0, 6), (1, 12)):
            set_patch_size(lit, p)
            ref = lit.encode_image(x)
            with use_mixed_patches(lit, MixedPatchPolicy(6, level=level, num_levels=2)):
                out = lit.encode_image(x)
            assert (out - ref).abs().max() < 1e-5, (level, p)


def test_lit_zero_shot_cascade():
    """The cascade runs on the LiT zero-shot classifier: its logits are what LiT's predict scores (softmax
    equal to pred_score), thresholds 0 / NEVER give the coarse / fine stage alone."""
    from mmengine.structures import BaseDataElement

    from flexitransfer.adaptive import NEVER, FlexiCascade, zero_shot_logits_fn
    from flexitransfer.engine import set_patch_size
    lit = _tiny_lit()
    x = images(4, seed=2, h=60, w=60)
    fn = zero_shot_logits_fn(lit)
    with torch.no_grad():
        coarse, fine = fn(x, 30), fn(x, 12)
        set_patch_size(lit, 30)
        pred = lit(x, [BaseDataElement(gt_label=torch.tensor(0)) for _ in range(4)], mode='predict')
    torch.testing.assert_close(torch.stack([s.pred_score for s in pred]), coarse.softmax(-1), atol=1e-5, rtol=0)
    out, stage = FlexiCascade(lit, [30, 12], [0.0])(x)
    assert (out - coarse).abs().max() < 1e-5 and (stage == 0).all()
    out, stage = FlexiCascade(lit, [30, 12], [NEVER])(x)
    assert (out - fine).abs().max() < 1e-5 and (stage == 1).all()


def test_cascade_deploys_through_onnx(tmp_path):
    """One graph per stage (the model baked at the stage's patch) + cascade.json: ONNX Runtime gives the
    PyTorch cascade's logits and stopping stages, for a classifier and for LiT zero-shot."""
    from mmengine.registry import MODELS

    from flexitransfer.adaptive import FlexiCascade, confidence
    from flexitransfer.deploy import OnnxCascade, export_cascade_onnx
    clf = MODELS.build(dict(type='FlexiImageClassifier', num_classes=5, head_zero_init=False,
                            backbone=dict(type='FlexiViT', arch=dict(embed_dims=32, num_layers=2, num_heads=2),
                                          patch_size=8, base_patch_size=8, base_pos_grid=4)))
    for name, model, patches, x in (('cls', randomize(clf).eval(), [16, 8], images(6, seed=4)),
                                    ('lit', _tiny_lit(), [30, 12], images(6, seed=5, h=60, w=60))):
        ref = FlexiCascade(model, patches, [0.0])  # thresholds: the median confidence at the first stage
        with torch.no_grad():
            thr = float(confidence(ref.logits_fn(x, patches[0])).median())
        want, want_stage = FlexiCascade(model, patches, [thr])(x)
        path = export_cascade_onnx(model, patches, [thr], tuple(x.shape[-2:]), str(tmp_path / name),
                                   exporter='torchscript')
        got, stage = OnnxCascade(path)(x)
        assert torch.equal(stage, want_stage) and 0 < int((stage == 0).sum()) < 6, name
        assert (got - want).abs().max() < 1e-4, name
        assert sorted(p.name for p in (tmp_path / name).iterdir() if p.suffix == '.onnx') == \
            [f'stage{i}_p{p}.onnx' for i, p in enumerate(patches)]


# ------------------------------------------------------------ no state on modules; the studies' parts
def test_mixed_policy_is_a_setting_and_counts_come_back_through_a_record():
    """The policy is a backbone setting its own forward reads (no forward replaced); an explicit patch
    still runs uniform; the tokens per image come back through the caller's record."""
    m = tiny('cls_token')
    x = images(2)
    with torch.no_grad():
        ref = m(x, 2 * S)[0]
        with use_mixed_patches(m, MixedPatchPolicy(S, level=1)), record_tokens(m) as rec:
            assert 'forward' not in vars(m)
            mixed = m(x)[0]
            fine = m(x, S)[0]
    assert (mixed - ref).abs().max() < 1e-5 and (fine - mixed).abs().max() > 1e-3
    assert rec.grids == [(8, 8), (8, 8)] and [n.tolist() for n in rec.num_tokens] == [[16, 16], [64, 64]]
    assert m.mixed_policy is None and not m._forward_pre_hooks


def test_cascade_dispatches_through_the_class_hierarchy():
    """A LiT subclass is a LiT (zero-shot logits), whatever its class is called."""
    from flexitransfer.adaptive import logits_fn_for, zero_shot_logits_fn
    from flexitransfer.models.retrieval.lit import LiT

    class MyLiT(LiT):
        pass
    lit = _tiny_lit()
    lit.__class__ = MyLiT
    x = images(2, seed=3, h=60, w=60)
    with torch.no_grad():
        assert torch.equal(logits_fn_for(lit)(x, 30), zero_shot_logits_fn(lit)(x, 30))


def test_study_figures_have_few_series_and_seg_miou_is_mmsegs(tmp_path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    from flexitransfer.experiments.adaptive_common import draw_uniform, draw_variants, pareto_front, write_rows
    from flexitransfer.experiments.adaptive_seg import miou_percent
    rng = np.random.default_rng(0)
    methods = ['(a) uniform', '(b) cascade', '(c) mixed zero-shot', '(d) mixed after mixed FT',
               "(d') uniform after mixed FT", '(e) uniform after uniform FT (control)',
               '(e) mixed after uniform FT (control)']
    rows = [dict(method=m, setting=('calibrated' if i == 0 and m == '(b) cascade' else f's{i}'),
                 top1=float(rng.uniform(50, 99)), mean_tokens=float(rng.uniform(4, 150)), mflops=1.0,
                 latency_ms=None, note='') for m in methods for i in range(5)]
    for draw in (draw_uniform, draw_variants):
        fig, ax = plt.subplots()
        draw(ax, rows, 't', 'top-1 (%)')
        assert 2 <= len(ax.get_legend_handles_labels()[1]) == len(ax.get_lines()) <= 6
        plt.close(fig)
    front = pareto_front(rows)
    assert [r['mean_tokens'] for r in front] == sorted(r['mean_tokens'] for r in front)
    assert all(not (v['top1'] >= u['top1'] and v['mean_tokens'] < u['mean_tokens']) for u in front for v in rows)
    md, files = write_rows(rows, str(tmp_path / 'a'), 't', text_before='intro')
    assert md.startswith('intro\n\n| method | setting | top-1 (%) | mean tokens |') and len(files) == 4
    assert all((tmp_path / f).stat().st_size > 0 for f in ('a.md', 'a.csv', 'a.png', 'a_uniform.png'))
    # mIoU: the areas summed over images, IoU per class, NaN (absent) classes left out, 255 ignored
    pairs = [(torch.randint(0, 4, (9, 7)), torch.randint(0, 4, (9, 7))) for _ in range(3)]
    pairs[0][1][:2] = 255
    inter, union = np.zeros(5), np.zeros(5)  # class 4 appears nowhere
    for pr, gt in pairs:
        keep = gt != 255
        for c in range(5):
            inter[c] += int(((pr == c) & (gt == c) & keep).sum())
            union[c] += int((((pr == c) | (gt == c)) & keep).sum())
    with np.errstate(invalid='ignore'):
        want = float(np.nanmean(inter / np.where(union > 0, union, np.nan)) * 100)
    assert miou_percent(pairs, 5) == want
