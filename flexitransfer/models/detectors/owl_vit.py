"""OWL-ViT style open-vocabulary detector on mmdet, at any patch size.

Image side: FlexiViT, all tokens after the final LayerNorm (``out_type='raw'``); the class
token is merged into the patch tokens as OWL-ViT does (``layer_norm(patch_tokens * cls)``), and
every patch token predicts one box and one logit per text query, so the number of predictions
changes with the patch size. Text side: ``OpenCLIPTextTower`` (EOT feature + projection),
queries carried by the data samples' ``text`` (mmdet's grounding convention), prompt-ensembled
at evaluation. Parameter names follow transformers' ``OwlViTForObjectDetection`` (``layer_norm``,
``box_head.dense{0,1,2}``, ``class_head.{dense0,logit_shift,logit_scale}``) and LiT's
(``backbone``, ``text_tower``), so a LiT checkpoint initialises both towers via ``load_from``.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmdet.models.detectors.base import BaseDetector
from mmdet.registry import MODELS
from mmdet.structures.bbox import bbox_cxcywh_to_xyxy
from mmengine.structures import InstanceData

from .text_queries import DEFAULT_TEMPLATES, TextQueryEncoder, batch_queries, sample_queries


@MODELS.register_module()
class OWLViTDetector(BaseDetector):
    """Args:
        backbone: FlexiViT config (forced to ``out_type='raw'``, last layer; needs a class token).
        text_tower: ``OpenCLIPTextTower`` config; its ``output_dim`` is the query embedding size.
        box_act: 'gelu' (transformers) or 'gelu_tanh' (scenic) in the box MLP.
        box_prior_centre: where a token's box prior is centred: 'corner' (OWL-ViT / transformers: the
            cell's bottom-right corner; released checkpoints) or 'cell' (the cell's centre; better
            from scratch, see ``flexitransfer.models.heads.box_prior``).
        loss: ``OWLSetLoss`` config.
        templates: prompt templates ('{}' = the query); averaged at evaluation.
        default_queries: queries used when the data samples carry none (tensor mode, deploy).
        merge_norm_eps: eps of the LayerNorm after merging the class token.
        test_cfg: ``dict(max_per_img=100, score_thr=0.0)``; detections are the top scores over
            all (token, query) pairs.
    """

    def __init__(self, backbone: dict, text_tower: dict, box_act: str = 'gelu', box_prior_centre: str = 'corner',
                 loss: Optional[dict] = None,
                 templates: Sequence[str] = DEFAULT_TEMPLATES, default_queries: Optional[Sequence[str]] = None,
                 merge_norm_eps: float = 1e-5, train_cfg: Optional[dict] = None, test_cfg: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None, init_cfg: Optional[dict] = None):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.backbone = MODELS.build(dict(backbone, out_type='raw', out_indices=-1))
        if not self.backbone.with_cls_token:
            raise ValueError('OWLViTDetector: the backbone needs a class token (with_cls_token=True): OWL-ViT '
                             'merges it into the patch tokens')
        d = self.backbone.embed_dims
        self.text_tower = MODELS.build(text_tower)
        self.layer_norm = nn.LayerNorm(d, eps=merge_norm_eps)
        self.box_head = MODELS.build(dict(type='OWLBoxHead', in_channels=d, act=box_act,
                                          prior_centre=box_prior_centre))
        self.class_head = MODELS.build(dict(type='OWLClassHead', in_channels=d, embed_dim=self.text_tower.output_dim))
        self.loss_module = MODELS.build(loss or dict(type='OWLSetLoss'))
        self.queries = TextQueryEncoder(templates)
        self.default_queries = tuple(default_queries) if default_queries else None
        self.train_cfg = train_cfg or {}
        self.test_cfg = dict(dict(max_per_img=100, score_thr=0.0), **(test_cfg or {}))

    def train(self, mode: bool = True):
        self.queries.clear()  # the text tower may change while training
        return super().train(mode)

    # ---------------------------------------------------------------- parts
    def extract_feat(self, inputs: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """Merged patch tokens (B, gh*gw, D) and the token grid (gh, gw)."""
        tokens = self.backbone(inputs)[0]
        grid = self.backbone.grid_size(inputs.shape[-2:])
        return self.layer_norm(tokens[:, 1:] * tokens[:, :1]), grid

    def encode_queries(self, per_image: List[Tuple[str, ...]]) -> Tuple[torch.Tensor, torch.Tensor]:
        return batch_queries(per_image, lambda names: self.queries(self.text_tower, names, self.training))

    def head(self, feats: torch.Tensor, grid, query_emb: torch.Tensor, query_mask: torch.Tensor):
        """logits (B, N, Q) and boxes (B, N, 4) normalised cxcywh of the padded image."""
        return self.class_head(feats, query_emb, query_mask), self.box_head(feats, grid)

    def _run(self, inputs, data_samples):
        feats, grid = self.extract_feat(inputs)
        names = sample_queries(data_samples, self.default_queries, inputs.shape[0])
        emb, mask = self.encode_queries(names)
        logits, boxes = self.head(feats, grid, emb, mask)
        return logits, boxes, mask

    # -------------------------------------------------------------- modes
    def _forward(self, inputs: torch.Tensor, data_samples=None):
        """(logits (B, N, Q), boxes (B, N, 4)); works without samples through ``default_queries``."""
        logits, boxes, _ = self._run(inputs, data_samples)
        return logits, boxes

    def loss(self, inputs: torch.Tensor, data_samples) -> Dict[str, torch.Tensor]:
        logits, boxes, mask = self._run(inputs, data_samples)
        gts = [s.gt_instances for s in data_samples]
        return self.loss_module(logits, boxes, mask, [g.bboxes for g in gts], [g.labels for g in gts],
                                tuple(inputs.shape[-2:]))

    def predict(self, inputs: torch.Tensor, data_samples, rescale: bool = True):
        logits, boxes, mask = self._run(inputs, data_samples)
        h, w = inputs.shape[-2:]
        scale = boxes.new_tensor([w, h, w, h])
        k_max, thr = int(self.test_cfg['max_per_img']), float(self.test_cfg['score_thr'])
        for i, s in enumerate(data_samples):
            nq = int(mask[i].sum())
            scores = logits[i, :, :nq].sigmoid().flatten()
            top, idx = scores.topk(min(k_max, scores.numel()))
            keep = top > thr
            top, idx = top[keep], idx[keep]
            tok, q = idx // nq, idx % nq
            bb = bbox_cxcywh_to_xyxy(boxes[i, tok]) * scale
            ih, iw = s.metainfo.get('img_shape', (h, w))
            bb[:, 0::2] = bb[:, 0::2].clamp(0, iw)
            bb[:, 1::2] = bb[:, 1::2].clamp(0, ih)
            if rescale and 'scale_factor' in s.metainfo:
                bb = bb / bb.new_tensor(s.metainfo['scale_factor']).repeat(2)
            qids = s.metainfo.get('query_ids')
            labels = torch.as_tensor(qids, device=q.device)[q] if qids is not None else q
            s.pred_instances = InstanceData(bboxes=bb, scores=top, labels=labels.long())
        return data_samples
