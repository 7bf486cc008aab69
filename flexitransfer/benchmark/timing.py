"""Speed measured in one process: interleaved medians (ratios that hold on a busy machine), FLOPs,
and the machine's GEMM rate. What every benchmark script prints comes from here."""
from __future__ import annotations

import os
import statistics
import time
from typing import Callable, Dict, Optional, Tuple

import torch


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



def load_average() -> str:
    """The 1 / 5 / 15-minute load averages as ``'0.52/0.40/0.31'`` ('n/a' where the OS has none)."""
    try:
        return '/'.join(f'{v:.2f}' for v in os.getloadavg())
    except (AttributeError, OSError):
        return 'n/a'


def busy_warning(threads: int) -> Optional[str]:
    """A warning when other processes keep the CPU busy, taken before a benchmark starts its own work.

    The timings (and the budget picks made from them) hold on an idle machine; when the 1-minute load
    average plus the benchmark's own ``threads`` exceeds the CPU count (by more than half a core),
    processes compete for cores and latencies grow by a factor that differs between runtimes.

    Args:
        threads (int): the threads the benchmark's own computation uses.

    Returns:
        str | None: the warning, or None when the machine is idle enough (or the OS reports no load).
    """
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return None
    cpus = os.cpu_count() or 1
    if load + threads <= cpus + 0.5:
        return None
    return (f'WARNING: the machine is busy (load average {load_average()} with {cpus} CPUs, {threads} threads '
            f'for the benchmark): latencies come out slower than on an idle machine, and by different factors per '
            f'runtime, so the budget picks may change; rerun when the load is below {max(cpus - threads, 0) + 0.5:g}')


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call (torch's FlopCounterMode: 2 per multiply-add of matmuls / convolutions)."""
    from torch.utils.flop_counter import FlopCounterMode
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        fn()
    return int(fc.get_total_flops())


def gemm_fn(n: int = 1024, dtype=torch.float32, device='cpu') -> Callable[[], object]:
    """A square fp32 GEMM (n x n times n x n, 2 n^3 FLOPs) as a zero-argument callable."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device, dtype)
    b = torch.randn(n, n, generator=g).to(device, dtype)
    out = torch.empty(n, n, dtype=dtype, device=device)
    return lambda: torch.mm(a, b, out=out)


def gemm_gflops(ms: float, n: int) -> float:
    return 2 * n ** 3 / (ms * 1e-3) / 1e9
