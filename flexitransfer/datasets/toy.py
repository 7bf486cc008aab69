"""Tiny datasets in the real on-disk formats, so every task runs end to end on a CPU.

Images are simple coloured shapes on a noisy background; the *colour* decides
the class, the shape and place are random. Each writer produces exactly the
layout and encoding of the real dataset it imitates.
"""
from __future__ import annotations

import json
import os
import os.path as osp
from typing import Dict, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

#: class name -> RGB. Index i here is ADE-style label value i + 2 (0 = unlabeled, 1 = ground).
SHAPE_COLORS: Dict[str, Tuple[int, int, int]] = {
    'red': (220, 40, 40), 'green': (40, 180, 60), 'blue': (40, 70, 220), 'yellow': (230, 210, 40),
}
TOY_SEG_CLASSES = ('ground',) + tuple(SHAPE_COLORS)
TOY_SEG_PALETTE = [[120, 120, 120]] + [list(c) for c in SHAPE_COLORS.values()]
SHAPES = ('circle', 'square', 'triangle')


def _shape(draw: ImageDraw.ImageDraw, kind: str, box: Sequence[int], fill) -> None:
    x0, y0, x1, y1 = box
    if kind == 'circle':
        draw.ellipse(box, fill=fill)
    elif kind == 'square':
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=fill)


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
        _shape(di, kind, box, color)
        _shape(dl, kind, box, c + 2)
        # a 1-px unlabeled outline, like ADE20k's "other" (0) pixels between objects
        if kind == 'square':
            dl.rectangle(box, outline=0)
        shapes.append(dict(color=names[c], shape=kind, bbox=box))
    return np.asarray(img), np.asarray(lab), shapes


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


def render_shape_image(rng: np.random.Generator, size: Tuple[int, int], color: str) -> np.ndarray:
    """One shape (random kind, size and place) of a class colour on a noisy background: class = colour."""
    h, w = size
    img = Image.fromarray(rng.normal(128, 20, size=(h, w, 3)).clip(0, 255).astype(np.uint8))
    s = int(rng.integers(min(h, w) * 2 // 5, min(h, w) * 4 // 5))
    x0, y0 = int(rng.integers(0, w - s)), int(rng.integers(0, h - s))
    rgb = tuple(int(v) for v in np.clip(np.array(SHAPE_COLORS[color]) + rng.normal(0, 15, 3), 0, 255))
    _shape(ImageDraw.Draw(img), SHAPES[int(rng.integers(len(SHAPES)))], [x0, y0, x0 + s, y0 + s], rgb)
    return np.asarray(img)


def make_imagefolder_like(root: str, num_train: int = 40, num_val: int = 12, size: Tuple[int, int] = (60, 60),
                          classes: Sequence[str] = tuple(SHAPE_COLORS), seed: int = 0) -> str:
    """ImageNet-style tree ``root/{train,val}/<class>/*.JPEG`` plus ``root/meta/val.txt``
    (``class/file.JPEG label`` lines, as ImageNet's list files). Counts are per class."""
    rng = np.random.default_rng(seed)
    os.makedirs(osp.join(root, 'meta'), exist_ok=True)
    for split, n in (('train', num_train), ('val', num_val)):
        lines = []
        for label, c in enumerate(sorted(classes)):  # ImageNet convention: label = index of sorted folder
            os.makedirs(osp.join(root, split, c), exist_ok=True)
            for i in range(n):
                name = f'{c}_{split}_{i:05d}.JPEG'
                Image.fromarray(render_shape_image(rng, size, c)).save(osp.join(root, split, c, name), 'JPEG',
                                                                        quality=95)
                lines.append(f'{c}/{name} {label}')
        with open(osp.join(root, 'meta', f'{split}.txt'), 'w') as f:
            f.write('\n'.join(lines) + '\n')
    return root


def make_cifar_like(root: str, cifar100: bool = False, num_train: int = 50, num_test: int = 20, seed: int = 0) -> str:
    """CIFAR python pickles: ``cifar-10-batches-py`` (5 train batches, test_batch, batches.meta)
    or ``cifar-100-python`` (train, test, meta with fine/coarse names). 32x32 shape images."""
    import pickle
    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)

    def batch(n):
        names = list(SHAPE_COLORS)
        labels = [int(i % len(names)) for i in range(n)]
        data = np.stack([render_shape_image(rng, (32, 32), names[y]).transpose(2, 0, 1).reshape(-1) for y in labels])
        return data.astype(np.uint8), labels

    dump = lambda obj, name: pickle.dump(obj, open(osp.join(root, name), 'wb'))  # noqa: E731
    if cifar100:
        for split, n in (('train', num_train), ('test', num_test)):
            data, labels = batch(n)
            dump({b'data': data, b'fine_labels': labels, b'coarse_labels': [0] * n,
                  b'filenames': [f'{i}.png'.encode() for i in range(n)]}, split)
        dump({b'fine_label_names': [c.encode() for c in SHAPE_COLORS], b'coarse_label_names': [b'shape']}, 'meta')
    else:
        per = max(1, num_train // 5)
        for i in range(1, 6):
            data, labels = batch(per)
            dump({b'data': data, b'labels': labels, b'batch_label': f'training batch {i}'.encode()}, f'data_batch_{i}')
        data, labels = batch(num_test)
        dump({b'data': data, b'labels': labels}, 'test_batch')
        dump({b'label_names': [c.encode() for c in SHAPE_COLORS], b'num_vis': 3072}, 'batches.meta')
    return root


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
    boxes = ([(w - s) // 2, h // 20, (w + s) // 2, h // 20 + s], [(w - s) // 2, h - h // 20 - s, (w + s) // 2, h - h // 20])\
        if vertical else ([w // 20, (h - s) // 2, w // 20 + s, (h + s) // 2], [w - w // 20 - s, (h - s) // 2, w - w // 20, (h + s) // 2])
    for (c, k), box in zip(((c1, s1), (c2, s2)), boxes):
        _shape(draw, k, box, SHAPE_COLORS[c])
    rel, inv = ('above', 'below') if vertical else ('to the left of', 'to the right of')
    caps = [f'a {c1} {s1} {rel} a {c2} {s2}', f'a {c2} {s2} {inv} a {c1} {s1}',
            f'a {c1} {s1} and a {c2} {s2}', f'a picture of a {c2} {s2} and a {c1} {s1}',
            f'there is a {c1} {s1} next to a {c2} {s2}']
    return np.asarray(img), caps


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
