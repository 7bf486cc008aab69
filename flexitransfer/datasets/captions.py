"""Image-caption datasets: COCO captions (``captions_*.json``) and Karpathy-split JSON
(``dataset_coco.json`` / ``dataset_flickr30k.json``), several captions per image.

Each item is one image with all its captions (``captions``); in training mode one
of them is drawn at random per access (``caption``), as LiT trains.
"""
from __future__ import annotations

import json
import os.path as osp
import random
from typing import Optional, Sequence

from mmengine.registry import DATASETS

from .checks import BadInputError
from .classification import _ClsDataset


def _fail(path, msg):
    raise BadInputError(f'broken caption annotation file {path!r}: {msg}')


def _caption(path, raw, where):
    if not isinstance(raw, str) or not raw.strip():
        _fail(path, f'{where} has an empty caption {raw!r}; drop that caption or fill it in')
    return raw.strip()


def load_coco_captions(path: str, img_dir: str):
    try:
        d = json.load(open(path))
    except json.JSONDecodeError as e:
        _fail(path, f'not valid JSON ({e})')
    if not isinstance(d, dict) or 'images' not in d or 'annotations' not in d:
        _fail(path, 'expected COCO captions JSON with "images" and "annotations"')
    for i, im in enumerate(d['images']):
        if not isinstance(im, dict) or 'id' not in im or 'file_name' not in im:
            _fail(path, f'images[{i}] lacks "id" / "file_name": {im!r}')
    known = {im['id'] for im in d['images']}
    caps = {}
    for i, a in enumerate(d['annotations']):
        if not isinstance(a, dict) or 'image_id' not in a or 'caption' not in a:
            _fail(path, f'annotations[{i}] lacks "image_id" / "caption": {a!r}')
        if a['image_id'] not in known:
            _fail(path, f'annotations[{i}] (id {a.get("id")}) names image_id {a["image_id"]!r}, which is not in '
                        f'"images"; add the image or drop the annotation')
        caps.setdefault(a['image_id'], []).append(_caption(path, a['caption'], f'annotations[{i}] (id {a.get("id")})'))
    items = []
    for im in sorted(d['images'], key=lambda im: im['id']):
        if im['id'] in caps:
            items.append((osp.join(img_dir, im['file_name']), caps[im['id']], im['id']))
    return items


def load_karpathy(path: str, img_dir: str, split: str):
    try:
        d = json.load(open(path))
    except json.JSONDecodeError as e:
        _fail(path, f'not valid JSON ({e})')
    if not isinstance(d, dict) or 'images' not in d:
        _fail(path, 'expected a Karpathy-split JSON with "images"')
    splits = {'train': ('train', 'restval')}.get(split, (split,))
    items = []
    for i, im in enumerate(d['images']):
        if im.get('split') not in splits:
            continue
        if 'sentences' not in im or 'filename' not in im:
            _fail(path, f'image entry {i} lacks "filename"/"sentences"')
        rel = osp.join(im.get('filepath', ''), im['filename'])
        caps = [_caption(path, s.get('raw') if isinstance(s, dict) else None, f'image entry {i} ({rel})')
                for s in im['sentences']]
        if not caps:
            _fail(path, f'image entry {i} ({rel}) has no sentences')
        items.append((osp.join(img_dir, rel), caps, im.get('cocoid', im.get('imgid', i))))
    return items


@DATASETS.register_module()
class CaptionDataset(_ClsDataset):
    """Args:
        data_root: dataset folder.
        ann_file: annotation JSON (relative to ``data_root``).
        data_prefix: image folder (relative to ``data_root``).
        format: 'coco' (``captions_*.json``) or 'karpathy'.
        split: Karpathy split ('train' includes 'restval', 'val', 'test').
        train_mode: draw one random caption per access (else the first).
    """

    def __init__(self, data_root: str, ann_file: str, data_prefix: str = '', format: str = 'coco',
                 split: Optional[str] = None, train_mode: bool = False, pipeline: Sequence[dict] = ()):
        path = osp.join(data_root, ann_file)
        if not osp.isfile(path):
            raise FileNotFoundError(f'caption annotation file not found: {path!r}')
        img_dir = osp.join(data_root, data_prefix)
        if format == 'coco':
            self.samples = load_coco_captions(path, img_dir)
        elif format == 'karpathy':
            if split is None:
                raise ValueError("format='karpathy' needs split='train'|'val'|'test'")
            self.samples = load_karpathy(path, img_dir, split)
        else:
            raise ValueError(f"format must be 'coco' or 'karpathy', got {format!r}")
        if not self.samples:
            raise BadInputError(f'{path!r}: no images with captions (split={split!r}): the dataset is empty; check '
                                f'ann_file / split, or generate toy data with tools/make_toy_data.py captions')
        self.train_mode = train_mode
        super().__init__(pipeline, classes=())

    def get_info(self, idx: int) -> dict:
        path, caps, img_id = self.samples[idx]
        return {'img_path': path, 'captions': list(caps), 'img_id': img_id,
                'caption': random.choice(caps) if self.train_mode else caps[0]}
