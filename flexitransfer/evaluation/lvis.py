"""LVIS box AP (AP, AP50, AP75, APs/m/l, APr/APc/APf) through faster-coco-eval's LVIS mode.

The official ``lvis`` 0.5.3 API uses ``np.float`` and fails on numpy 2; faster-coco-eval
(maintained) implements the same federated protocol: per image only its positive and
``neg_category_ids`` categories are evaluated, unmatched detections of a
``not_exhaustive_category_ids`` category are ignored, at most ``max_dets`` (300) detections per
image (the highest scores, as ``LVISResults`` keeps), and APr/APc/APf average the categories
by their ``frequency``. A test checks it against the official API on the same predictions.
"""
from __future__ import annotations

import contextlib
import io
from typing import Dict, List, Optional, Sequence

import numpy as np
from mmdet.registry import METRICS
from mmengine.evaluator import BaseMetric

KEYS = ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl', 'APr', 'APc', 'APf')
_FCE = {'AP': 'AP_all', 'AP50': 'AP_50', 'AP75': 'AP_75', 'APs': 'AP_small', 'APm': 'AP_medium', 'APl': 'AP_large',
        'APr': 'APr', 'APc': 'APc', 'APf': 'APf'}


def top_dets_per_image(dets: Sequence[dict], max_dets: int) -> List[dict]:
    """The ``max_dets`` highest-scoring detections of every image (LVISResults' rule)."""
    by_img: Dict[int, list] = {}
    for d in dets:
        by_img.setdefault(d['image_id'], []).append(d)
    out = []
    for ds in by_img.values():
        out += sorted(ds, key=lambda d: -d['score'])[:max_dets]
    return out


def lvis_box_ap(ann_file: str, dets: Sequence[dict], max_dets: int = 300) -> Dict[str, float]:
    """LVIS box AP of COCO-format detections (``image_id, category_id, bbox`` xywh, ``score``)."""
    from faster_coco_eval import COCO, COCOeval_faster
    dets = [dict(d) for d in top_dets_per_image(dets, max_dets)]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(ann_file)
        if not dets:
            return {k: 0.0 for k in KEYS}
        dt = gt.loadRes(dets)
        ev = COCOeval_faster(gt, dt, iouType='bbox', lvis_style=True, print_function=lambda *a: None)
        ev.params.maxDets = [max_dets]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = ev.stats_as_dict
    return {k: float(stats[_FCE[k]]) for k in KEYS}


@METRICS.register_module()
class FastLVISMetric(BaseMetric):
    """LVIS box AP for mmdet detectors (labels index the dataset's classes; the category ids
    come from the dataset's ``cat_ids`` meta, else from the annotation file by class name)."""
    default_prefix = 'lvis'

    def __init__(self, ann_file: str, max_dets: int = 300, collect_device: str = 'cpu',
                 prefix: Optional[str] = None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.ann_file = ann_file
        self.max_dets = max_dets

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        for s in data_samples:
            p = s['pred_instances']
            b = p['bboxes'].detach().cpu().numpy().astype(np.float64)
            self.results.append(dict(img_id=s['img_id'], bboxes=np.c_[b[:, :2], b[:, 2:] - b[:, :2]],
                                     scores=p['scores'].detach().cpu().numpy(),
                                     labels=p['labels'].detach().cpu().numpy()))

    def _cat_ids(self) -> List[int]:
        meta = self.dataset_meta or {}
        if meta.get('cat_ids'):
            return list(meta['cat_ids'])
        import json
        with open(self.ann_file) as f:
            by_name = {c['name']: c['id'] for c in json.load(f)['categories']}
        return [by_name[n] for n in meta['classes']]

    def compute_metrics(self, results: list) -> Dict[str, float]:
        cat_ids = self._cat_ids()
        dets = [dict(image_id=int(r['img_id']), category_id=int(cat_ids[int(lb)]), bbox=[float(v) for v in bb],
                     score=float(sc))
                for r in results for bb, sc, lb in zip(r['bboxes'], r['scores'], r['labels'])]
        return lvis_box_ap(self.ann_file, dets, self.max_dets)
