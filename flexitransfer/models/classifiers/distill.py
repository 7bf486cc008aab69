"""FlexiDistill: a frozen fixed-patch teacher, a FlexiViT student with random patch sizes.

The student is initialised from the teacher (its kernel PI-resized into the
student's store, the grid resized, the head copied) and trained on
KL(teacher || student) of the class distributions computed on the *same*
preprocessed batch. The teacher never gets gradients and stays in eval mode;
its FlexiViT is locked so patch-size hooks and loops do not touch it.
"""
from __future__ import annotations

from typing import List, Optional

import torch
import torch.nn.functional as F
from mmengine.model import BaseModel
from mmengine.registry import MODELS
from mmengine.runner import load_checkpoint

from ..backbones.flexivit import FlexiViT
from .image_classifier import to_predictions


def kl_distill_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0):
    """KL(softmax(t/T) || softmax(s/T)) * T^2, averaged over the batch."""
    t = temperature
    return F.kl_div(F.log_softmax(student_logits / t, -1), F.log_softmax(teacher_logits / t, -1),
                    reduction='batchmean', log_target=True) * t * t


@MODELS.register_module()
class FlexiDistiller(BaseModel):
    """Args:
        student: a ``FlexiImageClassifier`` config.
        teacher: a model config whose ``forward(x, mode='tensor')`` returns logits.
        teacher_checkpoint: weights for the teacher (mmengine/flexitransfer checkpoint).
        init_student_from_teacher: copy the teacher's backbone (resized into the
            student's store) and head into the student at ``init_weights``.
        temperature: distillation temperature.
    """

    def __init__(self, student: dict, teacher: dict, teacher_checkpoint: Optional[str] = None,
                 init_student_from_teacher: bool = True, temperature: float = 1.0,
                 data_preprocessor: Optional[dict] = None, init_cfg: Optional[dict] = None):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.student = MODELS.build(student)
        self.teacher = MODELS.build(teacher)
        self.teacher_checkpoint = teacher_checkpoint
        self.init_student_from_teacher = init_student_from_teacher
        self.temperature = temperature
        for m in self.teacher.modules():
            if isinstance(m, FlexiViT):
                m.lock_patch_size = True
        self.teacher.requires_grad_(False)
        self.teacher.eval()

    def init_weights(self):
        self.student.init_weights()
        if self.teacher_checkpoint:
            load_checkpoint(self.teacher, self.teacher_checkpoint, map_location='cpu', strict=True, logger='silent')
        else:
            self.teacher.init_weights()
        if self.init_student_from_teacher:
            self.copy_teacher_into_student()

    @torch.no_grad()
    def copy_teacher_into_student(self):
        from ...converters import load_state_into
        load_state_into(self.student.backbone, self.teacher.backbone.state_dict())
        if not hasattr(self.teacher, 'head'):
            return
        t, st = tuple(self.teacher.head.weight.shape), tuple(self.student.head.weight.shape)
        if t != st:
            raise ValueError(f'FlexiDistiller(init_student_from_teacher=True): the teacher head {t} cannot initialise '
                             f'the student head {st} (classes x dims differ); give both the same num_classes and '
                             f'width, or set init_student_from_teacher=False')
        self.student.head.load_state_dict(self.teacher.head.state_dict())

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # the teacher is a fixed function: no dropout, no BN updates
        return self

    def forward(self, inputs: torch.Tensor, data_samples: Optional[List[dict]] = None, mode: str = 'tensor'):
        if mode == 'tensor':
            return self.student(inputs, mode='tensor')
        if mode == 'predict':
            return to_predictions(self.student(inputs, mode='tensor'), data_samples)
        if mode == 'loss':
            with torch.no_grad():
                t_logits = self.teacher(inputs, mode='tensor')
            s_logits = self.student(inputs, mode='tensor')
            return {'loss_kl': kl_distill_loss(s_logits, t_logits.detach(), self.temperature)}
        raise ValueError(f'invalid mode {mode!r}')
