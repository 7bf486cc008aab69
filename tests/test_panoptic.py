"""Panoptic segmentation: Mask2Former (mmdet) on FlexiViT + the stride-aware simple feature pyramid.

PQ is checked against an independent brute-force implementation through the project's own
dataset -> metric path (mmdet's CocoPanopticDataset and CocoPanopticMetric, panopticapi-lite on
numpy 2); the neck against ViTDet's structure and exact level sizes at every patch size; the
tiny config against a trivial baseline at three patch sizes; the real config by one training
iteration at ViT-B size.
"""
import copy
import json
import os
import os.path as osp
import re

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.config import Config

from conftest import ROOT, pan_opts, randomize, run_tool

TINY = 'configs/panoptic/tiny_panoptic_flexi.py'
REAL = 'configs/panoptic/coco_panoptic_mask2former_flexi_b.py'
PAPER_PATCHES = (8, 10, 12, 15, 16, 20, 24, 30, 40, 48)


# ----------------------------------------------------------------------------- data / config helpers
def _cfg(path, root=None):
    cfg = Config.fromfile(osp.join(ROOT, path))
    if root is not None:
        cfg.merge_from_dict(dict(o.split('=', 1) for o in pan_opts(root)))
    return cfg


def _scope():
    from mmengine.registry import DefaultScope, init_default_scope
    DefaultScope._instance_dict.clear()
    init_default_scope('mmdet')


def _build_model(cfg):
    import flexitransfer.models.panoptic  # noqa: F401  (FlexiMask2Former, mmdet registry)
    from mmdet.registry import MODELS
    _scope()
    return MODELS.build(cfg.model)


# ----------------------------------------------------------------------------- PQ: brute force oracle
def read_ids(png_path):
    from PIL import Image
    rgb = np.asarray(Image.open(png_path).convert('RGB')).astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 ** 2 * rgb[..., 2]


def brute_force_pq(images, isthing):
    """PQ / SQ / RQ (x100) for all / things / stuff, straight from the definition (Kirillov et al. 2019).

    ``images``: list of (gt_ids, gt_segs, pred_ids, pred_segs); ``*_ids`` are (H, W) segment-id maps
    with 0 = VOID, ``gt_segs`` maps id -> (category, iscrowd), ``pred_segs`` id -> category.
    A pair matches when same category and IoU > 0.5, where the union leaves out predicted pixels on
    GT VOID. Unmatched predictions are FP unless more than half of them lies on GT VOID or on a
    crowd region of their category; crowd GT segments are never FN.
    """
    stats = {c: dict(tp=0, fp=0, fn=0, iou=0.0) for c in isthing}
    for gt, gsegs, pred, psegs in images:
        gvoid = gt == 0
        matched_g, matched_p = set(), set()
        for g, (gc, crowd) in gsegs.items():
            if crowd:
                continue
            gm = gt == g
            for p, pc in psegs.items():
                if pc != gc:
                    continue
                pm = pred == p
                inter = int((gm & pm).sum())
                union = int(pm.sum()) + int(gm.sum()) - inter - int((pm & gvoid).sum())
                iou = inter / union
                if iou > 0.5:
                    stats[gc]['tp'] += 1
                    stats[gc]['iou'] += iou
                    matched_g.add(g)
                    matched_p.add(p)
        for g, (gc, crowd) in gsegs.items():
            if not crowd and g not in matched_g:
                stats[gc]['fn'] += 1
        for p, pc in psegs.items():
            if p in matched_p:
                continue
            pm = pred == p
            ignored = int((pm & gvoid).sum())
            for g, (gc, crowd) in gsegs.items():
                if crowd and gc == pc:
                    ignored += int((pm & (gt == g)).sum())
            if ignored / int(pm.sum()) <= 0.5:
                stats[pc]['fp'] += 1
    out = {}
    for name, sel in (('', None), ('_th', True), ('_st', False)):
        pq, sq, rq, n = 0.0, 0.0, 0.0, 0
        for c, s in stats.items():
            if sel is not None and isthing[c] != sel:
                continue
            den = s['tp'] + 0.5 * s['fp'] + 0.5 * s['fn']
            if den == 0:
                continue
            n += 1
            pq += s['iou'] / den
            sq += s['iou'] / s['tp'] if s['tp'] else 0.0
            rq += s['tp'] / den
        out['PQ' + name], out['SQ' + name], out['RQ' + name] = (100 * v / n for v in (pq, sq, rq))
    return out


def _val_dataset(cfg):
    from mmdet.registry import DATASETS
    _scope()
    ds_cfg = copy.deepcopy(cfg.test_dataloader.dataset)
    return DATASETS.build(ds_cfg)


