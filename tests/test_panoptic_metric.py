"""Panoptic quality through the project's dataset -> metric path (mmdet's CocoPanopticDataset and
CocoPanopticMetric, panopticapi-lite on numpy 2) against an independent brute-force PQ; the toy
COCO-panoptic format."""
from panoptic_common import TINY, _cfg, _val_dataset, evaluate_predictions, read_ids

import json
import os.path as osp

import numpy as np
import pytest


# ----------------------------------------------------------------------------- PQ: brute force oracle
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

