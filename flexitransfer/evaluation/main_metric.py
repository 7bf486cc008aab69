"""The headline metric of a task's metrics dict: one list for every report (benchmark, deploy)."""
from __future__ import annotations

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
