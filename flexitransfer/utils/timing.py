"""Speed comparisons measured in one process (what the benchmark scripts print as ratios)."""
from __future__ import annotations

import statistics
import time
from typing import Callable, Dict, Tuple


def interleaved_ms(fns: Dict[str, Callable[[], object]], runs: int, warmup: int = 2,
                   sync: Callable = lambda: None) -> Dict[str, float]:
    """Median milliseconds of each zero-argument callable: warm-up, then ``runs`` rounds in which
    every callable runs once, in alternating order, so drift and other load hit all of them alike."""
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
            sync()
    times = {n: [] for n in names}
    for i in range(runs):
        for n in (names if i % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            fns[n]()
            sync()
            times[n].append(time.perf_counter() - t0)
    return {n: statistics.median(v) * 1e3 for n, v in times.items()}


def interleaved_median_ms(fn_a: Callable, fn_b: Callable, x, runs: int, warmup: int = 2,
                          sync: Callable = lambda: None) -> Tuple[float, float]:
    """``interleaved_ms`` for two callables of the same input: median ms of ``fn_a(x)`` and ``fn_b(x)``."""
    ms = interleaved_ms({'a': lambda: fn_a(x), 'b': lambda: fn_b(x)}, runs, warmup, sync)
    return ms['a'], ms['b']
