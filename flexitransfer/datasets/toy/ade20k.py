"""ADE20k layout (``ADEChallengeData2016``): JPEG images, single-channel PNG labels."""
from __future__ import annotations

import os
import os.path as osp
from typing import Tuple

import numpy as np
from PIL import Image, ImageDraw

from .common import SHAPE_COLORS, SHAPES, draw_shape
from .registry import register_toy


def render_scene(rng: np.random.Generator, size: Tuple[int, int], max_shapes: int = 3):
    """One image (H, W, 3 uint8), an ADE-encoded label map (H, W uint8) and the shape list."""
    h, w = size
    bg = rng.normal(128, 12, size=(h, w, 3)).clip(0, 255).astype(np.uint8)
    img = Image.fromarray(bg)
    lab = Image.new('L', (w, h), 1)  # 1 = ground
    di, dl = ImageDraw.Draw(img), ImageDraw.Draw(lab)
    names = list(SHAPE_COLORS)
    shapes = []
    for _ in range(int(rng.integers(1, max_shapes + 1))):
        c = int(rng.integers(len(names)))
        kind = SHAPES[int(rng.integers(len(SHAPES)))]
        s = int(rng.integers(min(h, w) // 5, min(h, w) // 2))
        x0, y0 = int(rng.integers(0, w - s)), int(rng.integers(0, h - s))
        box = [x0, y0, x0 + s, y0 + s]
        color = tuple(int(v) for v in np.clip(np.array(SHAPE_COLORS[names[c]]) + rng.normal(0, 10, 3), 0, 255))
        draw_shape(di, kind, box, color)
        draw_shape(dl, kind, box, c + 2)
        # a 1-px unlabeled outline, like ADE20k's "other" (0) pixels between objects
        if kind == 'square':
            dl.rectangle(box, outline=0)
        shapes.append(dict(color=names[c], shape=kind, bbox=box))
    return np.asarray(img), np.asarray(lab), shapes


@register_toy('seg', root='data/toy_ade/ADEChallengeData2016', size=(120, 120), num_train=96, num_val=24)
def make_ade20k_like(root: str, num_train: int = 64, num_val: int = 16, size: Tuple[int, int] = (120, 120),
                     seed: int = 0) -> str:
    """Write ``root/images/{training,validation}/*.jpg`` and ``root/annotations/.../*.png``.

    Same names and encoding as ``ADEChallengeData2016``: JPEG images, single-channel
    PNG labels with 0 = unlabeled (ignored via ``reduce_zero_label``), 1.. = classes.
    """
    rng = np.random.default_rng(seed)
    for split, n in (('training', num_train), ('validation', num_val)):
        os.makedirs(osp.join(root, 'images', split), exist_ok=True)
        os.makedirs(osp.join(root, 'annotations', split), exist_ok=True)
        tag = 'train' if split == 'training' else 'val'
        for i in range(n):
            img, lab, _ = render_scene(rng, size)
            name = f'ADE_{tag}_{i + 1:08d}'
            Image.fromarray(img).save(osp.join(root, 'images', split, name + '.jpg'), quality=95)
            Image.fromarray(lab, mode='L').save(osp.join(root, 'annotations', split, name + '.png'))
    return root
