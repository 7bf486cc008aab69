"""Open-vocabulary detection (OWL-ViT style on mmdet): data formats, federated queries, LVIS AP
against the official API, the tiny detector trained once (COCO box AP at three patch sizes via
tools/test.py), the real LVIS config for one iteration, the demo tool."""
import contextlib
import io
import json
import os.path as osp

import numpy as np
import pytest
import torch
from conftest import ROOT, run_tool
from conftest import det_opts as _opts
from mmdet.registry import DATASETS, MODELS, TRANSFORMS

import flexitransfer  # noqa: F401
from flexitransfer.datasets.toy.coco_instances import make_lvis_like
from flexitransfer.evaluation import lvis_box_ap

TINY = osp.join(ROOT, 'configs', 'det', 'tiny_owl_det.py')
PATCHES = (12, 16, 24)


@pytest.fixture(autouse=True)
def _mmdet_scope():
    """mmengine's default scope is process-wide, left by whichever runner ran last (an mmseg one in the test
    files before this one): the builds here of mmdet-registered modules run under mmdet's scope."""
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmdet'):
        yield


@pytest.fixture(scope='session')
def lvis_data(tmp_path_factory):
    return make_lvis_like(str(tmp_path_factory.mktemp('toy_lvis')), num_train=24, num_val=24, size=(160, 160))


# ------------------------------------------------------------------------------------------ data
def test_toy_coco_instances_format(det_data):
    from pycocotools.coco import COCO
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(osp.join(det_data, 'annotations', 'instances_val2017.json'))
    assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == ['red', 'green', 'blue', 'yellow']
    assert len(coco.getImgIds()) == 48 and 48 <= len(coco.getAnnIds()) <= 3 * 48
    for img in coco.loadImgs(coco.getImgIds()[:5]):
        assert osp.isfile(osp.join(det_data, 'val2017', img['file_name']))
        for a in coco.loadAnns(coco.getAnnIds(imgIds=img['id'])):
            x, y, w, h = a['bbox']
            assert 0 <= x and x + w <= img['width'] and 0 <= y and y + h <= img['height'] and a['area'] == w * h


def test_lvis_dataset_reads_federated_labels(lvis_data):
    ann = osp.join(lvis_data, 'annotations', 'lvis_v1_train.json')
    raw = json.load(open(ann))
    ds = DATASETS.build(dict(type='LVISFederatedDataset', data_root=lvis_data,
                             ann_file='annotations/lvis_v1_train.json', data_prefix=dict(img=''),
                             return_classes=True, pipeline=[]))
    cats = sorted(raw['categories'], key=lambda c: c['id'])
    assert ds.metainfo['classes'] == tuple(c['name'] for c in cats) and len(ds) == 24
    assert set(ds.metainfo['frequencies']) == {'r', 'c', 'f'}
    label = {c['id']: i for i, c in enumerate(cats)}
    infos = [ds.get_data_info(i) for i in range(len(ds))]  # (data_list is emptied by serialisation)
    assert len(infos) == len(raw['images'])
    for info, img in zip(infos, raw['images']):
        assert osp.isfile(info['img_path']) and info['img_id'] == img['id']
        assert info['neg_category_ids'] == [label[c] for c in img['neg_category_ids']]
        assert info['not_exhaustive_category_ids'] == [label[c] for c in img['not_exhaustive_category_ids']]
        gt = [a for a in raw['annotations'] if a['image_id'] == img['id']]
        assert sorted(i['bbox_label'] for i in info['instances']) == sorted(label[a['category_id']] for a in gt)
        assert not set(info['neg_category_ids']) & {i['bbox_label'] for i in info['instances']}
        assert info['text'] == ds.metainfo['classes']
    assert any(i['not_exhaustive_category_ids'] for i in infos) and any(i['neg_category_ids'] for i in infos)


