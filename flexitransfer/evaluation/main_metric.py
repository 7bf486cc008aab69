"""The headline metric of a task's metrics dict (one list for every report: benchmark, deploy) and the one
unit of every report (percent), in training's validation as in testing."""
from __future__ import annotations

import contextlib
import io
import logging
import numbers
import re
from typing import Iterable

#: in priority order; matched as the whole key or its last '/'-part (e.g. 'p16/mIoU', 'coco/bbox_mAP')
METRIC_PRIORITY = ('mIoU', 'top1', 'mean_R@1', 'PQ', 'bbox_mAP', 'AP')


def main_metric(keys: Iterable) -> str:
    """The first key of ``keys`` (a dict's keys or a list) whose name is in :data:`METRIC_PRIORITY`
    (task prefixes allowed), else the first numeric-looking key other than patch / tokens."""
    keys = list(keys)
    for m in METRIC_PRIORITY:
        for k in keys:
            if str(k).split('/')[-1] == m or str(k).split('/')[-1].endswith('_' + m):
                return k
    rest = [k for k in keys if k not in ('patch', 'tokens')]
    if not rest:
        raise ValueError(f'no metric among {keys}')
    return rest[0]


#: metrics that mmdet's CocoMetric and the LVIS metric report as fractions (box / mask AP, AR, per-class
#: precision); every report here (test table, --out-json, benchmark, deploy) gives them x 100, as mIoU,
#: PQ, top-1 and recall already are
FRACTION_NAMES = re.compile(r'^((bbox|segm)_mAP(_\w+)?|.+_precision|AR@\d+|AR_\w+)$')
LVIS_NAMES = re.compile(r'^AP(50|75|s|m|l|r|c|f)?$')


def is_fraction_metric(key) -> bool:
    parts = str(key).split('/')
    name, prefix = parts[-1], parts[-2] if len(parts) > 1 else ''
    return bool(FRACTION_NAMES.match(name)) or (prefix == 'lvis' and bool(LVIS_NAMES.match(name)))


def to_percent(metrics: dict) -> dict:
    """``metrics`` with the fraction-valued ones (:func:`is_fraction_metric`) x 100 (mmdet rounds them to 3
    decimals first, so they come back with one decimal: 0.082 -> 8.2). COCO's -1 ("no box of that size in
    the ground truth") stays -1."""
    return {k: round(float(v) * 100, 4) if is_fraction_metric(k) and isinstance(v, numbers.Real)
            and not isinstance(v, bool) and v >= 0 else v for k, v in metrics.items()}


def percent_evaluator(evaluator, logger=None):
    """Make ``evaluator.evaluate`` report in percent (:func:`to_percent`), as every table here does, with
    pycocotools' prints (its AP / AR summary per evaluation) sent to ``logger`` at INFO level (the log
    file; the console too unless a quiet runner filters it) instead of stdout. Training's validation
    and the test loop use it, so both show the same numbers. Idempotent: an evaluator is wrapped once.

    Args:
        evaluator (mmengine.evaluator.Evaluator): the loop's evaluator (changed in place).
        logger (logging.Logger, optional): where the prints go; None: mmengine's current logger.

    Returns:
        mmengine.evaluator.Evaluator: ``evaluator``.
    """
    if getattr(evaluator, '_percent', False):
        return evaluator
    evaluate_fractions = evaluator.evaluate

    def evaluate_percent(size: int) -> dict:
        with contextlib.redirect_stdout(io.StringIO()) as said:
            metrics = evaluate_fractions(size)
        if said.getvalue().strip():
            from mmengine.logging import print_log
            print_log(said.getvalue().rstrip(), logger=logger or 'current', level=logging.INFO)
        return to_percent(metrics)
    evaluator.evaluate = evaluate_percent
    evaluator._percent = True
    return evaluator
