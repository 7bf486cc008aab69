"""Classification datasets in the common on-disk formats, and their transforms.

* ``ImageFolderDataset``: an ImageNet-style tree ``root/<split>/<class>/<image>``,
  optionally with a list file of ``relative/path label`` lines (ImageNet val,
  Pets / Flowers-style splits).
* ``CIFARDataset``: the CIFAR-10 / CIFAR-100 python pickles
  (``cifar-10-batches-py/data_batch_{1..5}, test_batch, batches.meta`` or
  ``cifar-100-python/train, test, meta``).

Samples go through an mmengine pipeline and come out as
``{'inputs': uint8 CHW tensor, 'data_samples': BaseDataElement(gt_label=LongTensor)}``.
"""
from __future__ import annotations

import math
import os
import os.path as osp
import pickle
from typing import List, Optional, Sequence

import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmengine.dataset import Compose
from mmengine.registry import DATASETS, TRANSFORMS
from mmengine.structures import BaseDataElement
from torch.utils.data import Dataset

from .checks import BadInputError

IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.ppm', '.webp', '.tif', '.tiff')


@TRANSFORMS.register_module()
class PackImageInputs(BaseTransform):
    """HWC image -> CHW uint8 tensor; ``keys`` of the results -> a ``BaseDataElement`` data sample."""

    def __init__(self, keys: Sequence[str] = ('gt_label',), meta_keys: Sequence[str] = ('img_path', 'ori_shape')):
        self.keys, self.meta_keys = tuple(keys), tuple(meta_keys)

    def transform(self, results: dict) -> dict:
        img = np.ascontiguousarray(results['img'])
        if img.ndim == 2:
            img = img[..., None]
        sample = BaseDataElement(metainfo={k: results[k] for k in self.meta_keys if k in results})
        for k in self.keys:
            if k in results:
                v = results[k]
                sample.set_field(torch.as_tensor(v, dtype=torch.long) if k == 'gt_label' else v, k)
        return {'inputs': torch.from_numpy(img).permute(2, 0, 1).contiguous(), 'data_samples': sample}


@TRANSFORMS.register_module()
class PackClsInputs(PackImageInputs):
    """``PackImageInputs`` for classification: packs ``gt_label``."""

    def __init__(self):
        super().__init__(keys=('gt_label',))


@TRANSFORMS.register_module()
class InceptionCrop(BaseTransform):
    """Random-resized crop (Inception style, as big_vision's ``inception_crop``), then resize to ``size``."""

    def __init__(self, size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), attempts: int = 10):
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        self.scale, self.ratio, self.attempts = scale, ratio, attempts

    def transform(self, results: dict) -> dict:
        import mmcv
        img = results['img']
        h, w = img.shape[:2]
        area = h * w
        for _ in range(self.attempts):
            target = area * np.random.uniform(*self.scale)
            aspect = math.exp(np.random.uniform(math.log(self.ratio[0]), math.log(self.ratio[1])))
            cw, ch = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
            if 0 < cw <= w and 0 < ch <= h:
                y, x = np.random.randint(0, h - ch + 1), np.random.randint(0, w - cw + 1)
                break
        else:
            ch, cw = min(h, w), min(h, w)
            y, x = (h - ch) // 2, (w - cw) // 2
        img = img[y:y + ch, x:x + cw]
        results['img'] = mmcv.imresize(img, (self.size[1], self.size[0]), interpolation='bilinear')
        results['img_shape'] = results['img'].shape[:2]
        return results


class _ClsDataset(Dataset):
    def __init__(self, pipeline: Sequence[dict], classes: Sequence[str]):
        self.pipeline = Compose(list(pipeline))
        self._metainfo = {'classes': tuple(classes)}

    @property
    def metainfo(self) -> dict:
        return dict(self._metainfo)

    def __len__(self) -> int:
        return len(self.samples)

    def get_info(self, idx: int) -> dict:
        raise NotImplementedError

    def __getitem__(self, idx: int):
        return self.pipeline(self.get_info(idx))


