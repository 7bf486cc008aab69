"""The task model at a ladder of patch sizes from one checkpoint: one baked copy per patch, warmed at start-up,
run in PyTorch or, exported once per patch, in ONNX Runtime."""
from __future__ import annotations

import os
import os.path as osp
import shutil
import tempfile
import time
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn

from ..apis import inference_model, init_model
from ..deploy.bake import bake_model, infer_img_size
from ..ops import to_2tuple
from .latency import LatencyModel

ImageLike = Union[str, np.ndarray]
RUNTIMES = ('torch', 'onnxruntime')


def compact_prediction(sample, classes: Optional[Sequence[str]] = None) -> dict:
    """A task's prediction in a compact form.

    Args:
        sample: a data sample from ``test_step`` / :func:`~flexitransfer.apis.inference_model`.
        classes (Sequence[str], optional): class names (``model.dataset_meta['classes']``).

    Returns:
        dict: classification: ``label``, ``score`` (and ``class``); segmentation: ``label_map`` (HxW
        int32 array); panoptic: ``panoptic_map`` (HxW int32: label + id * INSTANCE_OFFSET); detection:
        ``boxes`` (x1, y1, x2, y2), ``scores``, ``labels``.
    """
    def name(label: int) -> dict:
        return {'class': str(classes[label])} if classes is not None and 0 <= label < len(classes) else {}

    if 'pred_sem_seg' in sample:
        return {'label_map': sample.pred_sem_seg.data[0].cpu().numpy().astype(np.int32)}
    if 'pred_panoptic_seg' in sample:
        return {'panoptic_map': sample.pred_panoptic_seg.sem_seg[0].cpu().numpy().astype(np.int32)}
    if 'pred_instances' in sample:
        inst = sample.pred_instances
        return {'boxes': inst.bboxes.cpu().tolist(), 'scores': inst.scores.cpu().tolist(),
                'labels': inst.labels.cpu().tolist()}
    if 'pred_score' in sample:
        scores = sample.pred_score.float().cpu()
        label = int(scores.argmax())
        return {'label': label, 'score': float(scores[label]), **name(label)}
    raise TypeError(f'no prediction this server can return in {sorted(sample.keys())}')


