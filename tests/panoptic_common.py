"""Shared by the panoptic test files: config paths, the tiny config on generated data, the mmdet
scope, the dataset -> prediction -> CocoPanopticMetric path."""
import copy
import os.path as osp

import numpy as np
import torch
from conftest import ROOT, pan_opts
from mmengine.config import Config

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
    from mmdet.registry import MODELS

    import flexitransfer.models.panoptic  # noqa: F401  (FlexiMask2Former, mmdet registry)
    _scope()
    return MODELS.build(cfg.model)


def read_ids(png_path):
    from PIL import Image
    rgb = np.asarray(Image.open(png_path).convert('RGB')).astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 ** 2 * rgb[..., 2]


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