def evaluate_predictions(cfg, dataset, predict):
    """Feed predictions through the config's own evaluator (CocoPanopticMetric) as the test loop does.

    ``predict(index, data_info) -> (pred_ids, pred_segs)`` in GT-id space: pred_ids (H, W) with 0 =
    VOID, pred_segs id -> contiguous label. They are encoded as mmdet's fusion head encodes them
    (label + instance * INSTANCE_OFFSET, VOID = num_classes). Returns (metric dict, oracle inputs).
    """
    from mmdet.evaluation.functional import INSTANCE_OFFSET
    from mmdet.registry import METRICS
    from mmdet.structures import DetDataSample
    from mmengine.evaluator import Evaluator
    from mmengine.structures import PixelData
    _scope()
    metric = METRICS.build(copy.deepcopy(cfg.test_evaluator))
    evaluator = Evaluator(metric)
    evaluator.dataset_meta = dataset.metainfo
    num_classes = len(dataset.metainfo['classes'])
    thing = set(range(len(dataset.metainfo['thing_classes'])))
    oracle = []
    for i in range(len(dataset)):
        item = dataset[i]
        sample: DetDataSample = item['data_samples']
        info = dataset.get_data_info(i)
        gt_ids = read_ids(info['seg_map_path'])
        pred_ids, pred_segs = predict(i, info, gt_ids)
        pan = np.full(gt_ids.shape, num_classes, np.int64)
        for k, (pid, label) in enumerate(sorted(pred_segs.items())):
            pan[pred_ids == pid] = label + ((k + 1) * INSTANCE_OFFSET if label in thing else 0)
        sample.pred_panoptic_seg = PixelData(sem_seg=torch.from_numpy(pan.copy())[None])  # the metric edits it
        evaluator.process(data_samples=[sample], data_batch=None)
        # the oracle sees the encoded map as the model would emit it (same-class stuff is one segment)
        gsegs = {s['id']: (s['category'], not s['is_thing'] and s['category'] in thing)
                 for s in info['segments_info']}
        enc = np.where(pan == num_classes, 0, pan + 1)
        oracle.append((gt_ids, gsegs, enc, {int(v): int(v - 1) % INSTANCE_OFFSET for v in np.unique(enc) if v}))
    metrics = evaluator.evaluate(len(dataset))
    return {k.split('/')[-1]: v for k, v in metrics.items()}, oracle


def _gt_prediction(i, info, gt_ids):
    return gt_ids.copy(), {s['id']: s['category'] for s in info['segments_info']}


def _check_against_oracle(metrics, oracle, dataset):
    n_th = len(dataset.metainfo['thing_classes'])
    isthing = {c: c < n_th for c in range(len(dataset.metainfo['classes']))}
    ref = brute_force_pq(oracle, isthing)
    for k, v in ref.items():
        assert metrics[k] == pytest.approx(v, abs=1e-6), (k, metrics, ref)
    return ref


def test_toy_panoptic_format(pan_toy):
    """The generator writes COCO panoptic as mmdet reads it: thing label 0, things/stuff in every image,
    a VOID band, crowd regions, non-contiguous category ids, ids using all three PNG channels."""
    cfg = _cfg(TINY, pan_toy)
    ds = _val_dataset(cfg)
    meta = ds.metainfo
    js = json.load(open(osp.join(pan_toy, 'annotations', 'panoptic_val2017.json')))
    assert [c['name'] for c in js['categories']] == list(meta['classes'])  # label order = JSON order
    assert js['categories'][0]['isthing'] == 1 and meta['classes'][0] in meta['thing_classes']
    assert [c['id'] for c in js['categories']] != list(range(1, len(js['categories']) + 1))
    crowd = 0
    big_id = False
    for i in range(len(ds)):
        info = ds.get_data_info(i)
        ids = read_ids(info['seg_map_path'])
        segs = info['segments_info']
        assert any(s['is_thing'] for s in segs) and any(s['category'] >= len(meta['thing_classes']) for s in segs)
        assert (ids == 0).any()  # VOID band
        assert set(np.unique(ids)) - {0} == {s['id'] for s in segs}
        crowd += sum(1 for s in segs if not s['is_thing'] and s['category'] < len(meta['thing_classes']))
        big_id |= any(s['id'] >= 256 ** 2 for s in segs)
    assert crowd > 0 and big_id


def test_pq_ground_truth_as_prediction_is_100(pan_toy):
    cfg = _cfg(TINY, pan_toy)
    ds = _val_dataset(cfg)
    metrics, oracle = evaluate_predictions(cfg, ds, _gt_prediction)
    for k in ('PQ', 'SQ', 'RQ', 'PQ_th', 'PQ_st'):
        assert metrics[k] == pytest.approx(100.0, abs=1e-9), metrics
    _check_against_oracle(metrics, oracle, ds)