class PatchLadder:
    """One model baked at several patch sizes (:func:`~flexitransfer.deploy.bake_model`: no resize work
    at serving time), predicting through :func:`~flexitransfer.apis.inference_model` (the config's test
    pipeline and the model's ``test_step``).

    ``runtime='onnxruntime'``: each baked copy is exported (:func:`~flexitransfer.deploy.export_onnx`, the
    task output when a predictor is registered for the model's class, else the backbone) and runs that graph
    in an ONNX Runtime session inside the task model (:func:`~flexitransfer.deploy.install_onnx`), as
    ``tools/resize_deploy.py --onnx`` and :func:`~flexitransfer.deploy.evaluate_onnx` do: pre- and
    post-processing stay the task's PyTorch code. The graphs are static in image size: the model input
    (after the test pipeline and the data preprocessor's padding) must be ``img_size``.

    Args:
        model (nn.Module): a task model from :func:`~flexitransfer.apis.init_model` (it keeps ``cfg``).
        patches (Sequence[int]): the patch sizes.
        img_size (int | tuple[int, int], optional): the input size the position grids are baked for;
            default the config's (:func:`~flexitransfer.deploy.infer_img_size`).
        warm (bool): run every patch once on a blank image now (first-call costs out of the way).
        runtime (str): 'torch' or 'onnxruntime'.
        onnx_dir (str, optional): where the graphs are written (``p<patch>.onnx``) and kept; default a
            temporary folder removed once the sessions hold the graphs.
        threads (int, optional): ONNX Runtime's intra-op threads; default as many as torch uses.
        exporter (str): ONNX exporter, 'torchscript' (quicker start-up) or 'dynamo'.

    Raises:
        ValueError: no patch, no input size, or an unknown runtime.
    """

    def __init__(self, model: nn.Module, patches: Sequence[int], img_size=None, warm: bool = True,
                 runtime: str = 'torch', onnx_dir: Optional[str] = None, threads: Optional[int] = None,
                 exporter: str = 'torchscript'):
        if not patches:
            raise ValueError('give at least one patch size')
        if runtime not in RUNTIMES:
            raise ValueError(f'runtime must be one of {RUNTIMES}, got {runtime!r}')
        img_size = img_size if img_size is not None else infer_img_size(model.cfg)
        if img_size is None:
            raise ValueError('the config names no input size (img_size, crop_size, data_preprocessor.size): '
                             'give img_size')
        self.img_size = to_2tuple(img_size)
        self.runtime = runtime
        self.models: Dict[int, nn.Module] = {int(p): bake_model(model, int(p), self.img_size).eval()
                                             for p in sorted(set(patches))}
        if runtime == 'onnxruntime':
            self._install_onnx(onnx_dir, threads, exporter)
        self.classes = (getattr(model, 'dataset_meta', None) or {}).get('classes')
        if warm:
            for p in self.patches:
                self.samples([self.blank()], p)

    def _install_onnx(self, onnx_dir: Optional[str], threads: Optional[int], exporter: str) -> None:
        """Export every baked model and run its graph in ONNX Runtime inside it."""
        from ..deploy import export_onnx, has_predictor, install_onnx
        folder = onnx_dir or tempfile.mkdtemp(prefix='flexi_ladder_')
        os.makedirs(folder, exist_ok=True)
        try:
            for p, baked in self.models.items():
                path = osp.join(folder, f'p{p}.onnx')
                export_onnx(baked, self.img_size, path, target='tensor' if has_predictor(baked) else 'backbone',
                            exporter=exporter, meta=dict(patch_size=[p, p]))
                install_onnx(baked, path, threads)  # the session holds the graph: the file may go
        finally:
            if onnx_dir is None:
                shutil.rmtree(folder, ignore_errors=True)

    @classmethod
    def from_checkpoint(cls, config, checkpoint: Optional[str], patches: Sequence[int],
                        device: Union[str, torch.device] = 'cpu', img_size=None, cfg_options: Optional[dict] = None,
                        warm: bool = True, runtime: str = 'torch', onnx_dir: Optional[str] = None,
                        threads: Optional[int] = None, exporter: str = 'torchscript') -> 'PatchLadder':
        """The ladder of a config and a checkpoint (loaded strictly by :func:`~flexitransfer.apis.init_model`).

        Args:
            config (str | Config): the model's config.
            checkpoint (str, optional): its weights (None: initialised as for training).
            patches (Sequence[int]): the patch sizes.
            device (str | torch.device): where the models run.
            img_size (int | tuple[int, int], optional): as in the constructor.
            cfg_options (dict, optional): merged into the config.
            warm (bool): as in the constructor.
            runtime (str): 'torch' or 'onnxruntime' (as in the constructor).
            onnx_dir (str, optional): as in the constructor.
            threads (int, optional): as in the constructor.
            exporter (str): as in the constructor.

        Returns:
            PatchLadder: the ladder.
        """
        model = init_model(config, checkpoint, device=device, cfg_options=cfg_options)
        return cls(model, patches, img_size=img_size, warm=warm, runtime=runtime, onnx_dir=onnx_dir,
                   threads=threads, exporter=exporter)

    @property
    def patches(self) -> List[int]:
        """The patch sizes, finest first."""
        return sorted(self.models)

    def blank(self) -> np.ndarray:
        """A mid-grey BGR image of the baked input size (warm-up and timing input)."""
        return np.full((*self.img_size, 3), 127, np.uint8)

    def _model(self, patch: int) -> nn.Module:
        if int(patch) not in self.models:
            raise ValueError(f'patch {patch} is not on the ladder {self.patches}')
        return self.models[int(patch)]

    def samples(self, images: Sequence[ImageLike], patch: int) -> list:
        """The model's data samples for ``images`` (BGR arrays or files) at ``patch``, in one batch.

        Args:
            images (Sequence[str | np.ndarray]): the images.
            patch (int): a patch of the ladder.

        Returns:
            list: one data sample per image.
        """
        images = list(images)
        return inference_model(self._model(patch), images, batch_size=max(1, len(images)))

    def predict(self, images: Sequence[ImageLike], patch: int) -> List[dict]:
        """Compact predictions (:func:`compact_prediction`) for ``images`` at ``patch``, in one batch.

        Args:
            images (Sequence[str | np.ndarray]): BGR arrays (as ``cv2.imread``) or image files.
            patch (int): a patch of the ladder.

        Returns:
            list[dict]: one prediction per image.
        """
        return [compact_prediction(s, self.classes) for s in self.samples(images, patch)]

    def measure(self, latency: Optional[LatencyModel] = None, batch_sizes: Sequence[int] = (1, 8),
                repeats: int = 3, clock: Optional[Callable[[], float]] = None) -> LatencyModel:
        """Service time of every patch at every batch size, on blank images of the baked size.

        Args:
            latency (LatencyModel, optional): the model to fill; default a new one.
            batch_sizes (Sequence[int]): the batch sizes timed.
            repeats (int): timed runs per point (the median is kept).
            clock (Callable[[], float], optional): seconds; default ``time.perf_counter``.

        Returns:
            LatencyModel: the filled model.
        """
        latency = latency or LatencyModel()
        img = self.blank()
        return latency.measure(lambda p, b: self.predict([img] * b, p), self.patches, batch_sizes,
                               repeats=repeats, clock=clock or time.perf_counter)
