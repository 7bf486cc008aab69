"""Persistent dataloader workers, stopped the normal way when a run is over.

mmengine leaves ``persistent_workers=True`` workers alive until the interpreter exits, and then
multiprocessing kills them (SIGTERM): a killed worker never runs its exit finalizers, so each
leaves its multiprocessing temporary folder (``/tmp/pymp-*``, from passing tensors to the main
process) behind, one per worker and run.
"""
from __future__ import annotations

from typing import Sequence


def shut_down_workers(runner, stages: Sequence[str] = ('train', 'val', 'test')) -> None:
    """Stop the worker processes of the runner's built dataloaders, letting them exit normally.

    Call it when the runner is done (after ``runner.train()`` / ``runner.test()``); a later pass
    over a loader starts new workers.

    Args:
        runner: an mmengine Runner.
        stages: the loops whose dataloaders to stop; loops never built are skipped.
    """
    for stage in stages:
        loop = getattr(runner, f'_{stage}_loop', None)
        loader = getattr(loop, 'dataloader', None)  # a loop never built is still its config dict
        iterator = getattr(loader, '_iterator', None)
        if iterator is not None and hasattr(iterator, '_shutdown_workers'):
            iterator._shutdown_workers()
            loader._iterator = None