def test_pq_perturbed_predictions_match_brute_force(pan_toy):
    """A merged instance, a dropped segment, a wrong class, a shifted mask, a spurious segment and a
    segment spilling over VOID / crowd: mmdet + panopticapi on numpy 2 == the brute force to 1e-6."""
    cfg = _cfg(TINY, pan_toy)
    ds = _val_dataset(cfg)
    n_th = len(ds.metainfo['thing_classes'])
    n_cls = len(ds.metainfo['classes'])

    def perturb(i, info, gt_ids):
        rng = np.random.default_rng(i)
        pred, segs = _gt_prediction(i, info, gt_ids)
        things = [s for s in info['segments_info'] if s['is_thing']]
        kind = i % 6
        if kind == 0 and len(things) >= 2:  # merge two instances into the first one's segment
            a, b = things[:2]
            pred[pred == b['id']] = a['id']
            del segs[b['id']]
        elif kind == 1:  # drop a segment (predicted VOID)
            s = things[0]
            pred[pred == s['id']] = 0
            del segs[s['id']]
        elif kind == 2:  # wrong class (thing -> another thing; stuff -> another stuff)
            s = info['segments_info'][int(rng.integers(len(info['segments_info'])))]
            c = s['category']
            segs[s['id']] = (c + 1) % n_th if c < n_th else n_th + (c - n_th + 1) % (n_cls - n_th)
        elif kind == 3:  # shift a thing mask by a few pixels (IoU between 0 and 1)
            s = things[-1]
            m = np.roll(pred == s['id'], shift=(int(rng.integers(2, 9)), int(rng.integers(-6, 7))), axis=(0, 1))
            pred[pred == s['id']] = 0
            pred[m] = s['id']
        elif kind == 4:  # a spurious square of a random thing class
            h, w = pred.shape
            y, x = int(rng.integers(0, h - 20)), int(rng.integers(0, w - 20))
            new = int(pred.max()) + 1
            pred[y:y + 20, x:x + 20] = new
            segs[new] = int(rng.integers(n_th))
        else:  # the first stuff segment swallows the VOID band
            stuff = [s for s in info['segments_info'] if s['category'] >= n_th][0]
            pred[gt_ids == 0] = stuff['id']
        segs = {k: v for k, v in segs.items() if (pred == k).any()}
        return pred, segs

    metrics, oracle = evaluate_predictions(cfg, ds, perturb)
    ref = _check_against_oracle(metrics, oracle, ds)
    assert 30 < ref['PQ'] < 95 and ref['SQ'] < 100 and ref['RQ'] < 100, ref  # the perturbations bite


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


# ----------------------------------------------------------------------------- Mask2Former on FlexiViT
def _batch(model, size=96, n=2, seed=0):
    """Two synthetic images with two things and two stuff regions each (flexitransfer.datasets.synthetic,
    shared with tools/benchmark_train.py), through the model's preprocessor."""
    from flexitransfer.datasets.synthetic import panoptic_batch
    head = model.panoptic_head
    batch = panoptic_batch(size, n, head.num_things_classes, head.num_stuff_classes, seed)
    return model.data_preprocessor(batch, training=True)


def test_mask2former_forward_and_loss_at_patch_12_and_48():
    """The tiny config's model at p=12 and p=48 on 96 x 96: the pyramid and Mask2Former's mask
    predictions sit exactly at strides 4..32 of the input, losses are finite, every backbone and neck
    parameter gets a gradient. (A pyramid assuming stride 16 gives 3/4 or 3x the right sizes here.)"""
    cfg = _cfg(TINY)
    model = _build_model(cfg)
    model.init_weights()
    data = _batch(model)
    for p in (12, 48):
        model.backbone.patch_size = (p, p)
        model.zero_grad(set_to_none=True)
        feats = model.extract_feat(data['inputs'])
        assert [tuple(f.shape[-2:]) for f in feats] == [(24, 24), (12, 12), (6, 6), (3, 3)], p
        losses = model.loss(data['inputs'], data['data_samples'])
        total = sum(v for k, v in losses.items() if 'loss' in k)
        assert torch.isfinite(total) and total > 0
        total.backward()
        for name, q in list(model.backbone.named_parameters()) + list(model.neck.named_parameters()):
            assert q.grad is not None and torch.isfinite(q.grad).all(), (p, name)
        model.eval()
        with torch.no_grad():
            cls_list, mask_list = model(data['inputs'], mode='tensor')  # no data samples needed
        model.train()
        assert mask_list[-1].shape == (2, cfg.model.panoptic_head.num_queries, 24, 24)
        assert cls_list[-1].shape[-1] == cfg.num_classes + 1


