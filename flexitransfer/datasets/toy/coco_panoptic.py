"""COCO panoptic layout, as mmdet's ``CocoPanopticDataset`` reads it.

    root/train2017/000000000001.jpg ...                 images
    root/annotations/panoptic_train2017.json            images, annotations (segments_info), categories
    root/annotations/panoptic_train2017/000000000001.png  id maps, id = R + 256 G + 256^2 B (0 = VOID)
    (the same for val2017)

Scenes: two stuff regions (sky above, sand or road below, split by a sloped line) with a
VOID band along the split; 2-4 thing instances (coloured circles / squares / triangles, the
colour is the class), some touching or overlapping (the one drawn later occludes); sometimes a
crowd region (a cluster of small shapes of one colour annotated once, ``iscrowd=1``).
Category ids are not contiguous (as in COCO); things come first in the categories list, so
label 0 is a thing (mmdet's fusion turns a stuff label 0 into VOID). Every image has at least
one non-crowd thing and one stuff segment (PQ averages divide by their counts).
"""
from __future__ import annotations

import json
import os
import os.path as osp
from typing import Dict, List, Tuple

import numpy as np
from PIL import Image, ImageDraw

from .common import SHAPE_COLORS, SHAPES, draw_shape
from .registry import register_toy

#: (category id, name, isthing, RGB) in the JSON's order: things first, non-contiguous ids.
TOY_PANOPTIC_CATEGORIES = (
    (1, 'red', 1, SHAPE_COLORS['red']), (3, 'green', 1, SHAPE_COLORS['green']),
    (4, 'blue', 1, SHAPE_COLORS['blue']), (8, 'yellow', 1, SHAPE_COLORS['yellow']),
    (92, 'sky', 0, (165, 205, 235)), (95, 'sand', 0, (200, 170, 120)), (100, 'road', 0, (90, 90, 95)),
)
TOY_PANOPTIC_THINGS = tuple(c[1] for c in TOY_PANOPTIC_CATEGORIES if c[2])
TOY_PANOPTIC_STUFF = tuple(c[1] for c in TOY_PANOPTIC_CATEGORIES if not c[2])
TOY_PANOPTIC_PALETTE = [list(c[3]) for c in TOY_PANOPTIC_CATEGORIES]
_CAT = {c[1]: c for c in TOY_PANOPTIC_CATEGORIES}


