"""Image classifier on FlexiViT: token or GAP pooling and a linear head (mmengine model).

Data samples are mmengine ``BaseDataElement``s with a ``gt_label`` (so the model
works without mmpretrain); predictions add ``pred_score`` and ``pred_label``
(read by ``flexitransfer.evaluation.ClsAccuracy``).
"""
from __future__ import annotations

from typing import List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModel
from mmengine.registry import MODELS
from mmengine.structures import BaseDataElement


@MODELS.register_module()
class FlexiImageClassifier(BaseModel):
    """Args:
        backbone: FlexiViT config; its ``out_type`` is set from ``pool``.
        num_classes: classes of the linear head.
        pool: 'tok' (class token) or 'gap' (mean of patch tokens).
        head_dropout: dropout before the head.
        head_zero_init: zero-init the head (big_vision's fine-tuning default).
        label_smoothing: for the cross-entropy loss.
        data_preprocessor: e.g. ``dict(type='ImgDataPreprocessor', mean=..., std=..., bgr_to_rgb=True)``.
    """

    def __init__(self, backbone: dict, num_classes: int, pool: str = 'tok', head_dropout: float = 0.,
                 head_zero_init: bool = True, label_smoothing: float = 0., data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if pool not in ('tok', 'gap'):
            raise ValueError(f"pool must be 'tok' or 'gap', got {pool!r}")
        backbone = dict(backbone, out_type='cls_token' if pool == 'tok' else 'avg', out_indices=-1)
        self.backbone = MODELS.build(backbone)
        self.num_classes = num_classes
        self.dropout = nn.Dropout(head_dropout)
        self.head = nn.Linear(self.backbone.embed_dims, num_classes)
        self.head_zero_init = head_zero_init
        self.label_smoothing = label_smoothing

    def init_weights(self):
        super().init_weights()
        if self.head_zero_init:
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def extract_feat(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.backbone(inputs)[0]

    def forward(self, inputs: torch.Tensor, data_samples: Optional[List[dict]] = None, mode: str = 'tensor'):
        logits = self.head(self.dropout(self.extract_feat(inputs)))
        if mode == 'tensor':
            return logits
        if mode == 'loss':
            return {'loss': F.cross_entropy(logits, gather_labels(data_samples, logits.device),
                                            label_smoothing=self.label_smoothing)}
        if mode == 'predict':
            return to_predictions(logits, data_samples)
        raise ValueError(f'invalid mode {mode!r}')


def gather_labels(data_samples, device) -> torch.Tensor:
    if not data_samples or 'gt_label' not in data_samples[0]:
        raise ValueError('training needs data samples with a gt_label (use PackClsInputs in the pipeline)')
    return torch.stack([torch.as_tensor(s.gt_label).reshape(()) for s in data_samples]).long().to(device)


def to_predictions(logits: torch.Tensor, data_samples=None) -> List[BaseDataElement]:
    scores = logits.detach().float().softmax(-1)
    out = []
    for i in range(logits.shape[0]):
        d = data_samples[i] if data_samples is not None else BaseDataElement()
        d.pred_score = scores[i]
        d.pred_label = scores[i].argmax()
        out.append(d)
    return out
