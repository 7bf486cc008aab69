"""OWL-ViT / DETR set-prediction loss over per-token predictions and per-image text queries.

Per image: mmdet's ``HungarianAssigner`` (focal class cost, L1 box cost on normalised cxcywh,
GIoU cost in pixels of the padded image) matches each ground-truth box to one token. Then

- sigmoid focal loss over all tokens x the image's real queries (padded queries and classes
  outside the image's query set are not penalised: they are not columns), with a target matrix
  that is 1 at (matched token, its box's query) and 0 elsewhere;
- L1 on normalised cxcywh and 1 - GIoU on the matched pairs;

each summed over the image and divided by its number of positives (at least 1), then averaged
over the batch. Boxes are relative to the padded batch image (padding is bottom-right).
Each ground-truth box is matched on its own: two annotations with the same box and different
labels take two tokens (scenic merges them into one multi-hot row; not done here).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmdet.models.losses.focal_loss import py_sigmoid_focal_loss
from mmdet.registry import MODELS, TASK_UTILS
from mmdet.structures.bbox import bbox_cxcywh_to_xyxy, bbox_overlaps, bbox_xyxy_to_cxcywh
from mmengine.model import BaseModule
from mmengine.structures import InstanceData

DEFAULT_ASSIGNER = dict(type='HungarianAssigner', match_costs=[
    dict(type='FocalLossCost', weight=1.0), dict(type='BBoxL1Cost', weight=5.0, box_format='xywh'),
    dict(type='IoUCost', iou_mode='giou', weight=2.0)])


@MODELS.register_module()
class OWLSetLoss(BaseModule):
    def __init__(self, assigner: Optional[dict] = None, loss_cls_weight: float = 1.0, loss_bbox_weight: float = 5.0,
                 loss_iou_weight: float = 2.0, alpha: float = 0.25, gamma: float = 2.0,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        self.assigner = TASK_UTILS.build(assigner or DEFAULT_ASSIGNER)
        self.weights = dict(loss_cls=loss_cls_weight, loss_bbox=loss_bbox_weight, loss_iou=loss_iou_weight)
        self.alpha, self.gamma = alpha, gamma

    def match(self, logits: torch.Tensor, boxes: torch.Tensor, gt_boxes: torch.Tensor, gt_labels: torch.Tensor,
              img_hw: Tuple[int, int]) -> Tuple[torch.Tensor, torch.Tensor]:
        """One image: (token indices, gt indices) of the Hungarian matching.

        logits (N, Q) of the real queries, boxes (N, 4) normalised cxcywh, gt_boxes (K, 4) xyxy pixels.
        """
        h, w = img_hw
        factor = boxes.new_tensor([w, h, w, h])
        pred = InstanceData(scores=logits.detach(), bboxes=bbox_cxcywh_to_xyxy(boxes.detach()) * factor)
        gt = InstanceData(bboxes=gt_boxes, labels=gt_labels)
        res = self.assigner.assign(pred, gt, img_meta=dict(img_shape=(h, w)))
        tok = torch.nonzero(res.gt_inds > 0).flatten()
        return tok, res.gt_inds[tok] - 1

    def forward(self, logits: torch.Tensor, boxes: torch.Tensor, query_mask: torch.Tensor,
                gt_boxes: Sequence[torch.Tensor], gt_labels: Sequence[torch.Tensor],
                img_hw: Tuple[int, int]) -> Dict[str, torch.Tensor]:
        """logits (B, N, Q), boxes (B, N, 4) normalised cxcywh, query_mask (B, Q) (real queries first),
        gt_boxes[i] (K_i, 4) xyxy pixels of the padded image, gt_labels[i] (K_i,) query indices."""
        h, w = img_hw
        factor = boxes.new_tensor([w, h, w, h])
        out: Dict[str, List[torch.Tensor]] = {k: [] for k in self.weights}
        for i in range(logits.shape[0]):
            nq = int(query_mask[i].sum())
            if not bool(query_mask[i, :nq].all()):
                raise ValueError('OWLSetLoss: padded queries must come after the real ones')
            lg, bx, gb, gl = logits[i, :, :nq], boxes[i], gt_boxes[i], gt_labels[i].long()
            if len(gl) and (int(gl.max()) >= nq or int(gl.min()) < 0):
                raise ValueError(f'OWLSetLoss: a ground-truth label is outside the image\'s {nq} queries')
            tok, gidx = self.match(lg, bx, gb, gl, img_hw) if len(gl) else (gl, gl)
            npos = max(len(tok), 1)
            target = torch.zeros_like(lg)
            target[tok, gl[gidx]] = 1.0
            out['loss_cls'].append(py_sigmoid_focal_loss(lg, target, gamma=self.gamma, alpha=self.alpha,
                                                         reduction='sum') / npos)
            if len(tok):
                pb, tb = bx[tok], bbox_xyxy_to_cxcywh(gb[gidx] / factor)
                out['loss_bbox'].append((pb - tb).abs().sum() / npos)
                giou = bbox_overlaps(bbox_cxcywh_to_xyxy(pb) * factor, gb[gidx], mode='giou', is_aligned=True)
                out['loss_iou'].append((1 - giou).sum() / npos)
            else:  # keep the graph connected (no box terms for an image without objects)
                out['loss_bbox'].append(bx.sum() * 0)
                out['loss_iou'].append(bx.sum() * 0)
        return {k: torch.stack(v).mean() * self.weights[k] for k, v in out.items()}