def test_sample_text_queries_federated_and_all():
    names = tuple(f'class{i}' for i in range(10))
    res = dict(text=names, gt_bboxes_labels=np.array([7, 2, 7]), neg_category_ids=[4, 5])
    np.random.seed(0)
    out = TRANSFORMS.build(dict(type='SampleTextQueries', num_queries=6)).transform(dict(res))
    ids = out['query_ids'].tolist()
    assert ids[:4] == [7, 2, 4, 5] and len(ids) == 6 == len(set(ids)) and len(out['text']) == 6
    assert [out['text'][q] for q in out['gt_bboxes_labels']] == ['class7', 'class2', 'class7']
    np.random.seed(0)
    again = TRANSFORMS.build(dict(type='SampleTextQueries', num_queries=6)).transform(dict(res))
    assert again['query_ids'].tolist() == ids  # seeded: same draw
    few = TRANSFORMS.build(dict(type='SampleTextQueries', num_queries=3)).transform(dict(res))
    assert few['query_ids'].tolist()[:2] == [7, 2] and len(few['query_ids']) == 3  # positives always kept
    full = TRANSFORMS.build(dict(type='SampleTextQueries')).transform(dict(res))
    assert full['text'] == names and full['gt_bboxes_labels'].tolist() == [7, 2, 7]
    with pytest.raises(KeyError, match='return_classes=True'):
        TRANSFORMS.build(dict(type='SampleTextQueries')).transform(dict(gt_bboxes_labels=np.array([1])))


def test_lvis_ap_matches_official_lvis_api(lvis_data, monkeypatch):
    ann = osp.join(lvis_data, 'annotations', 'lvis_v1_val.json')
    d = json.load(open(ann))
    rng = np.random.default_rng(0)
    cats = [c['id'] for c in d['categories']]
    dets = []
    for a in d['annotations']:  # jittered true boxes, sometimes with the wrong class
        for _ in range(2):
            j = rng.normal(0, 4, 4)
            x, y, w, h = a['bbox']
            c = a['category_id'] if rng.random() < 0.8 else int(rng.choice(cats))
            dets.append(dict(image_id=a['image_id'], category_id=c, score=float(rng.random()),
                             bbox=[x + j[0], y + j[1], max(2.0, w + j[2]), max(2.0, h + j[3])]))
    for im in d['images']:  # random boxes of random classes (neg / unlisted / not-exhaustive ones)
        for _ in range(6):
            x, y = rng.uniform(0, 100, 2)
            dets.append(dict(image_id=im['id'], category_id=int(rng.choice(cats)), score=float(rng.random()),
                             bbox=[x, y, *rng.uniform(8, 60, 2).tolist()]))
    im0 = d['images'][0]['id']  # > 300 detections on one image: both keep its top 300
    dets += [dict(image_id=im0, category_id=cats[0], score=float(s), bbox=[1.0, 1.0, 10.0, 10.0])
             for s in rng.random(320)]
    ours = lvis_box_ap(ann, dets)
    monkeypatch.setattr(np, 'float', float, raising=False)  # lvis 0.5.3 still uses np.float (numpy 2)
    from lvis import LVIS, LVISEval, LVISResults
    with contextlib.redirect_stdout(io.StringIO()):
        gt = LVIS(ann)
        ev = LVISEval(gt, LVISResults(gt, dets, max_dets=300), 'bbox')
        ev.run()
    ref = ev.get_results()
    assert 0.05 < ref['AP'] < 0.95 and ref['APm'] > 0  # a non-trivial case, medium objects included
    for k in ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl', 'APr', 'APc', 'APf'):
        assert ours[k] == pytest.approx(float(ref[k]), abs=1e-6), k


# --------------------------------------------------------------------- one unit in training and testing
class _PrintingCocoMetric:
    """Stands in for mmdet's CocoMetric: fractions, and pycocotools' summary printed to stdout."""

    @staticmethod
    def build():
        from mmengine.evaluator import BaseMetric

        class Metric(BaseMetric):
            default_prefix = 'coco'

            def process(self, data_batch, data_samples):
                self.results.extend(data_samples)

            def compute_metrics(self, results):
                print(' Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 0.082')
                return {'bbox_mAP': 0.082, 'bbox_mAP_50': 0.31, 'bbox_mAP_s': -1.0}
        return Metric()


