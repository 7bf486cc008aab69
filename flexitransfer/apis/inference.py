"""Inference on image files or arrays, every task, through the config's own test pipeline."""
from __future__ import annotations

from typing import List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn
from mmengine.dataset import Compose, pseudo_collate

from ..engine.patch_size import get_patch_size, set_patch_size
from ..models.retrieval.lit import LiT

ImageLike = Union[str, np.ndarray]


def _is_loader(t: dict) -> bool:
    return str(t.get('type', '')).split('.')[-1] in ('LoadImageFromFile', 'StrictLoadImageFromFile',
                                                      'LoadImageFromNDArray', 'InferencerLoader')


def _is_annotation(t: dict) -> bool:
    return 'Annotations' in str(t.get('type', ''))


def test_pipeline(cfg, from_array: bool = False) -> Compose:
    """The config's test pipeline without annotation loading (and without the file loader for arrays).

    Args:
        cfg (mmengine.Config): the model's config (``test_dataloader.dataset.pipeline`` is used).
        from_array (bool): the images come as arrays, not files: drop the loading step. Default: False.

    Returns:
        mmengine.dataset.Compose: the pipeline, one image's dict in, the model's packed inputs out.
    """
    steps = [dict(t) for t in cfg.test_dataloader.dataset.pipeline if not _is_annotation(t)]
    if from_array:
        steps = [t for t in steps if not _is_loader(t)]
    return Compose(steps)


def _as_bgr(img: np.ndarray, index: int) -> np.ndarray:
    """An image array as the file loader reads a file (``cv2.IMREAD_COLOR``): 3 channels, 8 bits for 16-bit
    input; grayscale (HxW, HxWx1) repeated, the alpha channel of BGRA dropped."""
    if img.ndim not in (2, 3):
        raise ValueError(f'image {index}: an array must be HxW or HxWxC (BGR, as cv2.imread), got {img.shape}')
    if img.ndim == 3 and img.shape[2] not in (1, 3, 4):
        raise ValueError(f'image {index}: {img.shape[2]} channels; give 1 (gray), 3 (BGR) or 4 (BGRA), got {img.shape}')
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    if img.ndim == 2 or img.shape[2] == 1:
        return np.ascontiguousarray(np.repeat(img.reshape(*img.shape[:2], 1), 3, axis=2))
    return np.ascontiguousarray(img[..., :3]) if img.shape[2] == 4 else img


def _inputs(img: ImageLike, index: int) -> dict:
    if isinstance(img, np.ndarray):
        img = _as_bgr(img, index)
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

    Args:
        model (nn.Module): a task model from :func:`init_model` (``model.cfg`` set).
        images (str | np.ndarray | Sequence): an image file or array, or a list of them.
        patch_size (int | tuple[int, int], optional): the patch for this call. Default: the model's.
        texts (Sequence[str], optional): open-vocabulary queries (detection) or texts to score (LiT).
        batch_size (int): images per forward. Default: 8.

    Returns:
        The task's data sample for one image, or a list of them (one per image) for a list.

    Raises:
        ValueError: no images, or an array that is not HxW / HxWxC.
        FileNotFoundError: an image file that does not exist.
        TypeError: an image that is neither a path nor an array.
    """
    single = isinstance(images, (str, np.ndarray))
    imgs = [images] if single else list(images)
    if not imgs:
        raise ValueError('no images given')
    cfg = model.cfg
    lit = isinstance(model, LiT)
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
                if texts is not None and not lit:
                    data['text'] = tuple(texts)
                arr = isinstance(img, np.ndarray)
                if arr not in pipes:
                    pipes[arr] = test_pipeline(cfg, from_array=arr)
                batch.append(pipes[arr](data))
            with torch.no_grad():
                if lit and texts is not None:
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