def id2rgb(ids: np.ndarray) -> np.ndarray:
    """Segment ids (H, W) -> the COCO panoptic PNG colours (H, W, 3): id = R + 256 G + 256^2 B."""
    ids = ids.astype(np.int64)
    return np.stack([ids % 256, ids // 256 % 256, ids // 256 ** 2 % 256], axis=-1).astype(np.uint8)


def _noisy(rng, rgb, sigma=10.0):
    return tuple(int(v) for v in np.clip(np.array(rgb) + rng.normal(0, sigma, 3), 0, 255))


def render_panoptic_scene(rng: np.random.Generator, size: Tuple[int, int], crowd_prob: float = 0.3):
    """One image (H, W, 3 uint8), a segment-id map (H, W int64, 0 = VOID) and its segments.

    Segments are dicts ``id, name, iscrowd`` (category name; ids unique in the image, random
    in [1, 2^24) so all three PNG channels are used).
    """
    h, w = size
    seg = np.zeros((h, w), np.int64)
    ids = iter(rng.choice(np.arange(1, 256 ** 3), size=64, replace=False).tolist())
    segments: List[dict] = []

    # stuff: sky above a sloped line, sand or road below; a VOID band of 2 px along the line
    y0 = rng.uniform(0.35, 0.6) * h
    slope = rng.uniform(-0.25, 0.25)
    yy, xx = np.mgrid[0:h, 0:w]
    line = y0 + slope * (xx - w / 2)
    below = _CAT[str(rng.choice(['sand', 'road']))][1]
    pix = np.zeros((h, w, 3), np.uint8)
    for name, region in (('sky', yy < line - 1), (below, yy >= line + 1)):
        sid = next(ids)
        seg[region] = sid
        base = np.array(_CAT[name][3], np.float64)
        pix[region] = np.clip(base + rng.normal(0, 8, size=(int(region.sum()), 3)), 0, 255).astype(np.uint8)
        segments.append(dict(id=sid, name=name, iscrowd=0))
    band = ~((yy < line - 1) | (yy >= line + 1))
    pix[band] = np.clip(rng.normal(128, 30, size=(int(band.sum()), 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(pix)
    di = ImageDraw.Draw(img)

    def paint(kind, box, name):
        """Draw one shape in the image and return its full mask."""
        m = Image.new('L', (w, h), 0)
        draw_shape(ImageDraw.Draw(m), kind, box, 1)
        draw_shape(di, kind, box, _noisy(rng, _CAT[name][3]))
        return np.asarray(m).astype(bool)

    # crowd: a cluster of small shapes of one colour, one segment with iscrowd=1
    if rng.random() < crowd_prob:
        name = str(rng.choice(TOY_PANOPTIC_THINGS))
        cx, cy = int(rng.integers(w // 5, 4 * w // 5)), int(rng.integers(h // 5, 4 * h // 5))
        r = max(3, min(h, w) // 16)
        mask = np.zeros((h, w), bool)
        for _ in range(int(rng.integers(4, 7))):
            x, y = cx + int(rng.integers(-2 * r, 2 * r)), cy + int(rng.integers(-2 * r, 2 * r))
            mask |= paint('circle', [x - r, y - r, x + r, y + r], name)
        sid = next(ids)
        seg[mask] = sid
        segments.append(dict(id=sid, name=name, iscrowd=1))

    # things: 2-4 instances; about half are placed touching / overlapping the previous one
    prev = None
    for _ in range(int(rng.integers(2, 5))):
        name = str(rng.choice(TOY_PANOPTIC_THINGS))
        s = int(rng.integers(min(h, w) // 5, min(h, w) // 3))
        if prev is not None and rng.random() < 0.5:
            px0, py0, px1, py1 = prev
            x0 = int(np.clip(px1 - rng.integers(0, s // 2 + 1), 0, w - s))
            y0_ = int(np.clip(py0 + rng.integers(-s // 3, s // 3 + 1), 0, h - s))
        else:
            x0, y0_ = int(rng.integers(0, w - s)), int(rng.integers(0, h - s))
        box = [x0, y0_, x0 + s, y0_ + s]
        mask = paint(SHAPES[int(rng.integers(len(SHAPES)))], box, name)
        sid = next(ids)
        seg[mask] = sid
        segments.append(dict(id=sid, name=name, iscrowd=0))
        prev = box

    # a segment occluded to almost nothing is unlabeled (VOID), as tiny COCO leftovers
    min_area = max(12, h * w // 400)
    kept = []
    for s in segments:
        area = int((seg == s['id']).sum())
        if area >= min_area:
            kept.append(s)
        else:
            seg[seg == s['id']] = 0
    return np.asarray(img), seg, kept


def _segment_info(seg: np.ndarray, s: dict) -> dict:
    ys, xs = np.nonzero(seg == s['id'])
    x0, y0 = int(xs.min()), int(ys.min())
    return dict(id=int(s['id']), category_id=int(_CAT[s['name']][0]), iscrowd=int(s['iscrowd']),
                bbox=[x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1], area=int(len(xs)))


def _valid(segments: List[dict]) -> bool:
    return (any(_CAT[s['name']][2] and not s['iscrowd'] for s in segments)
            and any(not _CAT[s['name']][2] for s in segments))


@register_toy('panoptic', root='data/toy_coco_panoptic', size=(96, 96), num_train=96, num_val=24)
def make_coco_panoptic_like(root: str, num_train: int = 96, num_val: int = 24, size: Tuple[int, int] = (96, 96),
                            seed: int = 0) -> str:
    """COCO panoptic layout (train2017/val2017 JPEGs, panoptic_*.json, id-map PNGs)."""
    rng = np.random.default_rng(seed)
    categories = [dict(id=c[0], name=c[1], supercategory='thing' if c[2] else 'stuff', isthing=c[2],
                       color=list(c[3])) for c in TOY_PANOPTIC_CATEGORIES]
    next_id = 1
    for split, n in (('train2017', num_train), ('val2017', num_val)):
        img_dir, png_dir = osp.join(root, split), osp.join(root, 'annotations', f'panoptic_{split}')
        os.makedirs(img_dir, exist_ok=True)
        os.makedirs(png_dir, exist_ok=True)
        images, annotations = [], []
        for _ in range(n):
            while True:
                img, seg, segments = render_panoptic_scene(rng, size)
                if _valid(segments):
                    break
            stem = f'{next_id:012d}'
            Image.fromarray(img).save(osp.join(img_dir, stem + '.jpg'), quality=95)
            Image.fromarray(id2rgb(seg)).save(osp.join(png_dir, stem + '.png'))
            images.append(dict(id=next_id, file_name=stem + '.jpg', height=int(size[0]), width=int(size[1])))
            annotations.append(dict(image_id=next_id, file_name=stem + '.png',
                                    segments_info=[_segment_info(seg, s) for s in segments]))
            next_id += 1
        data: Dict = dict(info=dict(description='flexitransfer toy COCO panoptic'), licenses=[], images=images,
                          annotations=annotations, categories=categories)
        with open(osp.join(root, 'annotations', f'panoptic_{split}.json'), 'w') as f:
            json.dump(data, f)
    return root
