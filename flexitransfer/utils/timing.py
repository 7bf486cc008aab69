"""Speed comparisons measured in one process (what the benchmark scripts print as ratios)."""
from __future__ import annotations

import statistics
import time
from typing import Callable, Tuple


def interleaved_median_ms(fn_a: Callable, fn_b: Callable, x, runs: int, warmup: int = 2,
                          sync: Callable = lambda: None) -> Tuple[float, float]:
    """Median milliseconds of ``fn_a(x)`` and ``fn_b(x)``: warm-up, then ``runs`` interleaved
    pairs in alternating order so drift (thermal, other load) hits both alike."""
    for _ in range(warmup):
        fn_a(x), fn_b(x)
        sync()
    ta, tb = [], []
    for i in range(runs):
        for fn, acc in ((fn_a, ta), (fn_b, tb)) if i % 2 else ((fn_b, tb), (fn_a, ta)):
            t0 = time.perf_counter()
            fn(x)
            sync()
            acc.append(time.perf_counter() - t0)
    return statistics.median(ta) * 1e3, statistics.median(tb) * 1e3
