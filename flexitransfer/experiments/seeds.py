"""Studies over seeds: their runs spread over worker processes, their means with a confidence interval."""
from __future__ import annotations

from typing import Callable, Iterable, Iterator, Sequence, Tuple


def pool_map(fn: Callable, jobs: Sequence, workers: int) -> Iterator:
    """``fn`` over ``jobs``, results in the order they finish.

    Args:
        fn: a module-level function (workers are spawned processes: it must be importable).
        jobs: its arguments, one per call.
        workers: processes; 1 runs every call in this process.

    Returns:
        An iterator over the results.
    """
    if workers <= 1:
        return map(fn, jobs)
    import multiprocessing as mp
    return mp.get_context('spawn').Pool(workers).imap_unordered(fn, jobs)


def mean_ci(xs: Iterable[float]) -> Tuple[float, float]:
    """The mean and the half-width of its 95 % t-interval (NaN for a single value)."""
    import numpy as np
    from scipy import stats
    xs = np.asarray(list(xs), dtype=np.float64)
    if len(xs) < 2:
        return float(xs.mean()), float('nan')
    return float(xs.mean()), float(stats.t.ppf(0.975, len(xs) - 1) * xs.std(ddof=1) / len(xs) ** 0.5)
