"""The open-vocabulary experiment's parts (tools/reproduce_openvocab.py runs the experiment itself):
the held-out class never reaches detection training, a LiT checkpoint fills both detector towers,
the held-out AP is pycocotools' AP of that class alone, and detections keep their query's category."""
import contextlib
import io
import json
import os.path as osp

import numpy as np
import pytest
import torch
from conftest import ROOT
from mmengine.config import Config
from mmengine.registry import init_default_scope

import flexitransfer  # noqa: F401
from flexitransfer.datasets.toy.coco_instances import make_coco_shape_instances_like
from flexitransfer.evaluation.open_vocab import box_ap, detect_dataset, shuffle_scores

CONFIGS = [osp.join(ROOT, 'configs', 'det', f) for f in ('tiny_owl_openvocab.py', 'tiny_owl_openvocab_colour.py')]


@pytest.fixture(autouse=True, scope='module')
def _mmdet_scope():
    init_default_scope('mmdet')  # an earlier in-process test may have left another default scope


@pytest.fixture(scope='module')
def shapes(tmp_path_factory):
    return make_coco_shape_instances_like(str(tmp_path_factory.mktemp('det_shapes')), num_train=40, num_val=12)


def _cfg(path, root):
    cfg = Config.fromfile(path)
    for k in ('train_dataloader', 'test_dataloader'):
        cfg[k].dataset.data_root = root
        cfg[k].update(num_workers=0, persistent_workers=False)
    return cfg


def _coco(path):
    from pycocotools.coco import COCO
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(path)


def test_held_out_class_never_reaches_detection_training(shapes):
    from mmdet.registry import DATASETS
    cfg = _cfg(CONFIGS[0], shapes)
    raw = json.load(open(osp.join(shapes, 'annotations', 'instances_train2017.json')))
    held = {c['id'] for c in raw['categories'] if c['name'] in cfg.held_out}
    assert len(held) == len(cfg.held_out) == 1
    with_held = {a['image_id'] for a in raw['annotations'] if a['category_id'] in held}
    assert with_held, 'the generated training set should contain the held-out class'
    train = DATASETS.build(cfg.train_dataloader.dataset)
    assert not set(cfg.held_out) & set(train.metainfo['classes'])  # never a training query
    infos = [train.get_data_info(i) for i in range(len(train))]
    assert {i['img_id'] for i in infos} >= with_held  # its images stay (its shapes are unannotated)
    names = train.metainfo['classes']
    for info in infos:
        assert info['text'] == names
        n_raw = sum(a['image_id'] == info['img_id'] and a['category_id'] not in held for a in raw['annotations'])
        assert len(info['instances']) == n_raw  # every other box is kept
    test = DATASETS.build(cfg.test_dataloader.dataset)
    assert set(cfg.held_out) <= set(test.metainfo['classes'])


@pytest.mark.parametrize('config', CONFIGS, ids=['composite', 'colour'])
def test_lit_checkpoint_fills_both_detector_towers(config, tmp_path):
    from mmdet.registry import MODELS
    from mmengine.runner import load_checkpoint

    from flexitransfer.engine import check_checkpoint
    lit_cfg = Config.fromfile(osp.join(ROOT, 'configs', 'retrieval', 'tiny_lit_flexi.py'))
    torch.manual_seed(0)
    lit = MODELS.build(lit_cfg.model)
    path = str(tmp_path / 'lit.pth')
    torch.save({'state_dict': lit.state_dict()}, path)
    det = MODELS.build(Config.fromfile(config).model)
    check_checkpoint(det, path, require_all=False)  # same shapes wherever the names meet
    before = {k: v.clone() for k, v in det.state_dict().items()}
    load_checkpoint(det, path, map_location='cpu', logger='silent')  # what load_from does
    src = lit.state_dict()
    towers = [k for k in before if k.startswith(('backbone.', 'text_tower.'))]
    for k in towers:
        assert torch.equal(det.state_dict()[k], src[k]), k
    rest = set(before) - set(towers)
    assert rest and all(k.startswith(('layer_norm.', 'box_head.', 'class_head.')) for k in rest)
    assert not rest & set(src)  # the heads start fresh


def test_box_ap_is_the_class_alone_ap(shapes):
    from faster_coco_eval import COCO as FCOCO
    from faster_coco_eval import COCOeval_faster
    ann = osp.join(shapes, 'annotations', 'instances_val2017.json')
    d = json.load(open(ann))
    gt = _coco(ann)
    cats = [c['id'] for c in d['categories']]
    target = cats[-1]
    assert gt.getAnnIds(catIds=[target])
    rng = np.random.default_rng(0)
    dets = []
    for a in d['annotations']:
        x, y, w, h = a['bbox']
        j = rng.normal(0, 3, 4)
        c = a['category_id'] if rng.random() < 0.7 else int(rng.choice(cats))
        dets.append(dict(image_id=a['image_id'], category_id=c, score=float(rng.random()),
                         bbox=[x + j[0], y + j[1], max(2.0, w + j[2]), max(2.0, h + j[3])]))
    for im in d['images']:
        for _ in range(4):
            dets.append(dict(image_id=im['id'], category_id=int(rng.choice(cats)), score=float(rng.random()),
                             bbox=[*rng.uniform(0, 60, 2).tolist(), *rng.uniform(8, 40, 2).tolist()]))
    ours = box_ap(gt, dets, [target])
    assert 0.05 < ours['AP'] < 0.95
    # oracle: an independent implementation on a ground truth of that class alone
    only = dict(d, annotations=[a for a in d['annotations'] if a['category_id'] == target])
    with contextlib.redirect_stdout(io.StringIO()):
        fgt = FCOCO(only)
        ev = COCOeval_faster(fgt, fgt.loadRes([dict(x) for x in dets if x['category_id'] == target]), 'bbox')
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert ours['AP'] == pytest.approx(ev.stats[0], abs=1e-6) and ours['AP50'] == pytest.approx(ev.stats[1], abs=1e-6)
    # other classes' detections do not count; perfect boxes give 1; a class without boxes is an error
    assert box_ap(gt, [x for x in dets if x['category_id'] == target], [target]) == ours
    perfect = [dict(image_id=a['image_id'], category_id=target, bbox=a['bbox'], score=1.0)
               for a in d['annotations'] if a['category_id'] == target]
    assert box_ap(gt, perfect, [target])['AP'] == pytest.approx(1.0)
    shuffled = shuffle_scores(dets, seed=0)
    assert sorted(x['score'] for x in shuffled) == sorted(x['score'] for x in dets)
    assert [x['bbox'] for x in shuffled] == [x['bbox'] for x in dets]
    with pytest.raises(ValueError, match='no box of categories'):
        box_ap(gt, dets, [max(cats) + 1])


