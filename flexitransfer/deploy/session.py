"""ONNX Runtime sessions, and an exported graph as a callable on torch tensors."""
from __future__ import annotations

import os
from typing import Optional

import numpy as np
import torch

from .export import read_meta, unflatten

PROVIDERS = ('CPUExecutionProvider',)


def make_session(path: str, threads: Optional[int] = None, providers=None, spin: bool = False):
    """An ONNX Runtime session with all graph optimisations, ``threads`` intra-op threads
    (default: as many as torch uses, so speed comparisons are like for like). ``spin=False``
    (default): the intra-op threads sleep when a call ends instead of busy-waiting for the next
    one; spinning threads take the CPU from whatever runs between calls (torch in an
    interleaved benchmark: 3-4x slower torch rows were measured; the data pipeline in a test loop).
    One inter-op thread (the graph is a chain), which does not spin either. This is the one place
    sessions are made: every runtime row, check and test loop uses these settings.

    Args:
        path (str): the .onnx file.
        threads (int, optional): intra-op threads. Default: ``torch.get_num_threads()``.
        providers (Sequence[str], optional): execution providers. Default: CPU.
        spin (bool): let idle threads busy-wait. Default: False.

    Returns:
        onnxruntime.InferenceSession: the session.

    Raises:
        FileNotFoundError: no such file.
    """
    import onnxruntime as ort
    if not os.path.isfile(path):
        raise FileNotFoundError(f'ONNX file not found: {path!r}; write one with tools/resize_deploy.py --onnx')
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = int(threads or torch.get_num_threads())
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    so.add_session_config_entry('session.intra_op.allow_spinning', '1' if spin else '0')
    so.add_session_config_entry('session.inter_op.allow_spinning', '1' if spin else '0')
    return ort.InferenceSession(path, so, providers=list(providers or PROVIDERS))


class OnnxFunction:
    """Callable ``fn(x) -> outputs``: an exported graph on torch tensors, outputs nested as in PyTorch.

    Args:
        path (str): an .onnx file written by :func:`export_onnx` (its metadata gives the nesting).
        threads (int, optional): intra-op threads (:func:`make_session`).
        providers (Sequence[str], optional): execution providers. Default: CPU.

    Calling it with a batch of another input size than the graph's raises ValueError.
    """

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

