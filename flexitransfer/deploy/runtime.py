"""Run an exported ONNX graph inside the task model, so its metric comes from the same code.

``tools/test.py`` builds an mmengine ``Runner`` from the config and runs the multi-patch
test loop: data pipeline, data preprocessor, the model's ``predict`` and the config's
evaluator. :func:`build_runner` does the same and, given an ONNX file, swaps the exported
part of the model for ONNX Runtime (:func:`install_onnx`); everything around it (pre-
processing, post-processing such as resizing segmentation logits, the LiT text tower, the
metric) stays the PyTorch code of the task.

- ``target='backbone'`` graphs replace the FlexiViT's forward: works for every task.
- ``target='tensor'`` graphs replace ``model(x, mode='tensor')``; turning that output into
  predictions is task specific and registered per model class (:func:`register_predictor`):
  classification, LiT and mmseg's ``EncoderDecoder`` are registered here.
"""
from __future__ import annotations

import contextlib
import copy
import numbers
import os
import tempfile
import uuid
from typing import Callable, Dict, Optional

import numpy as np
import torch
import torch.nn as nn

from ..engine.patch import flexi_modules
from ..ops import to_2tuple
from .onnx import read_meta, unflatten

PROVIDERS = ('CPUExecutionProvider',)


def make_session(path: str, threads: Optional[int] = None, providers=None, spin: bool = False):
    """An ONNX Runtime session with all graph optimisations, ``threads`` intra-op threads
    (default: as many as torch uses, so speed comparisons are like for like). ``spin=False``
    (default): the intra-op threads sleep when a call ends instead of busy-waiting for the next
    one; spinning threads take the CPU from whatever runs between calls (torch in an
    interleaved benchmark: 3-4x slower torch rows were measured; the data pipeline in a test loop)."""
    import onnxruntime as ort
    if not os.path.isfile(path):
        raise FileNotFoundError(f'ONNX file not found: {path!r}; write one with tools/resize_deploy.py --onnx')
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = int(threads or torch.get_num_threads())
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    so.add_session_config_entry('session.intra_op.allow_spinning', '1' if spin else '0')
    return ort.InferenceSession(path, so, providers=list(providers or PROVIDERS))


class OnnxFunction:
    """Callable ``fn(x) -> outputs``: an exported graph on torch tensors, outputs nested as in PyTorch."""

    def __init__(self, path: str, threads: Optional[int] = None, providers=None):
        self.path = path
        self.meta = read_meta(path)
        self.session = make_session(path, threads, providers)
        self.input_name = self.session.get_inputs()[0].name
        self.expected = (int(self.meta['in_channels']), *map(int, self.meta['img_size']))

    def run_numpy(self, x: np.ndarray):
        return self.session.run(None, {self.input_name: x})

    def __call__(self, x: torch.Tensor):
        if tuple(x.shape[1:]) != self.expected:
            c, h, w = self.expected
            raise ValueError(f'{self.path} was exported for inputs (B, {c}, {h}, {w}), got {tuple(x.shape)}: resize/'
                             f'pad the inputs to {h}x{w} (test pipeline / crop size), or export again with '
                             f'tools/resize_deploy.py --img-size {x.shape[-2]} {x.shape[-1]} --onnx')
        outs = self.run_numpy(np.ascontiguousarray(x.detach().cpu().float().numpy()))
        return unflatten([torch.from_numpy(o).to(x.device) for o in outs], self.meta['outputs'])


# ------------------------------------------------------------------ tensor-mode predictors
_PREDICTORS: Dict[str, Callable] = {}


def register_predictor(class_name: str):
    """Register ``fn(model, run, inputs, data_samples) -> predictions`` for a model class (exact name):
    how ``model.predict`` proceeds when ``run(inputs)`` stands for ``model(inputs, mode='tensor')``."""
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


def has_predictor(model) -> bool:
    """Whether a ``target='tensor'`` graph of ``model`` can be tested (else export ``target='backbone'``)."""
    return type(model).__name__ in _PREDICTORS


def predictor_for(model) -> Callable:
    name = type(model).__name__
    if name not in _PREDICTORS:
        raise ValueError(f"no ONNX predictor for {name} graphs exported with target='tensor' (known: "
                         f"{sorted(_PREDICTORS)}): export with --onnx-target backbone, or register one with "
                         f'flexitransfer.deploy.runtime.register_predictor')
    return _PREDICTORS[name]