# ----------------------------------------------------------------------------- tiny config end to end
def _trivial_baseline(cfg, pan_toy):
    """The most frequent stuff class (by training pixels) everywhere, no things."""
    js = json.load(open(osp.join(pan_toy, 'annotations', 'panoptic_train2017.json')))
    names = {c['id']: c['name'] for c in js['categories']}
    area = {}
    for ann in js['annotations']:
        for s in ann['segments_info']:
            if names[s['category_id']] in cfg.stuff_classes:
                area[names[s['category_id']]] = area.get(names[s['category_id']], 0) + s['area']
    label = list(cfg.metainfo['classes']).index(max(area, key=area.get))
    ds = _val_dataset(cfg)
    return evaluate_predictions(cfg, ds, lambda i, info, gt: (np.ones_like(gt), {1: label}))[0]


def test_tiny_config_learns_at_three_patch_sizes(tmp_path, pan_toy, tiny_pan_ckpt):
    """PQ / SQ / RQ with the things / stuff split, per patch, in tools/test.py's table.

    Trivial baseline: the most frequent stuff class (sky) everywhere and no things. Its sky segment
    matches where sky covers more than half of the labelled image, every other segment is missed:
    a low PQ (measured through the same metric below; asserted < 15). We require PQ > baseline + 30
    and things PQ > 20 at p = 8, 12 and 24 (measured 71 / 70 / 62, things 52 / 52 / 39): the model
    finds and separates instances, at patch sizes from 144 to 16 tokens."""
    cfg = _cfg(TINY, pan_toy)
    base = _trivial_baseline(cfg, pan_toy)
    assert base['PQ_th'] == 0 and base['PQ'] < 15, base
    out = str(tmp_path / 'm.json')
    log = run_tool('tools/test.py', TINY, tiny_pan_ckpt, '--patch', '8', '12', '24', '--work-dir', str(tmp_path),
                   '--out-json', out, '--cfg-options', *pan_opts(pan_toy))
    assert '| patch | tokens | coco_panoptic/PQ | coco_panoptic/SQ | coco_panoptic/RQ | coco_panoptic/PQ_th' in log
    table = json.load(open(out))['table']
    assert [r['patch'] for r in table] == ['8', '12', '24'] and [r['tokens'] for r in table] == [144, 64, 16]
    for r in table:
        assert r['coco_panoptic/PQ'] > base['PQ'] + 30 and r['coco_panoptic/PQ_th'] > 20, (base, table)
        for k in ('SQ', 'RQ', 'PQ_st', 'SQ_st', 'RQ_st', 'SQ_th', 'RQ_th'):
            assert 0 <= r[f'coco_panoptic/{k}'] <= 100


def test_resize_deploy_panoptic_same_outputs(tmp_path, tiny_pan_ckpt):
    """tools/resize_deploy.py bakes p=8 into the panoptic model: Mask2Former's outputs (mode='tensor',
    random batch, no data samples) equal the flexible model's (the tool exits non-zero otherwise)."""
    log = run_tool('tools/resize_deploy.py', TINY, tiny_pan_ckpt, '--patch', '8', '--out', str(tmp_path),
                   '--runs', '3')
    m = re.search(r'max abs diff deployed vs flexible at patch 8: task output (\S+), backbone (\S+)', log)
    assert m, log[-2000:]
    assert max(float(m.group(1)), float(m.group(2))) <= 1e-5, m.group(0)
    dcfg = Config.fromfile(str(tmp_path / 'tiny_panoptic_flexi_p8.py'))
    assert dcfg.model.backbone.base_patch_size == [8, 8] and dcfg.model.backbone.base_pos_grid == [12, 12]
    assert not [h for h in dcfg.custom_hooks if h['type'] == 'RandomPatchSizeHook']


