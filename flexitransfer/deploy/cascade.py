"""An anytime cascade (``flexitransfer.adaptive.FlexiCascade``) deployed through the ONNX path: one
graph per stage, each the model baked at that stage's patch (``bake_model`` + ``export_onnx``), and a
JSON beside them with the stages, thresholds and score. ``OnnxCascade`` runs it in ONNX Runtime with
the same stopping rule (images that stop leave the batch).

Classifiers export their logits (``target='tensor'``). A LiT zero-shot classifier exports its image
embedding; the class embeddings and the logit scale go beside the graphs (``zero_shot.npz``) and the
logits are ``scale * embedding @ classes.T``, as in PyTorch.
"""
from __future__ import annotations

import json
import os
import os.path as osp
from typing import Optional, Sequence

import numpy as np
import torch

from ..adaptive.cascade import FlexiCascade
from ..engine.patch_size import set_patch_size
from ..models.retrieval.lit import LiT
from .bake import bake_model
from .export import export_onnx
from .session import OnnxFunction

CASCADE_JSON = 'cascade.json'


def export_cascade_onnx(model: torch.nn.Module, patch_sizes: Sequence[int], thresholds: Sequence[float], img_size,
                        out_dir: str, score: str = 'maxprob', exporter: str = 'dynamo') -> str:
    """Write ``out_dir/stage{i}_p{p}.onnx`` per stage and ``out_dir/cascade.json``; returns the JSON path.

    Args:
        model (nn.Module): a classifier, or a LiT zero-shot classifier (its class embeddings go in
            ``out_dir/zero_shot.npz``).
        patch_sizes (Sequence[int]): stage patch sizes, coarse to fine.
        thresholds (Sequence[float]): one per stage but the last (see ``FlexiCascade``).
        img_size (int | tuple[int, int]): the input size (H, W) the graphs are exported for.
        out_dir (str): output folder (created).
        score (str): 'maxprob' | 'margin'. Default: 'maxprob'.
        exporter (str): 'dynamo' or 'torchscript'. Default: 'dynamo'.

    Returns:
        str: the path of ``cascade.json`` (give it, or ``out_dir``, to :class:`OnnxCascade`).

    Raises:
        ValueError: not one threshold per stage but the last.
    """
    if len(thresholds) != len(patch_sizes) - 1:
        raise ValueError(f'{len(patch_sizes)} stages need {len(patch_sizes) - 1} thresholds, got {len(thresholds)}')
    os.makedirs(out_dir, exist_ok=True)
    h, w = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    lit = isinstance(model, LiT)
    graphs = []
    for i, p in enumerate(patch_sizes):
        set_patch_size(model, p)
        baked = bake_model(model, p, (h, w)).eval()
        path = osp.join(out_dir, f'stage{i}_p{p}.onnx')
        export_onnx(baked, (h, w), path, target='tensor', exporter=exporter, meta=dict(patch_size=[p, p]),
                    in_channels=int(getattr(model.backbone, 'in_channels', 3)))
        graphs.append(osp.basename(path))
    meta = dict(patch_sizes=[int(p) for p in patch_sizes], thresholds=[float(t) for t in thresholds], score=score,
                graphs=graphs, img_size=[h, w], head='zero_shot' if lit else 'logits')
    if lit:
        with torch.no_grad():
            np.savez(osp.join(out_dir, 'zero_shot.npz'), classes=model.zero_shot_weights().float().cpu().numpy(),
                     scale=model.logit_scale.exp().float().cpu().numpy())
    path = osp.join(out_dir, CASCADE_JSON)
    with open(path, 'w') as f:
        json.dump(meta, f, indent=2)
    return path


class OnnxCascade:
    """The cascade of :func:`export_cascade_onnx` in ONNX Runtime: ``cascade(x) -> (logits, stage)``.

    Args:
        path (str): ``cascade.json`` or the folder holding it.
        threads (int, optional): ONNX Runtime's intra-op threads per stage. Default: as many as torch uses.

    Raises:
        FileNotFoundError: no cascade description at ``path``.
    """

    def __init__(self, path: str, threads: Optional[int] = None):
        path = osp.join(path, CASCADE_JSON) if osp.isdir(path) else path
        if not osp.isfile(path):
            raise FileNotFoundError(f'cascade description not found: {path!r}; export one with '
                                    f'tools/cascade.py CONFIG CKPT --patch ... --onnx')
        with open(path) as f:
            self.meta = json.load(f)
        root = osp.dirname(path)
        self.stages = {int(p): OnnxFunction(osp.join(root, g), threads)
                       for p, g in zip(self.meta['patch_sizes'], self.meta['graphs'])}
        self.head = None
        if self.meta.get('head') == 'zero_shot':
            zs = np.load(osp.join(root, 'zero_shot.npz'))
            self.head = (torch.from_numpy(zs['classes']), torch.from_numpy(zs['scale']))
        self._cascade = FlexiCascade(torch.nn.Identity(), self.meta['patch_sizes'], self.meta['thresholds'],
                                     self.meta['score'], logits_fn=self._logits)

    def _logits(self, x: torch.Tensor, p: int) -> torch.Tensor:
        out = self.stages[int(p)](x)
        if self.head is not None:
            classes, scale = self.head
            out = scale * out @ classes.T
        return out

    def __call__(self, x: torch.Tensor):
        return self._cascade(x)


def check_cascade_onnx(model: torch.nn.Module, patch_sizes: Sequence[int], thresholds: Sequence[float], score: str,
                       x: torch.Tensor, out_dir: str, exporter: str = 'dynamo'):
    """Export the cascade and run both on ``x``: (max abs diff of the logits, fraction with the same stage).

    Args:
        model, patch_sizes, thresholds, score, exporter: as :func:`export_cascade_onnx`'s.
        x (torch.Tensor): an input batch (its size is the export size).
        out_dir (str): where the graphs go.

    Returns:
        tuple[float, float]: max abs diff of the logits over the images that stop at the same stage
        in both, and the fraction of such images.
    """
    path = export_cascade_onnx(model, patch_sizes, thresholds, tuple(x.shape[-2:]), out_dir, score, exporter)
    ref_logits, ref_stage = FlexiCascade(model, patch_sizes, thresholds, score)(x)
    logits, stage = OnnxCascade(path)(x.cpu())
    both = stage.cpu() == ref_stage.cpu()
    diff = (logits.cpu()[both] - ref_logits.cpu()[both]).abs().max().item() if both.any() else float('nan')
    return diff, both.float().mean().item()