# ------------------------------------------------------------------ install into a model
def install_onnx(model: nn.Module, path: str, threads: Optional[int] = None, providers=None) -> OnnxFunction:
    """Make ``model`` run the exported part of itself in ONNX Runtime (in place); returns the runner.

    The FlexiViT stays in the model (patch-size bookkeeping, and its token grid is reported
    as usual), but its weights are no longer used for the exported part. The graph is
    static in patch and image size: running at another patch size raises.
    """
    fn = OnnxFunction(path, threads, providers)
    meta = fn.meta
    mods = flexi_modules(model)
    patch = to_2tuple(meta['patch_size']) if meta.get('patch_size') is not None else None
    grid = (meta['img_size'][0] // patch[0], meta['img_size'][1] // patch[1]) if patch else None

    def checked(x):
        for m in mods:
            if patch is not None and tuple(m.patch_size) != patch:
                raise ValueError(f'{path} is baked at patch {patch}, but the model was asked for patch '
                                 f'{tuple(m.patch_size)}: test it at --patch {patch[0]}, or export that patch')
            if grid is not None:
                m.last_grid = grid
        return fn(x)

    if meta['target'] == 'backbone':
        if len(mods) != 1:
            raise ValueError(f'{path} holds one backbone, the model has {len(mods)} unlocked FlexiViTs')
        bb = mods[0]
        bb.forward = lambda x, patch_size=None: checked(x)
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


# ------------------------------------------------------------------ the test-time runner
def prepare_test_cfg(cfg, checkpoint: str, patch_sizes=None, work_dir: Optional[str] = None, data_root=None,
                     log_level: Optional[str] = None):
    """The config as ``tools/test.py`` prepares it: multi-patch test loop, checkpoint, no pretrained loading."""
    from .bake import walk_backbone_cfgs
    cfg = copy.deepcopy(cfg)
    cfg.work_dir = work_dir or tempfile.mkdtemp(prefix='ft_test_')
    test_cfg = dict(cfg.get('test_cfg') or {})
    if test_cfg.get('type', 'TestLoop') in ('TestLoop', None):
        test_cfg['type'] = 'MultiPatchTestLoop'
    if patch_sizes:
        test_cfg['patch_sizes'] = list(patch_sizes)
    cfg.test_cfg = test_cfg
    cfg.load_from, cfg.resume = checkpoint, False
    for _, bb in walk_backbone_cfgs(cfg.model):
        bb['pretrained'] = None
    if data_root:
        cfg.test_dataloader.dataset.data_root = data_root
    if log_level:
        cfg.log_level = log_level
    if isinstance(cfg.get('visualizer'), dict):  # a named visualizer is a process-wide singleton: one per runner
        cfg.visualizer['name'] = f"{cfg.visualizer.get('name', 'visualizer')}_{uuid.uuid4().hex[:8]}"
    return cfg


def build_runner(cfg, checkpoint: str, onnx_path: Optional[str] = None, patch_sizes=None,
                 work_dir: Optional[str] = None, data_root=None, threads: Optional[int] = None,
                 log_level: Optional[str] = None):
    """An mmengine Runner as ``tools/test.py`` builds it, checkpoint loaded, the ONNX graph installed if given."""
    from mmengine.runner import Runner
    runner = Runner.from_cfg(prepare_test_cfg(cfg, checkpoint, patch_sizes, work_dir, data_root, log_level))
    runner.load_or_resume()
    if onnx_path:
        install_onnx(runner.model, onnx_path, threads)
    return runner


def test_inputs(cfg, model: nn.Module, img_size, max_images: int = 4) -> torch.Tensor:
    """Real model inputs: the first test images after the model's data preprocessor, at ``img_size``
    (larger ones are cropped top-left, as a sliding window's first crop; smaller ones resized)."""
    import torch.nn.functional as F
    from mmengine.runner import Runner
    dl = copy.deepcopy(cfg.test_dataloader)
    dl['batch_size'] = max_images
    dl['num_workers'] = 0
    dl['persistent_workers'] = False
    batch = next(iter(Runner.build_dataloader(dl)))
    with torch.no_grad():
        x = model.data_preprocessor(batch, False)['inputs']
    h, w = to_2tuple(img_size)
    if x.shape[-2] >= h and x.shape[-1] >= w:
        return x[..., :h, :w].contiguous()
    return F.interpolate(x, size=(h, w), mode='bilinear', align_corners=False)


def evaluate(cfg, checkpoint: str, onnx_path: Optional[str] = None, patch_sizes=None, data_root=None,
             threads: Optional[int] = None, log_level: str = 'WARNING') -> dict:
    """Test-set metrics of the PyTorch model, or of the ONNX graph inside it (as ``runner.test()`` returns them)."""
    with tempfile.TemporaryDirectory(prefix='ft_eval_') as work_dir:
        runner = build_runner(cfg, checkpoint, onnx_path, patch_sizes, work_dir, data_root, threads, log_level)
        metrics = runner.test()
    return {k: float(v) for k, v in metrics.items() if isinstance(v, numbers.Real)}
