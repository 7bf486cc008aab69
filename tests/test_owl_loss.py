"""OWL-ViT set-prediction loss against a small case computed by hand (numpy, brute-force matching)."""
import itertools
import math

import numpy as np
import pytest
import torch
from mmdet.registry import MODELS

import flexitransfer  # noqa: F401


@pytest.fixture(scope='module', autouse=True)
def _mmdet_scope():
    """Build through mmdet's registry whatever default scope an earlier test left behind
    (mmengine keeps the last ``init_default_scope`` globally, e.g. 'mmseg' after a seg test)."""
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmdet'):
        yield


A, G = 0.25, 2.0  # focal alpha, gamma (defaults)


def _sig(x):
    return 1 / (1 + math.exp(-x))


def _giou(a, b):  # xyxy
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    hull = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
    iou = inter / union
    return iou - (hull - union) / hull


def _xyxy(c):
    return [c[0] - c[2] / 2, c[1] - c[3] / 2, c[0] + c[2] / 2, c[1] + c[3] / 2]


def _focal(x, t):
    p = _sig(x)
    ce = -(t * math.log(p) + (1 - t) * math.log(1 - p))
    pt = (1 - p) * t + p * (1 - t)
    return ce * (A * t + (1 - A) * (1 - t)) * pt ** G


def _hand(logits, boxes, nq, gt_xyxy, gt_lab, hw):
    """One image: brute-force matching with the documented costs, then the three losses."""
    h, w = hw
    f = np.array([w, h, w, h], float)
    n = len(boxes)
    pred_pix = [np.array(_xyxy(b)) * f for b in boxes]
    gt_norm_c = [np.array([(g[0] + g[2]) / 2 / w, (g[1] + g[3]) / 2 / h, (g[2] - g[0]) / w, (g[3] - g[1]) / h])
                 for g in gt_xyxy]

    def cost(i, k):
        p = _sig(logits[i][gt_lab[k]])
        cls = -math.log(p + 1e-12) * A * (1 - p) ** G + math.log(1 - p + 1e-12) * (1 - A) * p ** G
        return 1.0 * cls + 5.0 * np.abs(np.array(boxes[i]) - gt_norm_c[k]).sum() - 2.0 * _giou(pred_pix[i], gt_xyxy[k])

    best = min(itertools.permutations(range(n), len(gt_xyxy)),
               key=lambda toks: sum(cost(t, k) for k, t in enumerate(toks))) if gt_xyxy else ()
    npos = max(len(best), 1)
    target = np.zeros((n, nq))
    for k, t in enumerate(best):
        target[t, gt_lab[k]] = 1
    cls = sum(_focal(logits[i][q], target[i, q]) for i in range(n) for q in range(nq)) / npos
    l1 = sum(np.abs(np.array(boxes[t]) - gt_norm_c[k]).sum() for k, t in enumerate(best)) / npos
    giou = sum(1 - _giou(pred_pix[t], gt_xyxy[k]) for k, t in enumerate(best)) / npos
    return cls, l1, giou, best


def test_set_loss_matches_hand_computation():
    rng = np.random.default_rng(0)
    hw = (40, 60)  # padded batch image, non-square: GIoU is computed in pixels
    logits = rng.normal(0, 1.5, size=(2, 4, 3))  # 2 images, 4 tokens, 3 query slots
    boxes = np.stack([[[0.2, 0.3, 0.2, 0.3], [0.7, 0.6, 0.3, 0.4], [0.5, 0.5, 0.6, 0.6], [0.3, 0.7, 0.2, 0.2]],
                      [[0.4, 0.4, 0.3, 0.3], [0.6, 0.5, 0.2, 0.5], [0.1, 0.2, 0.1, 0.2], [0.8, 0.8, 0.3, 0.3]]])
    nq = [2, 3]  # image 0 has a padded third query: never penalised
    gts = [[[36.0, 16.0, 54.0, 34.0], [6.0, 8.0, 20.0, 20.0]], [[30.0, 10.0, 42.0, 30.0]]]
    labs = [[0, 1], [2]]
    mask = torch.tensor([[True, True, False], [True, True, True]])
    lg = torch.tensor(logits, dtype=torch.float64).masked_fill(~mask[:, None], torch.finfo(torch.float64).min)
    crit = MODELS.build(dict(type='OWLSetLoss'))
    got = crit(lg, torch.tensor(boxes), mask, [torch.tensor(g, dtype=torch.float64) for g in gts],
               [torch.tensor(lb) for lb in labs], hw)
    hand = [_hand(logits[b].tolist(), boxes[b].tolist(), nq[b], gts[b], labs[b], hw) for b in range(2)]
    assert hand[0][3] != tuple(range(len(gts[0])))  # the matching is not the trivial order
    for key, j, wgt in (('loss_cls', 0, 1.0), ('loss_bbox', 1, 5.0), ('loss_iou', 2, 2.0)):
        want = wgt * np.mean([h[j] for h in hand])
        assert abs(float(got[key]) - want) < 1e-9, (key, float(got[key]), want)
    # the matcher picks the hand-computed tokens
    tok, gidx = crit.match(lg[0, :, :2], torch.tensor(boxes[0]), torch.tensor(gts[0], dtype=torch.float64),
                           torch.tensor(labs[0]), hw)
    assert dict(zip(gidx.tolist(), tok.tolist())) == dict(enumerate(hand[0][3]))


def test_set_loss_image_without_objects_and_gradients():
    crit = MODELS.build(dict(type='OWLSetLoss'))
    lg = torch.zeros(1, 3, 2, requires_grad=True)
    bx = torch.full((1, 3, 4), 0.5, requires_grad=True)
    out = crit(lg, bx, torch.ones(1, 2, dtype=torch.bool), [torch.zeros(0, 4)], [torch.zeros(0, dtype=torch.long)],
               (10, 10))
    want = 6 * (1 - A) * 0.5 ** G * math.log(2)  # 3 tokens x 2 queries, all negatives at p = 0.5, / max(0, 1)
    out_val = {k: float(v.detach()) for k, v in out.items()}
    assert abs(out_val['loss_cls'] - want) < 1e-6 and out_val['loss_bbox'] == 0 == out_val['loss_iou']
    sum(out.values()).backward()
    assert lg.grad is not None and bx.grad is not None
