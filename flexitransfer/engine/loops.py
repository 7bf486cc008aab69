"""Validation / test loops that evaluate once per patch size.

Metrics come back prefixed (``p16/mIoU``); the first patch size's metrics are
also reported without prefix so ``save_best='mIoU'`` and friends keep working.
A table (patch, tokens, metrics) is printed at the end.
"""
from __future__ import annotations

import numbers
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.registry import LOOPS
from mmengine.runner import TestLoop, ValLoop

from ..evaluation.main_metric import percent_evaluator
from ..ops import to_2tuple
from .patch_size import flexi_modules, get_patch_size, set_patch_size


def _fmt_patch(p) -> str:
    p = to_2tuple(p)
    return str(p[0]) if p[0] == p[1] else f'{p[0]}x{p[1]}'


def format_patch_table(rows: List[dict]) -> str:
    """Markdown table of per-patch metrics: patch, tokens, every numeric metric."""
    if not rows:
        return ''
    keys = [k for k in rows[0] if k not in ('patch', 'tokens') and isinstance(rows[0][k], numbers.Real)]
    head = ['patch', 'tokens'] + keys
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for r in rows:
        cells = [str(r['patch']), str(r['tokens'])] + [f'{float(r[k]):.2f}' for k in keys]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def _image_hw(args, kwargs, key: str) -> Optional[Tuple[int, int]]:
    x = kwargs.get(key, args[0] if args else None)
    return tuple(x.shape[-2:]) if isinstance(x, torch.Tensor) and x.ndim == 4 else None


class SeenGrid:
    """``with SeenGrid(model, backbone) as seen: ...``, then ``seen.grid``: the token grid of ``backbone``'s
    last forward in the block, from its input and patch (the loops run uniform patches). Where the backbone
    never ran as itself (a whole-model ONNX graph in the task model's place), the grid of the task model's
    last input at the backbone's patch; None when nothing ran.

    Args:
        model (nn.Module): the task model (wrapped or not).
        backbone (FlexiViT): the FlexiViT whose grid is reported.
    """

    def __init__(self, model, backbone):
        self.task = model.module if is_model_wrapper(model) else model
        self.backbone = backbone
        self.backbone_grid: Optional[Tuple[int, int]] = None
        self.input_hw: Optional[Tuple[int, int]] = None
        self._handles: list = []

    def _on_backbone(self, m, args, kwargs):
        hw = _image_hw(args, kwargs, 'x')
        if hw is not None:
            self.backbone_grid = m.grid_size(hw, kwargs.get('patch_size', args[1] if len(args) > 1 else None))

    def _on_model(self, m, args, kwargs):
        self.input_hw = _image_hw(args, kwargs, 'inputs') or self.input_hw

    def __enter__(self) -> 'SeenGrid':
        self._handles = [self.backbone.register_forward_pre_hook(self._on_backbone, with_kwargs=True),
                         self.task.register_forward_pre_hook(self._on_model, with_kwargs=True)]
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    @property
    def grid(self) -> Optional[Tuple[int, int]]:
        if self.backbone_grid is not None or self.input_hw is None:
            return self.backbone_grid
        return self.backbone.grid_size(self.input_hw)


class _MultiPatchMixin:
    """Shared body of the two loops; ``stage`` is 'val' or 'test' (hook names, loss buffer)."""
    stage: str

    def __init__(self, runner, dataloader, evaluator, patch_sizes: Optional[Sequence] = None, fp16: bool = False):
        super().__init__(runner, dataloader, evaluator, fp16)
        percent_evaluator(self.evaluator, runner.logger)  # one unit in training's validation and in testing
        self.patch_sizes = list(patch_sizes) if patch_sizes else None
        self.last_table: List[dict] = []

    def _run_once(self) -> Dict[str, float]:
        getattr(self, f'{self.stage}_loss').clear()
        for idx, data_batch in enumerate(self.dataloader):
            self.run_iter(idx, data_batch)
        return self.evaluator.evaluate(len(self.dataloader.dataset))

    def run(self) -> dict:
        self.runner.call_hook(f'before_{self.stage}')
        self.runner.call_hook(f'before_{self.stage}_epoch')
        self.runner.model.eval()
        metrics = self._run_patches(self.runner.model)
        self.runner.call_hook(f'after_{self.stage}_epoch', metrics=metrics)
        self.runner.call_hook(f'after_{self.stage}')
        return metrics

    def _run_patches(self, model) -> Dict[str, float]:
        if not self.patch_sizes:
            return self._run_once()
        mods = flexi_modules(model)
        old = get_patch_size(model)
        all_metrics: Dict[str, float] = {}
        self.last_table = []
        try:
            for i, p in enumerate(self.patch_sizes):
                set_patch_size(model, p)
                with SeenGrid(model, mods[0]) as seen:
                    metrics = self._run_once()
                grid = seen.grid
                tokens = grid[0] * grid[1] if grid else -1
                self.last_table.append({'patch': _fmt_patch(p), 'tokens': tokens, **metrics})
                all_metrics.update({f'p{_fmt_patch(p)}/{k}': v for k, v in metrics.items()})
                if i == 0:
                    all_metrics.update(metrics)
        finally:
            if old is not None:
                set_patch_size(model, old)
        print_log('\n' + format_patch_table(self.last_table), logger='current')
        return all_metrics


@LOOPS.register_module()
class MultiPatchValLoop(_MultiPatchMixin, ValLoop):
    """``ValLoop`` that evaluates at each of ``patch_sizes`` (None: the model's own)."""
    stage = 'val'


@LOOPS.register_module()
class MultiPatchTestLoop(_MultiPatchMixin, TestLoop):
    """``TestLoop`` that evaluates at each of ``patch_sizes`` (None: the model's own)."""
    stage = 'test'
