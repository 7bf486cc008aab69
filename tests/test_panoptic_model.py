"""Mask2Former (mmdet) on FlexiViT: forward and loss at two patch sizes, the tiny config end to end
(PQ against a trivial baseline at three patch sizes), deploy at p = 8, the overlay tool, the real
ViT-B config for one training iteration."""
from panoptic_common import PAPER_PATCHES, REAL, TINY, _build_model, _cfg, _val_dataset, evaluate_predictions, read_ids

import json
import os
import os.path as osp
import re

import numpy as np
import pytest
import torch
from conftest import pan_opts, run_tool
from mmengine.config import Config


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
                   '--save-ids', '--upscale', '1', '--out', str(tmp_path))
    stem = osp.join(str(tmp_path), osp.splitext(osp.basename(img))[0] + '_p12')
    assert 'wrote' in log
    from PIL import Image
    shown = np.asarray(Image.open(stem + '.png').convert('RGB'))
    ids = read_ids(stem + '_ids.png')
    assert ids.shape == (96, 96) and shown.shape[0] >= 96 and shown.shape[1] > 96  # the legend on the right
    col = shown[:96, :96]  # the colour map itself (--upscale 1: at the image's own size)
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
