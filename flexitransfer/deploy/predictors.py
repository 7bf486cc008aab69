"""Run an exported ONNX graph inside the task model, so its metric comes from the same code.

``tools/test.py`` builds an mmengine ``Runner`` from the config and runs the multi-patch
test loop: data pipeline, data preprocessor, the model's ``predict`` and the config's
evaluator. :func:`~flexitransfer.deploy.evaluate_onnx` does the same and, given an ONNX file, swaps
the exported part of the model for ONNX Runtime (:func:`install_onnx`); everything around it (pre-
processing, post-processing such as resizing segmentation logits, the LiT text tower, the
metric) stays the PyTorch code of the task.

- ``target='backbone'`` graphs replace the FlexiViT's forward: works for every task.
- ``target='tensor'`` graphs replace ``model(x, mode='tensor')``; turning that output into
  predictions is task specific and registered per model class (:func:`register_predictor`):
  classification, LiT and mmseg's ``EncoderDecoder`` are registered here.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Dict, Optional

import torch.nn as nn

from ..engine.patch_size import flexi_modules
from ..ops import to_2tuple
from .session import OnnxFunction

_PREDICTORS: Dict[str, Callable] = {}


def register_predictor(class_name: str):
    """Register ``fn(model, run, inputs, data_samples) -> predictions`` for a model class (by name; its
    subclasses use it too unless they register their own): how ``model.predict`` proceeds when
    ``run(inputs)`` stands for ``model(inputs, mode='tensor')``.

    Args:
        class_name (str): the model class's name (e.g. 'EncoderDecoder').

    Returns:
        Callable: a decorator that registers ``fn`` and returns it unchanged.
    """
    def deco(fn):
        _PREDICTORS[class_name] = fn
        return fn
    return deco


@contextlib.contextmanager
def _override(obj, name: str, fn):
    """Shadow ``obj.name`` by an instance attribute for the duration of the block."""
    had = name in vars(obj)
    old = vars(obj).get(name)
    setattr(obj, name, fn)
    try:
        yield
    finally:
        if had:
            setattr(obj, name, old)
        else:
            delattr(obj, name)


@register_predictor('FlexiImageClassifier')
def _cls_predict(model, run, inputs, data_samples):
    from ..models.classifiers.image_classifier import to_predictions
    return to_predictions(run(inputs), data_samples)


@register_predictor('LiT')
def _lit_predict(model, run, inputs, data_samples):
    # the image tower's output comes from the graph; captions still go through the text tower
    with _override(model, 'encode_image', run):
        return type(model).forward(model, inputs, data_samples, mode='predict')


@register_predictor('EncoderDecoder')
def _seg_predict(model, run, inputs, data_samples):
    # mmseg: encode_decode = decode_head.predict_by_feat(decode_head(extract_feat(x)), metas), and
    # mode='tensor' is decode_head(extract_feat(x)); whole and slide inference both go through it
    def encode_decode(x, metas):
        return model.decode_head.predict_by_feat(run(x), metas)
    with _override(model, 'encode_decode', encode_decode):
        return type(model).forward(model, inputs, data_samples, mode='predict')


def _lookup(model) -> Optional[Callable]:
    """The predictor of the model's class or of its nearest registered base class."""
    for cls in type(model).__mro__:
        if cls.__name__ in _PREDICTORS:
            return _PREDICTORS[cls.__name__]
    return None


def has_predictor(model) -> bool:
    """Whether a ``target='tensor'`` graph of ``model`` can be tested (else export ``target='backbone'``).

    Args:
        model (nn.Module): a task model.

    Returns:
        bool: a predictor is registered for its class or a base class.
    """
    return _lookup(model) is not None


def predictor_for(model) -> Callable:
    fn = _lookup(model)
    if fn is None:
        raise ValueError(f"no ONNX predictor for {type(model).__name__} graphs exported with target='tensor' (known: "
                         f"{sorted(_PREDICTORS)} and their subclasses): export with --onnx-target backbone, or "
                         f'register one with flexitransfer.deploy.register_predictor')
    return fn


def install_onnx(model: nn.Module, path: str, threads: Optional[int] = None, providers=None) -> OnnxFunction:
    """Make ``model`` run the exported part of itself in ONNX Runtime (in place); returns the runner.

    The FlexiViT stays in the model (patch-size bookkeeping, and its token grid is reported
    as usual), but its weights are no longer used for the exported part. The graph is
    static in patch and image size: running at another patch size raises.

    Args:
        model (nn.Module): the task model the graph was exported from (changed in place).
        path (str): the .onnx file (:func:`export_onnx`).
        threads (int, optional): ONNX Runtime's intra-op threads. Default: as many as torch uses.
        providers (Sequence[str], optional): ONNX Runtime execution providers. Default: CPU.

    Returns:
        OnnxFunction: the graph's runner (also ``model.onnx_function``).

    Raises:
        ValueError: a 'backbone' graph for a model without exactly one unlocked FlexiViT; a 'tensor' graph
            of another model class, or of a class without a predictor (:func:`register_predictor`).
    """
    fn = OnnxFunction(path, threads, providers)
    meta = fn.meta
    mods = flexi_modules(model)
    patch = to_2tuple(meta['patch_size']) if meta.get('patch_size') is not None else None

    def checked(x):
        for m in mods:
            if patch is not None and tuple(m.patch_size) != patch:
                raise ValueError(f'{path} is baked at patch {patch}, but the model was asked for patch '
                                 f'{tuple(m.patch_size)}: test it at --patch {patch[0]}, or export that patch')
        return fn(x)

    if meta['target'] == 'backbone':
        if len(mods) != 1:
            raise ValueError(f'{path} holds one backbone, the model has {len(mods)} unlocked FlexiViTs')
        bb = mods[0]

        def backbone_forward(x, patch_size=None):  # FlexiViT.forward's signature: an explicit patch is honoured
            if patch_size is not None and patch is not None and to_2tuple(patch_size) != patch:
                raise ValueError(f'{path} is baked at patch {patch}, but forward was called with patch_size='
                                 f'{patch_size}: call it at {patch[0]}, or export that patch')
            return checked(x)
        bb.forward = backbone_forward
    else:
        if meta.get('model') not in (None, type(model).__name__):
            raise ValueError(f"{path} was exported from a {meta['model']}, not a {type(model).__name__}")
        predict = predictor_for(model)
        cls_forward = type(model).forward

        def forward(inputs, data_samples=None, mode='tensor'):
            if mode == 'tensor':
                return checked(inputs)
            if mode == 'predict':
                return predict(model, checked, inputs, data_samples)
            return cls_forward(model, inputs, data_samples, mode=mode)
        model.forward = forward
    model.onnx_function = fn
    return fn