@DATASETS.register_module()
class ImageFolderDataset(_ClsDataset):
    """``data_root/data_prefix/<class>/<img>``; or, with ``ann_file``, lines ``path label``
    (paths relative to ``data_root/data_prefix``). ``classes`` defaults to the sorted
    sub-folder names."""

    def __init__(self, data_root: str, data_prefix: str = '', ann_file: Optional[str] = None,
                 classes: Optional[Sequence[str]] = None, pipeline: Sequence[dict] = ()):
        root = osp.join(data_root, data_prefix)
        if not osp.isdir(root):
            raise FileNotFoundError(f'image folder {root!r} does not exist (data_root={data_root!r}, '
                                    f'data_prefix={data_prefix!r})')
        if classes is None:
            classes = sorted(d for d in os.listdir(root) if osp.isdir(osp.join(root, d)))
        self.samples: List[tuple] = []
        if ann_file:
            path = ann_file if osp.isabs(ann_file) else osp.join(data_root, ann_file)
            with open(path) as f:
                for n, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    parts = line.rsplit(maxsplit=1)
                    if len(parts) != 2 or not parts[1].lstrip('-').isdigit():
                        raise ValueError(f'{path}:{n}: expected "relative/path label", got {line.strip()!r}')
                    label = int(parts[1])
                    if not 0 <= label < len(classes):
                        raise ValueError(f'{path}:{n}: label {label} outside [0, {len(classes)}) classes')
                    self.samples.append((osp.join(root, parts[0]), label))
        else:
            for label, c in enumerate(classes):
                d = osp.join(root, c)
                for name in sorted(os.listdir(d)):
                    if name.lower().endswith(IMG_EXTENSIONS):
                        self.samples.append((osp.join(d, name), label))
        if not self.samples:
            raise BadInputError(f'no images found under {root!r} (ann_file={ann_file!r}): the dataset is empty; check '
                                f'data_root / data_prefix, or generate toy data with tools/make_toy_data.py cls')
        super().__init__(pipeline, classes)

    def get_info(self, idx: int) -> dict:
        path, label = self.samples[idx]
        return {'img_path': path, 'gt_label': label}


@DATASETS.register_module()
class CIFARDataset(_ClsDataset):
    """CIFAR-10/100 from the python pickles in ``data_root`` (the extracted archive folder)."""

    def __init__(self, data_root: str, split: str = 'train', fine_labels: bool = True,
                 pipeline: Sequence[dict] = ()):
        if split not in ('train', 'test'):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        def load(name):
            path = osp.join(data_root, name)
            try:
                with open(path, 'rb') as f:
                    return pickle.load(f, encoding='bytes')
            except FileNotFoundError:
                raise FileNotFoundError(f'CIFAR file missing: {path!r}; extract the whole python archive '
                                        f'(cifar-10-python.tar.gz / cifar-100-python.tar.gz) '
                                        f'into {data_root!r}') from None
            except Exception as e:
                raise BadInputError(f'CIFAR file {path!r} is truncated or not a CIFAR pickle ({type(e).__name__}: '
                                    f'{e}); extract the python archive again') from None

        if osp.exists(osp.join(data_root, 'batches.meta')):  # CIFAR-10
            files = [f'data_batch_{i}' for i in range(1, 6)] if split == 'train' else ['test_batch']
            key, meta = b'labels', load('batches.meta')[b'label_names']
        elif osp.exists(osp.join(data_root, 'meta')):  # CIFAR-100
            files = [split]
            key = b'fine_labels' if fine_labels else b'coarse_labels'
            meta = load('meta')[b'fine_label_names' if fine_labels else b'coarse_label_names']
        else:
            raise FileNotFoundError(f'{data_root!r} is not an extracted CIFAR python archive '
                                    f'(expected batches.meta or meta next to the batches)')
        data, labels = [], []
        for name in files:
            d = load(name)
            if not isinstance(d, dict) or b'data' not in d or key not in d:
                raise BadInputError(f'CIFAR file {osp.join(data_root, name)!r} lacks the "data" / {key.decode()!r} '
                                    f'entries of a CIFAR python pickle; extract the python archive again')
            arr = np.asarray(d[b'data'], dtype=np.uint8)
            if arr.size % 3072 or arr.size // 3072 != len(d[key]):
                raise BadInputError(f'CIFAR file {osp.join(data_root, name)!r}: {arr.size} bytes of images for '
                                    f'{len(d[key])} labels (expected 3072 per image); extract the python archive again')
            data.append(arr.reshape(-1, 3, 32, 32))
            labels += list(d[key])
        # CHW RGB -> HWC BGR, as LoadImageFromFile gives
        self.images = np.concatenate(data).transpose(0, 2, 3, 1)[..., ::-1].copy()
        self.samples = list(range(len(labels)))
        self.labels = np.asarray(labels, dtype=np.int64)
        super().__init__(pipeline, [c.decode() for c in meta])

    def get_info(self, idx: int) -> dict:
        img = self.images[idx]
        return {'img': img, 'img_shape': img.shape[:2], 'ori_shape': img.shape[:2], 'gt_label': int(self.labels[idx])}