def test_overlay_tool(tmp_path, pan_toy, tiny_pan_ckpt):
    """The colour map (alpha 1) paints every predicted segment in one colour, stuff in its palette
    colour, different segments differently (thing borders white)."""
    img = osp.join(pan_toy, 'val2017', sorted(os.listdir(osp.join(pan_toy, 'val2017')))[0])
    log = run_tool('tools/panoptic_overlay.py', TINY, tiny_pan_ckpt, img, '--patch', '12', '--alpha', '1',
                   '--save-ids', '--out', str(tmp_path))
    stem = osp.join(str(tmp_path), osp.splitext(osp.basename(img))[0] + '_p12')
    assert 'wrote' in log
    from PIL import Image
    col = np.asarray(Image.open(stem + '.png').convert('RGB'))
    ids = read_ids(stem + '_ids.png')
    assert col.shape[:2] == ids.shape == (96, 96)
    cfg = _cfg(TINY)
    n_th = len(cfg.thing_classes)
    seen = {}
    for v in np.unique(ids):
        if v == 0:
            continue
        region = ids == v
        inner = region.copy()  # away from the white thing borders
        inner[1:] &= region[:-1]
        inner[:-1] &= region[1:]
        inner[:, 1:] &= region[:, :-1]
        inner[:, :-1] &= region[:, 1:]
        colours = {tuple(c) for c in col[inner]}
        if not colours:
            continue
        assert len(colours) == 1, (v, colours)
        c = colours.pop()
        if v % 1000 >= n_th:
            assert list(c) == list(cfg.metainfo['palette'][v % 1000])
        seen[int(v)] = c
    assert len(seen) >= 2 and len(set(seen.values())) == len(seen)


def test_real_config_one_training_iteration(tmp_path):
    """configs/panoptic/coco_panoptic_mask2former_flexi_b.py as shipped (FlexiViT-B, 256-channel pyramid,
    Mask2Former with 100 queries, COCO-panoptic loader and metric) takes a training step on a miniature
    of the COCO panoptic layout (two 96 x 128 images; the 960 LSJ crop and pad shrunk to 96, 1024 sampled
    points per mask instead of 12544 to keep the CPU time small)."""
    from mmengine.runner import Runner
    from flexitransfer.datasets.toy.coco_panoptic import make_coco_panoptic_like
    root = make_coco_panoptic_like(str(tmp_path / 'coco'), num_train=2, num_val=1, size=(96, 128)) + '/'
    cfg = _cfg(REAL)
    assert cfg.model.backbone.arch == 'base' and cfg.model.panoptic_head.num_things_classes == 80
    assert cfg.model.data_preprocessor.pad_size_divisor % 32 == 0
    assert all(cfg.model.data_preprocessor.pad_size_divisor % p == 0 for p in PAPER_PATCHES)
    model = _build_model(cfg)
    assert sum(q.numel() for q in model.backbone.parameters()) > 85e6
    with pytest.raises(FileNotFoundError, match='convert_weights.py'):
        model.backbone.init_weights()
    del model
    # the toy categories instead of COCO's 133 (the head's class count follows them)
    from flexitransfer.datasets.toy.coco_panoptic import TOY_PANOPTIC_STUFF, TOY_PANOPTIC_THINGS
    meta = dict(classes=TOY_PANOPTIC_THINGS + TOY_PANOPTIC_STUFF, thing_classes=TOY_PANOPTIC_THINGS,
                stuff_classes=TOY_PANOPTIC_STUFF)
    nt, ns = len(TOY_PANOPTIC_THINGS), len(TOY_PANOPTIC_STUFF)
    head = cfg.model.panoptic_head
    head.update(num_things_classes=nt, num_stuff_classes=ns)
    head.loss_cls.class_weight = [1.0] * (nt + ns) + [0.1]
    cfg.model.panoptic_fusion_head.update(num_things_classes=nt, num_stuff_classes=ns)
    cfg.model.backbone.pretrained = None
    cfg.model.data_preprocessor.batch_augments[0].size = (96, 96)
    cfg.model.train_cfg.num_points = 1024
    for t in cfg.train_dataloader.dataset.pipeline:
        if t['type'] == 'RandomResize':
            t['scale'] = (96, 96)
        if t['type'] == 'RandomCrop':
            t['crop_size'] = (96, 96)
    cfg.work_dir = str(tmp_path / 'w')
    for dl in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[dl].dataset.data_root = root
        cfg[dl].dataset.metainfo = meta
        cfg[dl].num_workers = 0
        cfg[dl].persistent_workers = False
    cfg.val_evaluator.update(ann_file=root + 'annotations/panoptic_val2017.json',
                             seg_prefix=root + 'annotations/panoptic_val2017/')
    cfg.test_evaluator = cfg.val_evaluator
    cfg.train_dataloader.batch_size = 2
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=1, val_interval=10)
    cfg.custom_hooks = [dict(type='RandomPatchSizeHook', patch_sizes=[24, 48])]  # CPU-cheap draws
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=10)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.randomness = dict(seed=0)
    runner = Runner.from_cfg(cfg)
    runner.train()
    loss = runner.message_hub.get_scalar('train/loss').current()
    assert np.isfinite(loss) and loss > 0