def test_validation_while_training_reports_coco_ap_in_percent(tmp_path, capsys):
    """The training-time validation loop gives COCO AP in percent, as tools/test.py's table does (it gave
    0.082 next to test.py's 8.2), and pycocotools' prints go to the log file, not the terminal."""
    from types import SimpleNamespace

    from mmengine.evaluator import Evaluator
    from mmengine.logging import MMLogger

    from flexitransfer.engine import MultiPatchValLoop
    from flexitransfer.engine.console import quiet_console
    from flexitransfer.evaluation.main_metric import percent_evaluator
    log = tmp_path / 'train.log'
    logger = MMLogger.get_instance(f'percent_{tmp_path.name}', log_file=str(log))
    quiet_console(logger)  # as tools/train.py's runner
    runner = SimpleNamespace(logger=logger, visualizer=SimpleNamespace())
    loop = MultiPatchValLoop(runner, torch.utils.data.DataLoader([0]), Evaluator(_PrintingCocoMetric.build()))
    want = {'coco/bbox_mAP': pytest.approx(8.2), 'coco/bbox_mAP_50': pytest.approx(31.0), 'coco/bbox_mAP_s': -1.0}
    loop.evaluator.process([{'x': 1}])
    assert loop.evaluator.evaluate(1) == want
    percent_evaluator(loop.evaluator, logger)  # wrapping twice is harmless (apis.build_test_runner does it too)
    loop.evaluator.process([{'x': 1}])
    assert loop.evaluator.evaluate(1) == want
    assert 'Average Precision' not in capsys.readouterr().out
    for h in logger.handlers:
        h.flush()
    assert 'Average Precision  (AP) @[ IoU=0.50:0.95' in log.read_text()


# ------------------------------------------------------------------------- tiny detector (once)
def _trivial_baseline_ap(root):
    """AP of a detector that knows the classes and the mean box size but not where objects are:
    every class at the 16 cells of a 4x4 grid, score = class frequency."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(osp.join(root, 'annotations', 'instances_val2017.json'))
        anns = gt.loadAnns(gt.getAnnIds())
        s = float(np.mean([a['bbox'][2] for a in anns]))
        freq = {c: sum(a['category_id'] == c for a in anns) / len(anns) for c in gt.getCatIds()}
        dets = [dict(image_id=i, category_id=c, score=freq[c], bbox=[cx - s / 2, cy - s / 2, s, s])
                for i in gt.getImgIds() for c in gt.getCatIds() for cx in (12, 36, 60, 84) for cy in (12, 36, 60, 84)]
        ev = COCOeval(gt, gt.loadRes(dets), 'bbox')
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0])


def test_tiny_detector_box_ap_at_three_patch_sizes(trained_det, det_data, tmp_path):
    ckpt, _ = trained_det
    out = tmp_path / 'res.json'
    log = run_tool('tools/test.py', TINY, ckpt, '--patch', *map(str, PATCHES), '--out-json', str(out),
                   '--work-dir', str(tmp_path), '--cfg-options',
                   *_opts(det_data, osp.join(det_data, 'annotations', 'instances_val2017.json')))
    table = json.load(open(out))['table']
    assert [r['patch'] for r in table] == [str(p) for p in PATCHES]
    assert [r['tokens'] for r in table] == [(96 // p) ** 2 for p in PATCHES]
    base = 100 * _trivial_baseline_ap(det_data)  # tools/test.py reports COCO AP in percent, as every metric
    print('\n'.join(f"p={r['patch']} tokens={r['tokens']} AP={r['coco/bbox_mAP']:.1f} "
                    f"AP50={r['coco/bbox_mAP_50']:.1f}" for r in table), f'\ntrivial baseline AP={base:.2f}')
    assert base < 1  # the trivial baseline scores about 0.1 AP on this data
    for r in table:  # measured: 12.5 / 13.1 / 21.7 AP at p = 12 / 16 / 24 (seed 0, cell-centred box prior)
        assert r['coco/bbox_mAP'] > max(6, 10 * base) and r['coco/bbox_mAP_50'] > 30, (r, base, log[-2000:])


def test_training_validation_table_in_percent(trained_det):
    """tools/train.py's validation table (p = 12 at the last iteration) in the work dir's log: box AP in
    percent (measured ~12 AP, i.e. 0.12 as a fraction before) and pycocotools' summary in the log file."""
    _, work = trained_det
    import glob
    text = open(sorted(glob.glob(osp.join(str(work), '*', '*.log')))[-1]).read()
    head, row = text[text.rindex('| patch | tokens |'):].splitlines()[0::2][:2]
    cols = [c.strip() for c in head.strip('|').split('|')]
    row = dict(zip(cols, (c.strip() for c in row.strip('|').split('|'))))
    assert row['patch'] == '12' and float(row['coco/bbox_mAP_50']) > 10, (head, row)
    assert ' Average Precision  (AP) @[ IoU=0.50:0.95' in text