def test_detections_keep_their_query_category(shapes):
    from mmdet.registry import MODELS
    from mmengine.runner import Runner
    cfg = _cfg(CONFIGS[0], shapes)
    cfg.test_dataloader.batch_size = 6
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    loader = Runner.build_dataloader(cfg.test_dataloader)
    gt = _coco(osp.join(shapes, 'annotations', 'instances_val2017.json'))
    name_to_cat = {c['name']: c['id'] for c in gt.loadCats(gt.getCatIds())}
    classes = tuple(cfg.test_dataloader.dataset.metainfo.classes)
    model.test_cfg['max_per_img'] = 10 ** 6  # every (token, query) pair: the sets must then be equal

    def key(dets):
        return sorted((d['image_id'], d['category_id'], round(d['score'], 5), *np.round(d['bbox'], 3)) for d in dets)

    fwd = detect_dataset(model, loader, classes, name_to_cat)
    rev = detect_dataset(model, loader, classes[::-1], name_to_cat)
    assert len(fwd) == 12 * 64 * len(classes) and key(fwd) == key(rev)  # sigmoid scores: per query
    alone = detect_dataset(model, loader, cfg.held_out, name_to_cat)
    held = name_to_cat[cfg.held_out[0]]
    assert key(alone) == key([d for d in fwd if d['category_id'] == held])
    with pytest.raises(KeyError, match='not categories'):
        detect_dataset(model, loader, ('purple hexagon',), name_to_cat)


def test_box_recall_counts_any_box_of_the_image(shapes):
    from flexitransfer.evaluation.open_vocab import box_recall
    ann = osp.join(shapes, 'annotations', 'instances_val2017.json')
    d = json.load(open(ann))
    gt = _coco(ann)
    target = d['categories'][-1]['id']
    mine = [a for a in d['annotations'] if a['category_id'] == target]
    assert len(mine) >= 2
    x, y, w, h = mine[0]['bbox']
    dets = [dict(image_id=mine[0]['image_id'], category_id=1, score=0.1, bbox=[x + w / 10, y, w, h]),  # IoU 0.82
            dict(image_id=mine[1]['image_id'], category_id=target, score=0.9,
                 bbox=[mine[1]['bbox'][0] + mine[1]['bbox'][2] / 2, mine[1]['bbox'][1], *mine[1]['bbox'][2:]])]  # 1/3
    assert box_recall(gt, dets, [target]) == pytest.approx(1 / len(mine))
    assert box_recall(gt, dets, [target], iou=0.3) == pytest.approx(2 / len(mine))
    assert box_recall(gt, [], [target]) == 0.0


def test_ensure_toy_generates_once(tmp_path):
    from flexitransfer.datasets.toy import TOY_DATASETS, ensure_toy
    root = ensure_toy('lvis', base=str(tmp_path))
    assert root == osp.join(str(tmp_path), TOY_DATASETS['lvis'].root)
    ann = osp.join(root, 'annotations', 'lvis_v1_val.json')
    assert len(json.load(open(ann))['images']) == TOY_DATASETS['lvis'].num_val
    stamp = osp.getmtime(ann)
    assert ensure_toy('lvis', base=str(tmp_path)) == root and osp.getmtime(ann) == stamp  # not regenerated


def test_run_openvocab_takes_typed_arguments_and_raises(tmp_path):
    """Library code raises (the tool prints): an unknown name before any work, a failed training step
    with its command, exit status and the end of its log."""
    from flexitransfer.experiments.openvocab import StepFailed, run_openvocab, sh
    with pytest.raises(ValueError, match=r"unknown experiment\(s\) \['shapes'\]: choose from \['composite', 'colour'"):
        run_openvocab(experiments=['shapes'], out=str(tmp_path / 'never'))
    with pytest.raises(ValueError, match=r"unknown run\(s\) \['lit_none'\]"):
        run_openvocab(runs=['lit', 'lit_none'], out=str(tmp_path / 'never'))
    log = str(tmp_path / 'step.log')
    with pytest.raises(StepFailed, match=r'failed \(exit 3\); end of .*step\.log:\nboom'):
        sh(['-c', 'import sys; print("boom"); sys.exit(3)'], log)
    assert not list(tmp_path.glob('never*'))
