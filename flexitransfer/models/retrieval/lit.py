"""LiT: a FlexiViT image tower (locked or not) and an open_clip text tower.

Losses are open_clip's ``ClipLoss`` (softmax contrastive) and ``SigLipLoss``
(sigmoid), gathered across ranks in distributed runs. ``predict`` returns the
normalised image embedding and the embeddings of all the image's captions
(for ``RetrievalRecall``); with ``zero_shot`` set and a ``gt_label`` in the
sample it returns class scores from prompt-template embeddings (for
``ClsAccuracy``).
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.dist import get_rank, get_world_size
from mmengine.model import BaseModel
from mmengine.registry import MODELS
from mmengine.structures import BaseDataElement


@MODELS.register_module()
class LiT(BaseModel):
    """Args:
        image_backbone: FlexiViT config (its ``out_type`` is set from ``pool``).
        text_tower: ``OpenCLIPTextTower`` config (``output_dim`` = ``embed_dim``).
        embed_dim: joint embedding size.
        image_proj: 'linear' (trainable head on the image tower, also when locked) or
            None (identity; backbone width must equal ``embed_dim``).
        lock_image: LiT: freeze the image backbone (no gradients, always eval mode).
        loss: 'clip' or 'siglip'.
        init_logit_scale / init_logit_bias: log temperature (and sigmoid bias).
        zero_shot: ``dict(classnames=[...], templates=['a photo of a {}.', ...])``.
    """

    def __init__(self, image_backbone: dict, text_tower: dict, embed_dim: int, pool: str = 'tok',
                 image_proj: Optional[str] = 'linear', lock_image: bool = True, loss: str = 'clip',
                 init_logit_scale: float = math.log(10.0), init_logit_bias: float = -10.0,
                 zero_shot: Optional[dict] = None, data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if loss not in ('clip', 'siglip'):
            raise ValueError(f"loss must be 'clip' or 'siglip', got {loss!r}")
        if pool not in ('tok', 'gap'):
            raise ValueError(f"LiT pool must be 'tok' (class token) or 'gap' (mean of patch tokens), got {pool!r}")
        self.backbone = MODELS.build(dict(image_backbone, out_type='cls_token' if pool == 'tok' else 'avg',
                                          out_indices=-1))
        d = self.backbone.embed_dims
        if image_proj == 'linear':
            self.image_proj = nn.Linear(d, embed_dim)
        elif image_proj is None:
            if d != embed_dim:
                raise ValueError(f'image_proj=None needs backbone width {d} == embed_dim {embed_dim}')
            self.image_proj = nn.Identity()
        else:
            raise ValueError(f"image_proj must be 'linear' or None, got {image_proj!r}")
        self.text_tower = MODELS.build(text_tower)
        if self.text_tower.output_dim != embed_dim:
            raise ValueError(f'text tower output_dim {self.text_tower.output_dim} != embed_dim {embed_dim}')
        self.logit_scale = nn.Parameter(torch.tensor(float(init_logit_scale)))
        self.logit_bias = nn.Parameter(torch.tensor(float(init_logit_bias))) if loss == 'siglip' else None
        self.loss_type = loss
        self.lock_image = lock_image
        self.zero_shot = zero_shot
        self._zs_weights = None
        self._loss_fn = None
        if lock_image:
            self.backbone.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        self._zs_weights = None  # text tower may change while training
        if self.lock_image:
            self.backbone.eval()
        return self

    # ---------------------------------------------------------------- towers
    def encode_image(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.lock_image:
            with torch.no_grad():
                feats = self.backbone(inputs)[0]
        else:
            feats = self.backbone(inputs)[0]
        return F.normalize(self.image_proj(feats), dim=-1)

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        return F.normalize(self.text_tower(texts), dim=-1)

    def _loss(self):
        if self._loss_fn is None:
            from open_clip.loss import ClipLoss, SigLipLoss
            rank, world = get_rank(), get_world_size()
            self._loss_fn = ClipLoss(gather_with_grad=True, rank=rank, world_size=world) if self.loss_type == 'clip' \
                else SigLipLoss(rank=rank, world_size=world)
        return self._loss_fn

    @torch.no_grad()
    def zero_shot_weights(self) -> torch.Tensor:
        """(num_classes, E) class embeddings: mean of normalised template embeddings, renormalised."""
        if self._zs_weights is None:
            zs = self.zero_shot
            if not zs.get('classnames') or not zs.get('templates'):
                raise ValueError("zero_shot needs classnames and templates, e.g. templates=['a photo of a {}.']")
            ws = [F.normalize(self.encode_text([t.format(c) for t in zs['templates']]).mean(0), dim=-1)
                  for c in zs['classnames']]
            self._zs_weights = torch.stack(ws)
        return self._zs_weights

    # --------------------------------------------------------------- forward
    def forward(self, inputs: torch.Tensor, data_samples: Optional[List[BaseDataElement]] = None,
                mode: str = 'tensor'):
        if mode == 'tensor':
            return self.encode_image(inputs)
        if mode == 'loss':
            if not data_samples or 'caption' not in data_samples[0]:
                raise ValueError('LiT training needs data samples with a caption (CaptionDataset, PackImageInputs)')
            img = self.encode_image(inputs)
            txt = self.encode_text([s.caption for s in data_samples])
            scale = self.logit_scale.clamp(max=math.log(100.0)).exp()
            loss = self._loss()(img, txt, scale, self.logit_bias)
            return {'loss': loss, 'temperature': (1.0 / scale).detach()}
        if mode == 'predict':
            img = self.encode_image(inputs)
            for i, s in enumerate(data_samples):
                s.img_emb = img[i]
                if 'captions' in s:
                    s.txt_embs = self.encode_text(s.captions)
                if self.zero_shot and 'gt_label' in s:
                    s.pred_score = (self.logit_scale.exp() * img[i] @ self.zero_shot_weights().T).softmax(-1)
            return data_samples
        raise ValueError(f'invalid mode {mode!r}')
