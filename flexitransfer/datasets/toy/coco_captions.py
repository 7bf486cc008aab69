"""COCO captions layout (``captions_*2017.json``) and the Karpathy split (``dataset_coco.json``)."""
from __future__ import annotations

import json
import os
import os.path as osp
from typing import Tuple

import numpy as np
from PIL import Image, ImageDraw

from .common import SHAPE_COLORS, SHAPES, draw_shape
from .registry import register_toy


def render_pair(rng: np.random.Generator, size: Tuple[int, int]):
    """Two shapes of different colours, side by side or stacked; returns image and captions."""
    h, w = size
    img = Image.fromarray(rng.normal(128, 12, size=(h, w, 3)).clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    names = list(SHAPE_COLORS)
    c1, c2 = (names[i] for i in rng.choice(len(names), 2, replace=False))
    s1, s2 = (SHAPES[int(i)] for i in rng.integers(0, len(SHAPES), 2))
    vertical = bool(rng.integers(2))
    s = min(h, w) * 2 // 5
    boxes = ([(w - s) // 2, h // 20, (w + s) // 2, h // 20 + s],
             [(w - s) // 2, h - h // 20 - s, (w + s) // 2, h - h // 20]) \
        if vertical else ([w // 20, (h - s) // 2, w // 20 + s, (h + s) // 2],
                          [w - w // 20 - s, (h - s) // 2, w - w // 20, (h + s) // 2])
    for (c, k), box in zip(((c1, s1), (c2, s2)), boxes):
        draw_shape(draw, k, box, SHAPE_COLORS[c])
    rel, inv = ('above', 'below') if vertical else ('to the left of', 'to the right of')
    caps = [f'a {c1} {s1} {rel} a {c2} {s2}', f'a {c2} {s2} {inv} a {c1} {s1}',
            f'a {c1} {s1} and a {c2} {s2}', f'a picture of a {c2} {s2} and a {c1} {s1}',
            f'there is a {c1} {s1} next to a {c2} {s2}']
    return np.asarray(img), caps


@register_toy('captions', root='data/toy_coco', size=(60, 60), num_train=400, num_val=60)
def make_coco_captions_like(root: str, num_train: int = 200, num_val: int = 50, size: Tuple[int, int] = (60, 60),
                            seed: int = 0) -> str:
    """COCO captions layout: ``root/{train2017,val2017}/*.jpg``,
    ``root/annotations/captions_{train,val}2017.json`` and the Karpathy-split
    ``root/annotations/dataset_coco.json`` (train/val/test: the val images are split in halves)."""
    rng = np.random.default_rng(seed)
    os.makedirs(osp.join(root, 'annotations'), exist_ok=True)
    karpathy, ann_id = [], 0
    for split, n, base in (('train', num_train, 1), ('val', num_val, 1_000_000)):
        folder = f'{split}2017'
        os.makedirs(osp.join(root, folder), exist_ok=True)
        images, anns = [], []
        for i in range(n):
            img, caps = render_pair(rng, size)
            img_id = base + i
            name = f'{img_id:012d}.jpg'
            Image.fromarray(img).save(osp.join(root, folder, name), quality=95)
            images.append({'id': img_id, 'file_name': name, 'height': size[0], 'width': size[1]})
            for c in caps:
                ann_id += 1
                anns.append({'id': ann_id, 'image_id': img_id, 'caption': c})
            ksplit = 'train' if split == 'train' else ('val' if i < n // 2 else 'test')
            karpathy.append({'filepath': folder, 'filename': name, 'cocoid': img_id, 'split': ksplit,
                             'sentences': [{'raw': c, 'tokens': c.split()} for c in caps]})
        with open(osp.join(root, 'annotations', f'captions_{split}2017.json'), 'w') as f:
            json.dump({'info': {'description': 'flexitransfer toy captions'}, 'images': images,
                       'annotations': anns}, f)
    with open(osp.join(root, 'annotations', 'dataset_coco.json'), 'w') as f:
        json.dump({'dataset': 'coco', 'images': karpathy}, f)
    return root
