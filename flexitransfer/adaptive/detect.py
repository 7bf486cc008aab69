"""Mixed patch sizes for the OWL-ViT detector: one box per token, whatever its size.

The detector's own forward reads the backbone's uniform grid; here the token sequence of a mixed
partition goes through the same heads, and each token's box prior is the one of *its own* cell: the
prior of its level's grid (the box head's ``prior``, i.e. ``box_prior.box_bias``, cached per grid),
taken at the token's position. Padding tokens get logits of -inf (never detected).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from ..models.detectors.text_queries import sample_queries
from .mixed import mixed_tokens

__all__ = ['owl_mixed_forward']


def owl_mixed_forward(detector, inputs: torch.Tensor, levels: torch.Tensor, base_patch: int,
                      num_levels: Optional[int] = None, data_samples=None) -> Tuple[torch.Tensor, ...]:
    """``OWLViTDetector`` over a mixed partition. Equal to ``detector._forward`` at p = s for an all-fine
    partition (and at p = 2s for all-2s).

    Args:
        detector (OWLViTDetector): the detector (its backbone's blocks, heads and box prior).
        inputs (Tensor): images (B, C, H, W).
        levels, base_patch, num_levels: the partition, as ``mixed_tokens``.
        data_samples (list, optional): per-image text queries (default: the detector's default ones).

    Returns:
        tuple[Tensor, ...]: logits ``(B, N, Q)`` (-inf on padding), boxes ``(B, N, 4)`` (normalised cxcywh
        of the padded image), the query mask ``(B, Q)`` and the token validity ``(B, N)`` (its row sums:
        the tokens per image); N = the largest token count of the batch.
    """
    bb = detector.backbone
    mt = mixed_tokens(bb, inputs, levels, base_patch, num_levels)
    y = bb.run_blocks(mt.tokens, mt.attn_mask, out_indices=(bb.num_layers - 1,))[0]
    feats = detector.layer_norm(y[:, 1:] * y[:, :1])
    names = sample_queries(data_samples, detector.default_queries, inputs.shape[0])
    emb, qmask = detector.encode_queries(names)
    logits = detector.class_head(feats, emb, qmask)
    logits = logits.masked_fill(~mt.valid[..., None], float('-inf'))
    bh = detector.box_head
    x = F.gelu(bh.dense0(feats), approximate=bh.approximate)
    x = F.gelu(bh.dense1(x), approximate=bh.approximate)
    priors = torch.cat([bh.prior(g, feats.device, feats.dtype) if n else feats.new_zeros(0, 4)
                        for g, n in zip(mt.level_grids, mt.level_slots)])
    boxes = torch.sigmoid(bh.dense2(x) + priors[mt.order])
    return logits, boxes, qmask, mt.valid
