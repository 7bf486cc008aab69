"""Synthetic training batches in memory, in the data-sample format each task's loss expects.

For one-step model tests and ``tools/benchmark_train.py``: no files, deterministic (seeded), any
image size. A batch is the raw ``dict(inputs=[uint8 CHW], data_samples=[...])`` a dataloader would
yield; pass it to ``model.train_step`` or to ``model.data_preprocessor(batch, training=True)``.

* ``seg_batch``: mmseg ``SegDataSample`` with ``gt_sem_seg`` (class bands, a 255 ignore band);
* ``panoptic_batch``: mmdet ``DetDataSample`` with two thing instances (labels, bitmap masks, boxes)
  and ``gt_sem_seg`` (two stuff regions, a VOID band, the things painted in);
* ``synthetic_batch``: either one, chosen from a built model.
"""
from __future__ import annotations

from typing import Sequence, Tuple, Union

import numpy as np
import torch

__all__ = ['seg_batch', 'panoptic_batch', 'cls_batch', 'caption_batch', 'detection_batch', 'synthetic_batch']


def _hw(size: Union[int, Sequence[int]]) -> Tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _images(n: int, hw: Tuple[int, int], g: torch.Generator):
    return [torch.randint(0, 255, (3, *hw), generator=g, dtype=torch.uint8) for _ in range(n)]


def seg_batch(size=120, n: int = 2, num_classes: int = 5, seed: int = 0) -> dict:
    """``n`` random images with ``num_classes`` horizontal label bands and a 255 (ignore) band."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    h, w = _hw(size)
    g = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for img in _images(n, (h, w), g):
        inputs.append(img)
        band = torch.arange(h)[:, None].expand(h, w) * num_classes // h
        seg = ((band + int(torch.randint(0, num_classes, (1,), generator=g))) % num_classes).long()
        seg[h // 2:h // 2 + 2] = 255
        s = SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w)))
        s.gt_sem_seg = PixelData(data=seg[None])
        samples.append(s)
    return dict(inputs=inputs, data_samples=samples)


def panoptic_batch(size=96, n: int = 2, num_things: int = 4, num_stuff: int = 3, seed: int = 0) -> dict:
    """``n`` random images, each with two thing instances (labels 0 and min(2, things-1)) and two stuff
    regions (labels ``num_things`` and ``num_things + num_stuff - 1``) split by a 2-row VOID (255)
    band. The layout scales with the image (at 96 x 96: things at rows 5-30 / cols 10-45 and rows
    50-85 / cols 45-90)."""
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData, PixelData
    h, w = _hw(size)
    g = torch.Generator().manual_seed(seed)
    r, c = (lambda v: h * v // 96), (lambda v: w * v // 96)
    boxes = [(c(10), r(5), c(45), r(30)), (c(45), r(50), c(90), r(85))]  # x1, y1, x2, y2
    things = [0, min(2, num_things - 1)]
    stuff = [num_things, num_things + num_stuff - 1]
    inputs, samples = [], []
    for img in _images(n, (h, w), g):
        inputs.append(img)
        masks = np.zeros((2, h, w), np.uint8)
        for k, (x1, y1, x2, y2) in enumerate(boxes):
            masks[k, y1:y2, x1:x2] = 1
        seg = np.full((h, w), 255, np.int64)
        seg[:h // 2], seg[h // 2 + 2:] = stuff
        seg[masks[0] > 0], seg[masks[1] > 0] = things
        s = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), scale_factor=(1., 1.)))
        s.gt_instances = InstanceData(labels=torch.tensor(things), masks=BitmapMasks(masks, h, w),
                                      bboxes=torch.tensor(boxes, dtype=torch.float32))
        s.gt_sem_seg = PixelData(sem_seg=torch.from_numpy(seg)[None])
        samples.append(s)
    return dict(inputs=inputs, data_samples=samples)


def cls_batch(size=60, n: int = 2, num_classes: int = 4, seed: int = 0) -> dict:
    """``n`` random images with a ``gt_label`` each (classification, FlexiDistill)."""
    from mmengine.structures import BaseDataElement
    g = torch.Generator().manual_seed(seed)
    inputs = _images(n, _hw(size), g)
    labels = torch.randint(0, num_classes, (n,), generator=g)
    return dict(inputs=inputs, data_samples=[BaseDataElement(gt_label=labels[i]) for i in range(n)])


def caption_batch(size=60, n: int = 2, seed: int = 0) -> dict:
    """``n`` random images with a ``caption`` each (LiT)."""
    from mmengine.structures import BaseDataElement
    g = torch.Generator().manual_seed(seed)
    words = ('red', 'green', 'blue', 'yellow')
    caps = [f'a {words[i % 4]} circle above a {words[(i + 1) % 4]} square' for i in range(n)]
    return dict(inputs=_images(n, _hw(size), g), data_samples=[BaseDataElement(caption=c) for c in caps])


def detection_batch(size=96, n: int = 2, queries: Sequence[str] = ('red', 'green', 'blue', 'yellow'),
                    seed: int = 0) -> dict:
    """``n`` random images with two boxes each, labelled by index into the text ``queries`` (OWL-ViT)."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    h, w = _hw(size)
    g = torch.Generator().manual_seed(seed)
    boxes = torch.tensor([[w * .1, h * .1, w * .45, h * .4], [w * .5, h * .55, w * .9, h * .9]])
    samples = []
    for i in range(n):
        s = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), scale_factor=(1., 1.),
                                        text=tuple(queries)))
        s.gt_instances = InstanceData(bboxes=boxes.clone(), labels=torch.tensor([i % len(queries),
                                                                                (i + 1) % len(queries)]))
        samples.append(s)
    return dict(inputs=_images(n, (h, w), g), data_samples=samples)


def synthetic_batch(model: torch.nn.Module, size, n: int = 2, seed: int = 0) -> dict:
    """A batch ``model``'s loss accepts, chosen from what the model has (this module sits below ``models``):
    panoptic (``panoptic_head``: mmdet MaskFormer / Mask2Former), semantic segmentation (``decode_head``:
    mmseg), open-vocabulary detection (a ``text_tower`` and a ``box_head``: OWLViTDetector), LiT (a
    ``text_tower`` without one: captions), classification / FlexiDistill (``num_classes`` and ``head``)."""
    head = getattr(model, 'panoptic_head', None)
    if head is not None:
        return panoptic_batch(size, n, head.num_things_classes, head.num_stuff_classes, seed)
    head = getattr(model, 'decode_head', None)
    if head is not None:
        return seg_batch(size, n, head.num_classes, seed)
    if hasattr(model, 'text_tower') and hasattr(model, 'box_head'):
        return detection_batch(size, n, tuple(getattr(model, 'default_queries', None) or ('red', 'green', 'blue')),
                               seed)
    if hasattr(model, 'text_tower'):
        return caption_batch(size, n, seed)
    clf = getattr(model, 'student', model)
    if hasattr(clf, 'num_classes') and hasattr(clf, 'head'):
        return cls_batch(size, n, clf.num_classes, seed)
    raise NotImplementedError(
        f'no synthetic batch for {type(model).__name__}: supported are mmseg segmentors (decode_head), '
        f'mmdet panoptic models (panoptic_head), OWLViTDetector, LiT and classifiers; '
        f'add a builder in flexitransfer/datasets/synthetic.py')
