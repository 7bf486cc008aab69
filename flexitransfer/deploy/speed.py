"""Speed measurements made in one process: FLOPs and the machine's GEMM rate (interleaved medians:
``flexitransfer.utils.interleaved_ms``, re-exported here)."""
from __future__ import annotations

from typing import Callable

import torch

from ..utils.timing import interleaved_ms  # noqa: F401  (re-exported)


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
