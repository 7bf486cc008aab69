"""OWL-ViT's per-token heads (names follow transformers' ``box_head`` / ``class_head``).

- ``OWLBoxHead``: MLP D->D->D->4 with GELU; ``box = sigmoid(mlp(token) + box_bias(grid))``,
  normalised (cx, cy, w, h) of the padded image. The prior comes from ``box_prior.box_bias``
  (one place, cached per grid), so the head runs at any patch size / image size; ``prior_centre``
  'corner' (OWL-ViT / transformers, default) or 'cell' (the cell's centre, see ``box_prior``).
- ``OWLClassHead``: per-token projection to the text embedding size; image and query
  embeddings L2-normalised (``x / (|x| + 1e-6)`` as in transformers), cosine similarity plus
  a learned per-token shift (Linear D->1), times a learned per-token scale
  (``elu(Linear D->1) + 1``); padded queries get the most negative finite logit.

GELU: transformers uses the exact erf GELU, scenic (the original) ``nn.gelu`` with the tanh
approximation. ``act='gelu'`` (default) matches transformers and is what the oracle test
checks; ``act='gelu_tanh'`` matches scenic.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmdet.registry import MODELS
from mmengine.model import BaseModule

from .box_prior import CENTRES, box_bias

_ACTS = {'gelu': 'none', 'gelu_tanh': 'tanh'}


@MODELS.register_module()
class OWLBoxHead(BaseModule):
    def __init__(self, in_channels: int, act: str = 'gelu', prior_centre: str = 'corner',
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        if act not in _ACTS:
            raise ValueError(f'OWLBoxHead: act must be one of {sorted(_ACTS)}, got {act!r}')
        if prior_centre not in CENTRES:
            raise ValueError(f'OWLBoxHead: prior_centre must be one of {CENTRES}, got {prior_centre!r}')
        self.prior_centre = prior_centre
        self.dense0 = nn.Linear(in_channels, in_channels)
        self.dense1 = nn.Linear(in_channels, in_channels)
        self.dense2 = nn.Linear(in_channels, 4)
        self.approximate = _ACTS[act]

    def forward(self, tokens: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
        """tokens (B, gh*gw, D) in row-major grid order -> boxes (B, gh*gw, 4), cxcywh in [0, 1]."""
        if tokens.shape[1] != grid[0] * grid[1]:
            raise ValueError(f'OWLBoxHead: {tokens.shape[1]} tokens do not fill the grid {tuple(grid)}')
        x = F.gelu(self.dense0(tokens), approximate=self.approximate)
        x = F.gelu(self.dense1(x), approximate=self.approximate)
        return torch.sigmoid(self.dense2(x) + self.prior(tuple(grid), tokens.device, tokens.dtype))

    def prior(self, grid: Tuple[int, int], device=None, dtype=torch.float32) -> torch.Tensor:
        """(gh*gw, 4) logit-space box prior of this head for a token grid (cached)."""
        return box_bias(tuple(grid), device if device is not None else torch.device('cpu'), dtype, self.prior_centre)


@MODELS.register_module()
class OWLClassHead(BaseModule):
    def __init__(self, in_channels: int, embed_dim: int, init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        self.dense0 = nn.Linear(in_channels, embed_dim)
        self.logit_shift = nn.Linear(in_channels, 1)
        self.logit_scale = nn.Linear(in_channels, 1)

    @staticmethod
    def normalize(x: torch.Tensor) -> torch.Tensor:
        return x / (torch.linalg.norm(x, dim=-1, keepdim=True) + 1e-6)

    def forward(self, tokens: torch.Tensor, queries: torch.Tensor,
                query_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """tokens (B, N, D), queries (B, Q, E) text embeddings, query_mask (B, Q) True = real query.

        Returns logits (B, N, Q); padded queries hold ``finfo.min``.
        """
        img = self.normalize(self.dense0(tokens))
        logits = torch.einsum('bnd,bqd->bnq', img, self.normalize(queries))
        logits = (logits + self.logit_shift(tokens)) * (F.elu(self.logit_scale(tokens)) + 1)
        if query_mask is not None:
            logits = logits.masked_fill(~query_mask.bool()[:, None, :], torch.finfo(logits.dtype).min)
        return logits
