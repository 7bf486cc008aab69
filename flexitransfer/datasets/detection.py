"""Detection data with text queries: LVIS v1 with its federated labels, and per-image query sets.

- ``LVISFederatedDataset``: reads an LVIS v1 JSON itself (mmdet's ``LVISV1Dataset`` drops
  ``neg_category_ids``): classes from the file's categories (sorted by id) unless given, image
  paths from ``coco_url`` (``.../train2017/x.jpg`` -> ``data_prefix.img`` + ``train2017/x.jpg``)
  or ``file_name``, and per image ``neg_category_ids`` / ``not_exhaustive_category_ids`` as label
  indices. ``return_classes=True`` puts all class names in ``text`` (mmdet's convention).
- ``SampleTextQueries``: the image's query set. ``num_queries=None``: every class (COCO).
  Otherwise OWL-ViT's federated scheme: the image's positive classes, then its
  ``neg_category_ids``, then random other classes up to ``num_queries``; ``text`` becomes those
  names, ``query_ids`` their class indices, and box labels are re-indexed into the query list.
  Classes outside the set are not penalised (they are no column of the loss).
"""
from __future__ import annotations

import json
import os.path as osp
from typing import List, Optional

import numpy as np
from mmcv.transforms import BaseTransform
from mmdet.datasets.base_det_dataset import BaseDetDataset
from mmdet.registry import DATASETS, TRANSFORMS


@DATASETS.register_module()
class LVISFederatedDataset(BaseDetDataset):
    METAINFO = dict(classes=None)

    def load_data_list(self) -> List[dict]:
        try:
            with open(self.ann_file) as f:
                data = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f'LVISFederatedDataset: cannot read the LVIS annotation file '
                             f'{self.ann_file!r}: {e}') from e
        for key in ('images', 'annotations', 'categories'):
            if key not in data:
                raise ValueError(f'LVISFederatedDataset: {self.ann_file!r} has no {key!r}; expected an LVIS v1 JSON')
        cats = sorted(data['categories'], key=lambda c: c['id'])
        names = tuple(c['name'] for c in cats)
        if self._metainfo.get('classes') is None:
            self._metainfo['classes'] = names
        by_name = {c['name']: c['id'] for c in cats}
        unknown = [n for n in self._metainfo['classes'] if n not in by_name]
        if unknown:
            raise ValueError(f'LVISFederatedDataset: classes {unknown[:5]} are not categories of {self.ann_file!r}')
        self.cat_ids = [by_name[n] for n in self._metainfo['classes']]
        self.cat2label = {c: i for i, c in enumerate(self.cat_ids)}
        self._metainfo['cat_ids'] = tuple(self.cat_ids)
        self._metainfo['frequencies'] = tuple({c['id']: c.get('frequency') for c in cats}[i] for i in self.cat_ids)
        anns = {}
        for a in data['annotations']:
            anns.setdefault(a['image_id'], []).append(a)
        out = []
        for img in data['images']:
            if 'coco_url' in img:
                rel = '/'.join(img['coco_url'].split('/')[-2:])
            elif 'file_name' in img:
                rel = img['file_name']
            else:
                raise ValueError(f'LVISFederatedDataset: image {img.get("id")} has neither coco_url nor file_name')
            instances = []
            for a in anns.get(img['id'], []):
                if a['category_id'] not in self.cat2label:
                    continue
                x, y, w, h = a['bbox']
                if w < 1 or h < 1:
                    continue
                instances.append(dict(bbox=[x, y, x + w, y + h], bbox_label=self.cat2label[a['category_id']],
                                      ignore_flag=0))
            info = dict(img_path=osp.join(self.data_prefix.get('img', ''), rel), img_id=img['id'],
                        height=img['height'], width=img['width'], instances=instances,
                        neg_category_ids=[self.cat2label[c] for c in img.get('neg_category_ids', [])
                                          if c in self.cat2label],
                        not_exhaustive_category_ids=[self.cat2label[c]
                                                     for c in img.get('not_exhaustive_category_ids', [])
                                                     if c in self.cat2label])
            if self.return_classes:
                info['text'] = self._metainfo['classes']
            out.append(info)
        return out

    def filter_data(self) -> List[dict]:
        if self.test_mode or not self.filter_cfg or not self.filter_cfg.get('filter_empty_gt', False):
            return self.data_list
        return [d for d in self.data_list if d['instances']]


@TRANSFORMS.register_module()
class SampleTextQueries(BaseTransform):
    """Args:
        num_queries: size of the per-image query set (None: all classes, in class order).
    """

    def __init__(self, num_queries: Optional[int] = None):
        if num_queries is not None and num_queries < 1:
            raise ValueError(f'SampleTextQueries: num_queries must be >= 1 or None, got {num_queries}')
        self.num_queries = num_queries

    def transform(self, results: dict) -> dict:
        if 'text' not in results:
            raise KeyError('SampleTextQueries needs `text` (all class names): set return_classes=True on the dataset')
        names = tuple(results['text'])
        labels = np.asarray(results.get('gt_bboxes_labels', np.zeros(0, np.int64)), dtype=np.int64)
        if self.num_queries is None:
            ids = list(range(len(names)))
        else:
            pos = list(dict.fromkeys(labels.tolist()))
            neg = [c for c in results.get('neg_category_ids', []) if c not in pos]
            room = max(self.num_queries - len(pos), 0)
            if len(neg) > room:
                neg = [neg[i] for i in sorted(np.random.choice(len(neg), room, replace=False))]
            ids = pos + neg
            rest = np.setdiff1d(np.arange(len(names)), ids)
            extra = max(self.num_queries - len(ids), 0)
            if extra and len(rest):
                ids += np.random.choice(rest, min(extra, len(rest)), replace=False).tolist()
        remap = {c: i for i, c in enumerate(ids)}
        results['gt_bboxes_labels'] = np.array([remap[c] for c in labels.tolist()], dtype=np.int64)
        results['text'] = tuple(names[c] for c in ids)
        results['query_ids'] = np.asarray(ids, dtype=np.int64)
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(num_queries={self.num_queries})'
