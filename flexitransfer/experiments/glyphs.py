"""Formula-driven pre-training images: a synthetic alphabet of random glyphs, rendered on the fly.

Pre-training a ViT on images made by a formula instead of photographs is a published route
(FractalDB: Kataoka et al., ACCV 2020; "Formula-driven supervised learning": Nakashima et al., AAAI 2022,
contours and strokes). Here each class is a glyph of 2 or 3 quadratic Bezier strokes; every image of it
is the glyph with its control points jittered, under a random similarity transform and stroke width,
drawn as soft strokes on the digits' value range (background -1, ink up to +1). No image is stored: batch
``step`` of seed ``seed`` is a pure function of (seed, step), so a run is reproducible and resumable.
"""
from __future__ import annotations

import math
from typing import Tuple

import torch


class GlyphStream:
    """Batches of glyph images and their class labels.

    Args:
        num_classes (int): glyphs in the alphabet.
        img (int): image side in pixels.
        seed (int): the alphabet and every batch.
        points (int): samples per stroke (rendering resolution).
    """

    def __init__(self, num_classes: int = 200, img: int = 48, seed: int = 0, points: int = 32):
        g = torch.Generator().manual_seed(10_000 + seed)
        self.num_classes, self.img, self.seed, self.points = num_classes, img, seed, points
        # (K, 3 strokes, 3 control points, xy) in [-0.8, 0.8]; a glyph with 2 strokes repeats its first
        self.ctrl = (torch.rand(num_classes, 3, 3, 2, generator=g) * 1.6 - 0.8)
        two = torch.rand(num_classes, generator=g) < 0.5
        self.ctrl[two, 2] = self.ctrl[two, 0]
        t = torch.linspace(0, 1, points)
        self.bern = torch.stack([(1 - t) ** 2, 2 * t * (1 - t), t ** 2], 1)  # (T, 3) quadratic Bezier basis
        c = (torch.arange(img, dtype=torch.float32) + 0.5) / img * 2 - 1
        self.grid = torch.stack(torch.meshgrid(c, c, indexing='ij')[::-1], -1).reshape(-1, 2)  # (HW, xy)

    def batch(self, step: int, size: int = 64) -> Tuple[torch.Tensor, torch.Tensor]:
        """Batch ``step``: images (size, 1, img, img) in [-1, 1] and labels (size,)."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        y = torch.randint(self.num_classes, (size,), generator=g)
        ctrl = self.ctrl[y] + 0.06 * torch.randn(size, 3, 3, 2, generator=g)
        pts = torch.einsum('tc,bscd->bstd', self.bern, ctrl).reshape(size, -1, 2)  # (B, 3T, xy)
        ang = (torch.rand(size, generator=g) - 0.5) * (math.pi / 6)
        scale = 0.85 + 0.3 * torch.rand(size, generator=g)
        rot = torch.stack([torch.cos(ang), -torch.sin(ang), torch.sin(ang), torch.cos(ang)], 1).reshape(size, 2, 2)
        shift = (torch.rand(size, 1, 2, generator=g) - 0.5) * 0.2
        pts = torch.einsum('bij,bpj->bpi', rot * scale[:, None, None], pts) + shift
        width = (2.5 + 2.0 * torch.rand(size, 1, 1, generator=g)) * (2 / self.img)  # stroke sigma, in [-1, 1] units
        d2 = torch.cdist(self.grid[None].expand(size, -1, -1), pts).pow(2)  # (B, HW, 3T)
        ink = torch.exp(-d2.min(-1).values[..., None] / (2 * width ** 2))[..., 0]
        return (ink * 2 - 1).reshape(size, 1, self.img, self.img), y
