"""Held-out-class box AP: how well a detector finds a class it never saw as a box, from its name.

The protocol of open-vocabulary detection (OWL-ViT's LVIS-rare / COCO-novel splits), small:
a class is held out of detection training (its boxes removed, its images kept, its name never a
training query) and evaluated on the validation set from its text query. Two query sets:

* ``'all'``: every class is queried together (the standard protocol: the held-out class must
  win against the seen names on its own objects);
* ``'alone'``: only the held-out name is queried (does its text embedding rank its objects first).

and one chance level: the same detections with their scores randomly permuted (what the boxes
are worth without the query). AP is COCO box AP (pycocotools, 100 detections per image) over
the held-out categories only.
"""
from __future__ import annotations

import contextlib
import io
from typing import Dict, List, Sequence

import numpy as np
import torch


def detect_dataset(model, dataloader, queries: Sequence[str], name_to_cat: Dict[str, int]) -> List[dict]:
    """COCO-format detections (``image_id, category_id, bbox`` xywh, ``score``) of ``model`` on
    every image of ``dataloader``, queried with ``queries`` (replacing the dataset's); a query's
    ``category_id`` is ``name_to_cat[query]``."""
    missing = [q for q in queries if q not in name_to_cat]
    if missing:
        raise KeyError(f'queries {missing} are not categories of the annotation file (have {sorted(name_to_cat)})')
    cat = [name_to_cat[q] for q in queries]
    dets: List[dict] = []
    model.eval()
    with torch.no_grad():
        for data in dataloader:
            for s in data['data_samples']:
                s.set_metainfo(dict(text=tuple(queries), query_ids=list(range(len(queries)))))
            for s in model.test_step(data):
                p = s.pred_instances
                xyxy = p.bboxes.cpu().numpy().astype(np.float64)
                for (x0, y0, x1, y1), sc, lab in zip(xyxy, p.scores.cpu().tolist(), p.labels.cpu().tolist()):
                    dets.append(dict(image_id=int(s.img_id), category_id=cat[int(lab)],
                                     bbox=[float(x0), float(y0), float(x1 - x0), float(y1 - y0)], score=float(sc)))
    return dets


def shuffle_scores(dets: Sequence[dict], seed: int = 0) -> List[dict]:
    """The same boxes and categories with the scores randomly permuted (the chance level of a ranking)."""
    perm = np.random.default_rng(seed).permutation(len(dets))
    return [dict(d, score=dets[j]['score']) for d, j in zip(dets, perm)]


def box_ap(coco_gt, dets: Sequence[dict], cat_ids: Sequence[int]) -> Dict[str, float]:
    """COCO box AP / AP50 / AP75 (pycocotools, 100 detections per image) over ``cat_ids`` only;
    ``coco_gt`` is a ``pycocotools.coco.COCO``. No detection at all gives 0 (pycocotools refuses
    an empty result list)."""
    from pycocotools.cocoeval import COCOeval
    if not coco_gt.getAnnIds(catIds=list(cat_ids)):
        raise ValueError(f'box_ap: the ground truth has no box of categories {list(cat_ids)}: nothing to evaluate')
    dets = [d for d in dets if d['category_id'] in set(cat_ids)]
    if not dets:
        return dict(AP=0.0, AP50=0.0, AP75=0.0)
    with contextlib.redirect_stdout(io.StringIO()):
        dt = coco_gt.loadRes([dict(d) for d in dets])
        ev = COCOeval(coco_gt, dt, 'bbox')
        ev.params.catIds = list(cat_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return dict(AP=float(ev.stats[0]), AP50=float(ev.stats[1]), AP75=float(ev.stats[2]))


def box_recall(coco_gt, dets: Sequence[dict], cat_ids: Sequence[int], iou: float = 0.5) -> float:
    """Fraction of the ground-truth boxes of ``cat_ids`` that some detection of the same image
    overlaps by ``iou`` or more, whatever its category and score: whether the boxes exist at all,
    apart from whether the query ranks them."""
    from pycocotools import mask as mask_utils
    anns = coco_gt.loadAnns(coco_gt.getAnnIds(catIds=list(cat_ids), iscrowd=False))
    if not anns:
        raise ValueError(f'box_recall: the ground truth has no box of categories {list(cat_ids)}')
    by_img: Dict[int, list] = {}
    for d in dets:
        by_img.setdefault(d['image_id'], []).append(d['bbox'])
    hit = 0
    for a in anns:
        boxes = by_img.get(a['image_id'])
        if boxes:
            hit += bool((mask_utils.iou(np.asarray(boxes, float), np.asarray([a['bbox']], float), [0]) >= iou).any())
    return hit / len(anns)