def test_tensor_mode_without_samples_and_demo(trained_det, det_data, tmp_path):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmengine.runner import load_checkpoint
    ckpt, _ = trained_det
    cfg = Config.fromfile(TINY)
    init_default_scope('mmdet')
    model = MODELS.build(cfg.model).eval()
    load_checkpoint(model, ckpt, map_location='cpu')
    with torch.no_grad():
        logits, boxes = model(torch.randn(2, 3, 96, 96), mode='tensor')  # resize_deploy's call: default queries
    assert logits.shape == (2, 64, 4) and boxes.shape == (2, 64, 4)
    img = osp.join(det_data, 'val2017', '000001000000.jpg')
    out = tmp_path / 'demo.png'
    log = run_tool('tools/detect.py', img, '--queries', 'red', 'green', 'blue', 'yellow', '--patch', '16',
                   '--checkpoint', ckpt, '--score-thr', '0.3', '--out', str(out))
    from PIL import Image
    assert Image.open(out).size == (480, 480) and 'patch 16, 6x6 tokens' in log  # 96 px drawn 5x (readable)
    gt = [a for a in json.load(open(osp.join(det_data, 'annotations', 'instances_val2017.json')))['annotations']
          if a['image_id'] == 1_000_000]
    assert f'wrote {out}: ' in log and int(log.split(f'wrote {out}: ')[1].split()[0]) >= len(gt)


# ------------------------------------------------------------------------ real LVIS config, 1 it
def test_real_lvis_config_takes_one_iteration(lvis_data, tmp_path):
    cfg = osp.join(ROOT, 'configs', 'det', 'lvis_owl_flexi_b.py')
    run_tool('tools/train.py', cfg, '--work-dir', str(tmp_path), '--cfg-options',
             *_opts(lvis_data, osp.join(lvis_data, 'annotations', 'lvis_v1_val.json')),
             'model.backbone.pretrained=None',
             'model.text_tower.checkpoint=None', 'train_cfg.max_iters=1', 'train_cfg.val_begin=2',
             'train_dataloader.batch_size=1', 'default_hooks.checkpoint.save_last=False',
             'optim_wrapper.type=OptimWrapper', 'custom_hooks.0.patch_sizes=[16]',
             # CPU-sized input: 240 px (the real 720 px costs minutes on a CPU); the model is the real ViT-B
             'train_dataloader.dataset.pipeline.3.scale=(240,240)', 'model.data_preprocessor.pad_size_divisor=240',
             'default_hooks.checkpoint.interval=100', 'default_hooks.logger.interval=1')
    log = open(next(iter(sorted((tmp_path).glob('*/*.log'))))).read()
    assert 'Iter(train) [1/1]' in log and 'loss_cls' in log
