"""COCO instances (``instances_*2017.json``) and LVIS v1 (``lvis_v1_*.json``) layouts for detection.

Images: 1-3 coloured shapes on a noisy background, placed without much overlap; every shape is
annotated with its exact box. ``det`` (COCO): the class is the colour (4 classes, named by the
colour, so text queries are "red", ...). ``det_shapes`` (COCO): colour + shape (12 classes, "red
circle", ..., uniformly drawn). ``lvis``: colour + shape too, drawn with skewed frequencies;
each image lists ``neg_category_ids`` (verified absent) and sometimes
``not_exhaustive_category_ids``; categories carry LVIS's fields (``frequency`` r/c/f by
training-image count rank: the rarest third is 'r', the commonest 'f', since LVIS's absolute
10 / 100 image thresholds need a large dataset).
"""
from __future__ import annotations

import json
import os
import os.path as osp
from typing import List, Tuple

import numpy as np
from PIL import Image, ImageDraw

from .common import SHAPE_COLORS, SHAPES, draw_shape
from .registry import register_toy


def _iou(a, b) -> float:
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def render_objects(rng: np.random.Generator, size: Tuple[int, int], classes: List[Tuple[str, str]],
                   probs=None, max_objects: int = 3):
    """An image with 1..max_objects shapes; returns (image, [(class index, [x0, y0, x1, y1])])."""
    h, w = size
    img = Image.fromarray(rng.normal(128, 15, size=(h, w, 3)).clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    objs: list = []
    lo, hi = min(h, w) // 5, min(h, w) * 2 // 5
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _try in range(20):
            s = int(rng.integers(lo, hi + 1))
            x0, y0 = int(rng.integers(0, w - s)), int(rng.integers(0, h - s))
            box = [x0, y0, x0 + s, y0 + s]
            if all(_iou(box, b) < 0.05 for _, b in objs):
                break
        else:
            continue
        c = int(rng.choice(len(classes), p=probs))
        color, shape = classes[c]
        if shape is None:
            shape = SHAPES[int(rng.integers(len(SHAPES)))]
        draw_shape(draw, shape, [box[0], box[1], box[2] - 1, box[3] - 1], SHAPE_COLORS[color])
        objs.append((c, box))
    return np.asarray(img), objs


def _ann(ann_id, img_id, cat_id, box):
    x0, y0, x1, y1 = box
    return {'id': ann_id, 'image_id': img_id, 'category_id': cat_id, 'bbox': [x0, y0, x1 - x0, y1 - y0],
            'area': (x1 - x0) * (y1 - y0), 'iscrowd': 0,
            'segmentation': [[x0, y0, x1, y0, x1, y1, x0, y1]]}


def _write_coco_instances(root: str, classes: List[Tuple[str, str]], num_train: int, num_val: int,
                          size: Tuple[int, int], seed: int) -> str:
    rng = np.random.default_rng(seed)
    names = [c if s is None else f'{c} {s}' for c, s in classes]
    cats = [{'id': i + 1, 'name': n, 'supercategory': 'shape'} for i, n in enumerate(names)]
    os.makedirs(osp.join(root, 'annotations'), exist_ok=True)
    ann_id = 0
    for split, n, base in (('train', num_train, 1), ('val', num_val, 1_000_000)):
        os.makedirs(osp.join(root, f'{split}2017'), exist_ok=True)
        images, anns = [], []
        for i in range(n):
            img, objs = render_objects(rng, size, classes)
            img_id = base + i
            name = f'{img_id:012d}.jpg'
            Image.fromarray(img).save(osp.join(root, f'{split}2017', name), quality=95)
            images.append({'id': img_id, 'file_name': name, 'height': size[0], 'width': size[1]})
            for c, box in objs:
                ann_id += 1
                anns.append(_ann(ann_id, img_id, c + 1, box))
        with open(osp.join(root, 'annotations', f'instances_{split}2017.json'), 'w') as f:
            json.dump({'info': {'description': 'flexitransfer toy instances'}, 'images': images,
                       'annotations': anns, 'categories': cats}, f)
    return root


@register_toy('det', root='data/toy_coco_det', size=(96, 96), num_train=240, num_val=48)
def make_coco_instances_like(root: str, num_train: int = 240, num_val: int = 48, size: Tuple[int, int] = (96, 96),
                             seed: int = 0) -> str:
    """COCO layout: ``root/{train2017,val2017}/*.jpg``, ``root/annotations/instances_{train,val}2017.json``;
    class = colour (4 classes: "red", ...)."""
    return _write_coco_instances(root, [(c, None) for c in SHAPE_COLORS], num_train, num_val, size, seed)


@register_toy('det_shapes', root='data/toy_coco_det_shapes', size=(96, 96), num_train=480, num_val=288)
def make_coco_shape_instances_like(root: str, num_train: int = 480, num_val: int = 288,
                                   size: Tuple[int, int] = (96, 96), seed: int = 0) -> str:
    """COCO layout as ``det``, class = colour + shape (12 classes: "red circle", ...), uniformly drawn: the
    words of every class also name other classes (the open-vocabulary experiment holds one class out)."""
    return _write_coco_instances(root, [(c, s) for c in SHAPE_COLORS for s in SHAPES], num_train, num_val, size,
                                 seed)


@register_toy('lvis', root='data/toy_lvis', size=(64, 64), num_train=48, num_val=24)
def make_lvis_like(root: str, num_train: int = 48, num_val: int = 24, size: Tuple[int, int] = (64, 64),
                   seed: int = 0, num_neg: int = 3) -> str:
    """LVIS v1 layout: ``root/{train2017,val2017}/*.jpg`` (files named as in COCO, found through
    ``coco_url``), ``root/annotations/lvis_v1_{train,val}.json``."""
    rng = np.random.default_rng(seed)
    classes = [(c, s) for c in SHAPE_COLORS for s in SHAPES]
    probs = np.linspace(1.0, 0.1, len(classes)) ** 2
    probs /= probs.sum()
    os.makedirs(osp.join(root, 'annotations'), exist_ok=True)
    ann_id, data = 0, {}
    img_count = np.zeros(len(classes), int)
    inst_count = np.zeros(len(classes), int)
    for split, n, base in (('train', num_train, 1), ('val', num_val, 1_000_000)):
        os.makedirs(osp.join(root, f'{split}2017'), exist_ok=True)
        images, anns = [], []
        for i in range(n):
            img, objs = render_objects(rng, size, classes, probs)
            img_id = base + i
            name = f'{img_id:012d}.jpg'
            Image.fromarray(img).save(osp.join(root, f'{split}2017', name), quality=95)
            present = sorted({c for c, _ in objs})
            absent = [c for c in range(len(classes)) if c not in present]
            neg = sorted(int(c) for c in rng.choice(absent, min(num_neg, len(absent)), replace=False))
            not_exh = [present[0] + 1] if rng.random() < 0.2 else []
            images.append({'id': img_id, 'coco_url': f'http://images.cocodataset.org/{split}2017/{name}',
                           'height': size[0], 'width': size[1], 'neg_category_ids': [c + 1 for c in neg],
                           'not_exhaustive_category_ids': not_exh, 'license': 1, 'flickr_url': '',
                           'date_captured': ''})
            if split == 'train':
                img_count[present] += 1
            for c, box in objs:
                ann_id += 1
                anns.append(_ann(ann_id, img_id, c + 1, box))
                inst_count[c] += split == 'train'
        data[split] = (images, anns)
    rank = np.argsort(np.argsort(img_count, kind='stable'), kind='stable')  # 0 = rarest
    third = len(classes) / 3
    cats = [{'id': i + 1, 'name': f'{c} {s}', 'synset': f'{c}_{s}.n.01', 'synonyms': [f'{c} {s}'],
             'def': f'a {c} {s}', 'frequency': 'rcf'[min(2, int(rank[i] // third))],
             'image_count': int(img_count[i]), 'instance_count': int(inst_count[i])}
            for i, (c, s) in enumerate(classes)]
    for split, (images, anns) in data.items():
        with open(osp.join(root, 'annotations', f'lvis_v1_{split}.json'), 'w') as f:
            json.dump({'info': {'description': 'flexitransfer toy LVIS v1'}, 'licenses': [{'id': 1, 'name': 'toy'}],
                       'images': images, 'annotations': anns, 'categories': cats}, f)
    return root
