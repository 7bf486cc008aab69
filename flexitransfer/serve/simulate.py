"""A one-server queue on a simulated clock: arrival traces (seeded Poisson) and a policy's decisions
(:class:`~flexitransfer.serve.controller.PatchController` or a fixed patch) played out without waiting."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .controller import Request
from .latency import LatencyModel


def poisson_arrivals(rate: float, duration: float, seed: int = 0, start: float = 0.0) -> np.ndarray:
    """Arrival times of a Poisson process (open loop).

    Args:
        rate (float): arrivals per second (> 0).
        duration (float): seconds covered.
        seed (int): the generator's seed.
        start (float): the first instant covered.

    Returns:
        np.ndarray: increasing times in ``[start, start + duration)``.
    """
    if rate <= 0 or duration <= 0:
        raise ValueError(f'rate and duration must be > 0, got {rate}, {duration}')
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(1.0 / rate, size=int(rate * duration * 1.5) + 16)
    times = start + np.cumsum(gaps)
    while times[-1] < start + duration:  # rare: too few gaps drawn
        times = np.concatenate([times, times[-1] + np.cumsum(rng.exponential(1.0 / rate, size=len(gaps)))])
    return times[times < start + duration]


@dataclass
class SimResult:
    """What a simulated run served.

    Args:
        requests (list[Request]): the requests, in arrival order.
        finish (list[float]): when each was answered.
        patch (list[int]): the patch each was served at.
        batches (list[tuple[float, int, int]]): (start, patch, size) of each batch.
    """
    requests: List[Request]
    finish: List[float] = field(default_factory=list)
    patch: List[int] = field(default_factory=list)
    batches: List[Tuple[float, int, int]] = field(default_factory=list)

    def met(self) -> np.ndarray:
        """Per request: answered by its deadline."""
        return np.array([f <= r.deadline for r, f in zip(self.requests, self.finish)], dtype=bool)

    def share_met(self) -> float:
        """The share of requests answered by their deadline."""
        return float(self.met().mean()) if self.requests else 1.0

    def patch_mix(self) -> Dict[int, float]:
        """Patch -> share of requests served at it."""
        counts = Counter(self.patch)
        return {p: counts[p] / len(self.patch) for p in sorted(counts)}

    def switches(self) -> int:
        """How often consecutive batches changed patch."""
        return sum(a[1] != b[1] for a, b in zip(self.batches, self.batches[1:]))


def simulate(policy, arrivals: Sequence[float], service: Callable[[int, int], float], slo_s: float,
             deadlines: Optional[Sequence[Optional[float]]] = None, pins: Optional[Sequence[Optional[int]]] = None,
             latency: Optional[LatencyModel] = None) -> SimResult:
    """Serve an arrival trace with one server that takes a batch whenever it is idle and the queue is not.

    Args:
        policy: has ``decide(queue, now) -> Decision``.
        arrivals (Sequence[float]): increasing arrival times.
        service (Callable[[int, int], float]): the true seconds of a batch (patch, size).
        slo_s (float): the deadline after arrival of requests without their own.
        deadlines (Sequence[float | None], optional): per request, its own deadline (absolute) or None.
        pins (Sequence[int | None], optional): per request, a pinned patch or None.
        latency (LatencyModel, optional): gets every served batch's true time (the server keeps its model
            current the same way).

    Returns:
        SimResult: the run.
    """
    n = len(arrivals)
    reqs = [Request(float(a), float(a) + slo_s if deadlines is None or deadlines[i] is None else deadlines[i],
                    None if pins is None else pins[i], key=i) for i, a in enumerate(arrivals)]
    res = SimResult(reqs, [0.0] * n, [0] * n)
    queue: List[Request] = []
    now, i = 0.0, 0
    while i < n or queue:
        if not queue:
            now = max(now, reqs[i].arrival)
        while i < n and reqs[i].arrival <= now:
            queue.append(reqs[i])
            i += 1
        d = policy.decide(queue, now)
        took = service(d.patch, len(d.requests))
        if latency is not None:
            latency.observe(d.patch, len(d.requests), took)
        res.batches.append((now, d.patch, len(d.requests)))
        now += took
        served = {id(r) for r in d.requests}
        for r in d.requests:
            res.finish[r.key], res.patch[r.key] = now, d.patch
        queue = [r for r in queue if id(r) not in served]
    return res
