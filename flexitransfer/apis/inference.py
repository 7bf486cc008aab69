"""Inference on image files or arrays, every task, through the config's own test pipeline."""
from __future__ import annotations

from typing import List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn
from mmengine.dataset import Compose, pseudo_collate

from ..engine.patch_size import get_patch_size, set_patch_size

ImageLike = Union[str, np.ndarray]


def _is_loader(t: dict) -> bool:
    return str(t.get('type', '')).split('.')[-1] in ('LoadImageFromFile', 'StrictLoadImageFromFile',
                                                      'LoadImageFromNDArray', 'InferencerLoader')


def _is_annotation(t: dict) -> bool:
    return 'Annotations' in str(t.get('type', ''))


def test_pipeline(cfg, from_array: bool = False) -> Compose:
    """The config's test pipeline without annotation loading (and without the file loader for arrays)."""
    steps = [dict(t) for t in cfg.test_dataloader.dataset.pipeline if not _is_annotation(t)]
    if from_array:
        steps = [t for t in steps if not _is_loader(t)]
    return Compose(steps)


def _inputs(img: ImageLike, index: int) -> dict:
    if isinstance(img, np.ndarray):
        if img.ndim not in (2, 3):
            raise ValueError(f'image {index}: an array must be HxW or HxWxC (BGR, as cv2.imread), got {img.shape}')
        return dict(img=img, img_path=None, img_id=index, img_shape=img.shape[:2], ori_shape=img.shape[:2])
    if not isinstance(img, str):
        raise TypeError(f'image {index}: give a file path or a numpy array, got {type(img).__name__}')
    import os.path as osp
    if not osp.isfile(img):
        raise FileNotFoundError(f'image file not found: {img!r}')
    return dict(img_path=img, img_id=index)


def inference_model(model: nn.Module, images: Union[ImageLike, Sequence[ImageLike]], patch_size=None,
                    texts: Optional[Sequence[str]] = None, batch_size: int = 8):
    """Predictions of ``model`` (from :func:`init_model`) on image files or arrays (BGR HxWxC, as
    ``cv2.imread``), through the config's test pipeline and the model's ``test_step``, as the test
    loop runs them. Returns the task's data samples (one, or a list for a list): ``pred_sem_seg``
    (segmentation), ``pred_panoptic_seg`` (panoptic), ``pred_instances`` with labels indexing ``texts``
    (open-vocabulary detection: ``texts`` are the queries), ``pred_score`` / ``pred_label``
    (classification), ``img_emb`` (LiT; with ``texts``, ``txt_embs`` and ``pred_score`` over them).
    ``patch_size`` runs this call at that patch, then restores the model's own.
    """
    single = isinstance(images, (str, np.ndarray))
    imgs = [images] if single else list(images)
    if not imgs:
        raise ValueError('no images given')
    cfg = model.cfg
    kind = type(model).__name__
    pipes = {}
    old = get_patch_size(model)
    if patch_size is not None:
        set_patch_size(model, patch_size)
    out = []
    try:
        for start in range(0, len(imgs), batch_size):
            batch = []
            for i, img in enumerate(imgs[start:start + batch_size], start):
                data = _inputs(img, i)
                if texts is not None and kind != 'LiT':
                    data['text'] = tuple(texts)
                arr = isinstance(img, np.ndarray)
                if arr not in pipes:
                    pipes[arr] = test_pipeline(cfg, from_array=arr)
                batch.append(pipes[arr](data))
            with torch.no_grad():
                if kind == 'LiT' and texts is not None:
                    out += _lit_with_texts(model, pseudo_collate(batch), list(texts))
                else:
                    out += model.test_step(pseudo_collate(batch))
    finally:
        if patch_size is not None and old is not None:
            set_patch_size(model, old)
    return out[0] if single else out


def _lit_with_texts(model, batch, texts: List[str]):
    """LiT: image embeddings, the texts' embeddings and the image's softmax over the texts (zero-shot)."""
    data = model.data_preprocessor(batch, False)
    samples = model(data['inputs'], data['data_samples'], mode='predict')
    txt = model.encode_text(texts)
    scale = model.logit_scale.exp()
    for s in samples:
        s.txt_embs = txt
        s.pred_score = (scale * s.img_emb @ txt.T).softmax(-1)
        s.pred_label = s.pred_score.argmax()
    return samples
