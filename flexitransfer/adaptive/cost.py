"""Compute of a FlexiViT forward, counted analytically (multiply-adds x 2) from its token count.

Per image with N tokens in the sequence (class token included), width D, L blocks, MLP ratio r:
patch embedding 2*C*H*W*D (every pixel enters exactly one patch, whatever the patch sizes), per block
2*N*D*3D (qkv) + 2*N*N*D * 2 (scores, weighted values) + 2*N*D*D (proj) + 2*2*N*D*rD (MLP), plus a
linear head 2*D*classes if given. Layer norms, softmax and GELU are left out (well under 1%).
"""
from __future__ import annotations

from typing import Sequence, Tuple

__all__ = ['vit_flops', 'uniform_tokens']


def _mlp_ratio(backbone) -> float:
    blk = backbone.blocks[0]
    return blk.mlp.fc1.out_features / blk.mlp.fc1.in_features


def vit_flops(backbone, num_patch_tokens: float, img_hw: Tuple[int, int], num_classes: int = 0) -> float:
    """FLOPs of one image through ``backbone`` (a FlexiViT) with ``num_patch_tokens`` patch tokens."""
    d, nl = backbone.embed_dims, backbone.num_layers
    n = float(num_patch_tokens) + backbone.num_prefix_tokens
    r = _mlp_ratio(backbone)
    h, w = img_hw
    embed = 2.0 * backbone.in_channels * h * w * d
    block = 2 * n * d * 3 * d + 4 * n * n * d + 2 * n * d * d + 4 * n * d * r * d
    return embed + nl * block + 2.0 * d * num_classes


def uniform_tokens(img_hw: Tuple[int, int], patch: int) -> int:
    return (img_hw[0] // patch) * (img_hw[1] // patch)


def stage_gflops(backbone, img_hw: Tuple[int, int], patches: Sequence[int], num_classes: int = 0):
    """GFLOPs of one image at each uniform patch size."""
    return [vit_flops(backbone, uniform_tokens(img_hw, p), img_hw, num_classes) / 1e9 for p in patches]
