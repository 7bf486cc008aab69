"""Service time per (patch, batch size): measured at start-up, kept current from the batches served."""
from __future__ import annotations

import time
from typing import Callable, Dict, Iterable, List, Mapping, Optional


class LatencyModel:
    """Seconds a batch of ``b`` images takes at patch ``p``.

    Each measured (patch, batch size) point is an exponentially weighted moving average of the
    times observed there; between measured batch sizes the time is interpolated linearly, beyond
    the largest it grows with the per-image slope of the last two points (one point: in proportion),
    below the smallest it is the smallest point's time (a batch of one is never free).

    Args:
        alpha (float): weight of a new observation in the moving average (0 < alpha <= 1).
    """

    def __init__(self, alpha: float = 0.2):
        if not 0 < alpha <= 1:
            raise ValueError(f'alpha must be in (0, 1], got {alpha}')
        self.alpha = alpha
        self._table: Dict[int, Dict[int, float]] = {}

    @classmethod
    def from_table(cls, table: Mapping[int, Mapping[int, float]], alpha: float = 0.2) -> 'LatencyModel':
        """A model holding given times.

        Args:
            table (Mapping[int, Mapping[int, float]]): patch -> batch size -> seconds.
            alpha (float): as in the constructor.

        Returns:
            LatencyModel: the model, each point observed once.
        """
        model = cls(alpha)
        for patch, row in table.items():
            for batch, seconds in row.items():
                model.observe(patch, batch, seconds)
        return model

    @property
    def patches(self) -> List[int]:
        """The patches with at least one measured point."""
        return sorted(self._table)

    def table(self) -> Dict[int, Dict[int, float]]:
        """A copy of the measured points (patch -> batch size -> seconds)."""
        return {p: dict(sorted(row.items())) for p, row in sorted(self._table.items())}

    def observe(self, patch: int, batch: int, seconds: float) -> None:
        """Fold one served batch into the model.

        Args:
            patch (int): the patch it ran at.
            batch (int): its number of images (>= 1).
            seconds (float): its service time.
        """
        if batch < 1 or seconds < 0:
            raise ValueError(f'a batch of {batch} images taking {seconds} s cannot be observed')
        row = self._table.setdefault(int(patch), {})
        old = row.get(int(batch))
        row[int(batch)] = float(seconds) if old is None else (1 - self.alpha) * old + self.alpha * float(seconds)

    def predict(self, patch: int, batch: int) -> float:
        """The expected service time.

        Args:
            patch (int): a measured patch.
            batch (int): the number of images (>= 1).

        Returns:
            float: seconds.
        """
        row = self._table.get(int(patch))
        if not row:
            raise KeyError(f'no service time measured at patch {patch} (measured: {self.patches})')
        if batch in row:
            return row[batch]
        sizes = sorted(row)
        if batch < sizes[0]:
            return row[sizes[0]]
        if batch > sizes[-1]:
            if len(sizes) == 1:
                return row[sizes[0]] * batch / sizes[0]
            b0, b1 = sizes[-2], sizes[-1]
            slope = max((row[b1] - row[b0]) / (b1 - b0), 0.0)
            return row[b1] + slope * (batch - b1)
        hi = next(i for i, b in enumerate(sizes) if b > batch)
        b0, b1 = sizes[hi - 1], sizes[hi]
        return row[b0] + (row[b1] - row[b0]) * (batch - b0) / (b1 - b0)

    def measure(self, run: Callable[[int, int], object], patches: Iterable[int], batch_sizes: Iterable[int],
                repeats: int = 3, warmup: int = 1, clock: Optional[Callable[[], float]] = None) -> 'LatencyModel':
        """Time ``run(patch, batch)`` at every point and store the median (replacing older values).

        Args:
            run (Callable[[int, int], object]): serves one batch of that size at that patch.
            patches (Iterable[int]): the patches.
            batch_sizes (Iterable[int]): the batch sizes.
            repeats (int): timed runs per point.
            warmup (int): untimed runs per point first.
            clock (Callable[[], float], optional): seconds; default ``time.perf_counter``.

        Returns:
            LatencyModel: this model.
        """
        clock = clock or time.perf_counter
        for patch in patches:
            for batch in batch_sizes:
                for _ in range(warmup):
                    run(patch, batch)
                times = []
                for _ in range(max(1, repeats)):
                    start = clock()
                    run(patch, batch)
                    times.append(clock() - start)
                self._table.setdefault(int(patch), {})[int(batch)] = sorted(times)[len(times) // 2]
        return self
