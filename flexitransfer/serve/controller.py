"""The run-time patch controller: per batch, the most accurate patch that keeps the queue within its deadlines.

Pure Python: every decision takes ``now`` as an argument (no clock inside), so a simulated clock
(:mod:`flexitransfer.serve.simulate`) and the server (:mod:`flexitransfer.serve.ray_app`) drive it alike.
"""
from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .latency import LatencyModel

_ids = itertools.count()


@dataclass(eq=False)
class Request:
    """One queued request.

    Args:
        arrival (float): when it arrived (the clock the caller passes as ``now``).
        deadline (float): when its answer is due (arrival + SLO unless the request brought its own).
        patch (int, optional): a patch the request pins; None lets the controller choose.
        key (Any): the caller's handle (ignored by the controller).
    """
    arrival: float
    deadline: float
    patch: Optional[int] = None
    key: Any = None
    seq: int = field(default_factory=lambda: next(_ids), repr=False)


@dataclass
class Decision:
    """What to serve next.

    Args:
        patch (int): the patch to run the batch at.
        requests (list[Request]): the batch.
        service_s (float): its predicted service time.
        pinned (bool): the patch was pinned by the requests, not chosen.
    """
    patch: int
    requests: List[Request]
    service_s: float
    pinned: bool = False


def _edf_key(r: Request):
    return (r.deadline, r.arrival, r.seq)


class FixedPatch:
    """A server at one patch: the queue's earliest deadlines first, ``max_batch`` at a time, pins ignored.

    Args:
        patch (int): the patch.
        latency (LatencyModel): the service times (for ``service_s``).
        max_batch (int): the largest batch.
    """

    def __init__(self, patch: int, latency: LatencyModel, max_batch: int = 8):
        self.patch, self.latency, self.max_batch = int(patch), latency, max_batch

    def decide(self, queue: Sequence[Request], now: float,
               batch: Optional[Sequence[Request]] = None) -> Optional[Decision]:
        """The next batch at the fixed patch (``batch`` if given); None for an empty queue."""
        reqs = list(batch) if batch is not None else sorted(queue, key=_edf_key)[:self.max_batch]
        if not reqs:
            return None
        return Decision(self.patch, reqs, self.latency.predict(self.patch, len(reqs)))


class PatchController:
    """Chooses the patch of each batch from the queue, the deadlines, the arrival rate and the service times.

    The plan "this batch at patch p, then the rest of the queue earliest deadline first (requests
    that cannot be in time any more last) at the fastest patch, pinned requests at theirs" is
    feasible when it misses no deadline the all-fastest plan meets (a request already lost does not
    force the queue down) and the backlog it leaves, with the arrivals it lets in (rate ``lam``,
    measured over ``rate_window_s``), clears within the SLO at the fastest patch: a request arriving
    now is in time too. A batch runs at the most accurate feasible patch.

    Hysteresis: the controller steps to a coarser patch as soon as its patch is infeasible, but to a
    finer one only once that rung has been feasible with service times ``1 + up_margin`` times longer
    at every decision for ``up_after_s`` seconds (the most accurate such rung: a drop to the coarsest
    patch under a spike does not cost a climb through every rung between). A server that has been
    idle for ``up_after_s`` (no request waiting from the predicted end of its last batch until the
    earliest arrival in the queue) starts afresh at the most accurate feasible patch: hysteresis guards
    against flapping under load, and an idle spell is evidence that the load has passed (without it, a
    burst's coarse patch outlives the burst by a rung climb per ``up_after_s`` of the next load). Pinned
    batches run at their patch and leave that state alone.

    Args:
        latency (LatencyModel): service time per (patch, batch size); the server keeps it current.
        patches (Sequence[int], optional): the ladder; default every patch the latency model knows.
        slo_s (float): the default deadline: arrival + ``slo_s``.
        max_batch (int): the largest batch.
        accuracy (Mapping[int, float], optional): patch -> accuracy, ranking the patches (best first);
            default the finest patch first.
        up_after_s (float, optional): how long a finer patch must stay feasible with margin before the
            controller takes it; default ``2 * slo_s``.
        up_margin (float): extra service-time fraction a finer patch must absorb to be taken.
        safety (float): service-time fraction added to every prediction (estimation error).
        rate_window_s (float, optional): the arrival rate is the arrivals seen in this window over its
            length; default ``10 * slo_s``.
        hysteresis (bool): False: every batch at the most accurate feasible patch (for comparison).
    """

    def __init__(self, latency: LatencyModel, patches: Optional[Sequence[int]] = None, slo_s: float = 0.1,
                 max_batch: int = 8, accuracy: Optional[Mapping[int, float]] = None,
                 up_after_s: Optional[float] = None, up_margin: float = 0.5, safety: float = 0.0,
                 rate_window_s: Optional[float] = None, hysteresis: bool = True):
        patches = [int(p) for p in (patches if patches is not None else latency.patches)]
        if not patches:
            raise ValueError('the controller needs at least one patch')
        missing = [p for p in patches if p not in latency.patches]
        if missing:
            raise ValueError(f'no service time measured at patch(es) {missing}')
        ranking = sorted(patches, key=lambda p: -accuracy[p]) if accuracy is not None else sorted(patches)
        up_after_s = 2 * slo_s if up_after_s is None else up_after_s
        rate_window_s = 10 * slo_s if rate_window_s is None else rate_window_s
        if slo_s <= 0 or max_batch < 1 or up_after_s < 0 or up_margin < 0 or safety < 0 or rate_window_s <= 0:
            raise ValueError('slo_s and rate_window_s must be > 0, max_batch >= 1, up_after_s, up_margin and '
                             'safety >= 0')
        self.latency, self.ranking, self.slo_s, self.max_batch = latency, ranking, float(slo_s), int(max_batch)
        self.up_after_s, self.up_margin, self.safety = float(up_after_s), up_margin, safety
        self.rate_window_s, self.hysteresis = float(rate_window_s), hysteresis
        self._level = 0                          # index into ranking of the patch in use
        self._up_since: Dict[int, float] = {}   # finer rung -> since when it has been feasible with margin
        self._arrivals: deque = deque()          # arrival times seen within the rate window
        self._last_seq = -1
        self._first: Optional[float] = None      # the first arrival seen (the window fills from there)
        self._busy_until: Optional[float] = None  # the predicted end of the last batch decided

    @property
    def patch(self) -> int:
        """The patch the controller currently serves unpinned batches at."""
        return self.ranking[self._level]

    def request(self, arrival: float, deadline: Optional[float] = None, patch: Optional[int] = None,
                key: Any = None) -> Request:
        """A request for this controller's queue.

        Args:
            arrival (float): its arrival time.
            deadline (float, optional): its own deadline; default ``arrival + slo_s``.
            patch (int, optional): a pinned patch (one of the ladder's).
            key (Any): the caller's handle.

        Returns:
            Request: the request.
        """
        if patch is not None and int(patch) not in self.ranking:
            raise ValueError(f'patch {patch} is not served here (ladder: {sorted(self.ranking)})')
        return Request(arrival, arrival + self.slo_s if deadline is None else deadline,
                       None if patch is None else int(patch), key)

    def arrival_rate(self, queue: Sequence[Request], now: float) -> float:
        """Arrivals per second over the last ``rate_window_s`` (or since the first arrival, at least
        ``slo_s``); the queue's requests not seen before are counted.

        Args:
            queue (Sequence[Request]): the requests waiting.
            now (float): the current time.

        Returns:
            float: the rate.
        """
        new = sorted((r.seq, r.arrival) for r in queue if r.seq > self._last_seq)
        if new:
            self._last_seq = new[-1][0]
            self._arrivals.extend(sorted(a for _, a in new))
        if self._first is None and self._arrivals:
            self._first = self._arrivals[0]
        while self._arrivals and self._arrivals[0] < now - self.rate_window_s:
            self._arrivals.popleft()
        if self._first is None:
            return 0.0
        return len(self._arrivals) / max(min(self.rate_window_s, now - self._first), self.slo_s)

    def decide(self, queue: Sequence[Request], now: float,
               batch: Optional[Sequence[Request]] = None) -> Optional[Decision]:
        """The patch and requests of the next batch.

        Args:
            queue (Sequence[Request]): every request waiting (the batch's own included).
            now (float): the current time.
            batch (Sequence[Request], optional): the batch to serve (e.g. what Ray Serve's batcher
                collected; all pinned to one patch, or none pinned); default the first requests of the
                queue's order (earliest deadline first, those already lost last) that share the first
                one's pin, ``max_batch`` at most.

        Returns:
            Decision | None: the decision; None when there is nothing to serve.
        """
        lam = self.arrival_rate(queue, now)
        scale = 1 + self.safety
        fast = min(self.ranking, key=lambda p: (self.latency.predict(p, self.max_batch), p))
        soonest = now + scale * self.latency.predict(fast, 1)
        ordered = sorted(queue, key=lambda r: (r.deadline < soonest,) + _edf_key(r))
        if batch is None:
            if not ordered:
                return None
            batch = [r for r in ordered if r.patch == ordered[0].patch][:self.max_batch]
        batch = sorted(batch, key=_edf_key)
        if not batch:
            return None
        pins = {r.patch for r in batch}
        if len(pins) > 1:
            raise ValueError(f'a batch runs at one patch: it mixes the pinned patches {sorted(pins, key=str)}')
        pin = pins.pop()
        if pin is not None:
            return self._decided(Decision(pin, batch, self.latency.predict(pin, len(batch)), pinned=True), now)
        in_batch = {id(r) for r in batch}
        rest = [r for r in ordered if id(r) not in in_batch]
        floor, _ = self._plan(batch, rest, now, fast, fast, scale)
        feasible = [p == fast or self._ok(self._plan(batch, rest, now, p, fast, scale), floor, now, lam, fast)
                    for p in self.ranking]
        best = feasible.index(True)
        first = min(r.arrival for r in list(queue) + batch)
        if self._busy_until is not None and first - self._busy_until >= self.up_after_s:
            self._level, self._up_since = best, {}  # idle long enough: the load has passed
        if not feasible[self._level] or not self.hysteresis:  # down at once, to the most accurate feasible patch
            self._level, self._up_since = best, {}
        else:  # up to the most accurate rung that has been feasible with margin for up_after_s
            slow = scale * (1 + self.up_margin)
            self._up_since = {i: self._up_since.get(i, now) for i in range(best, self._level)
                              if self._ok(self._plan(batch, rest, now, self.ranking[i], fast, slow), floor, now, lam,
                                          fast)}
            ready = [i for i, since in self._up_since.items() if now - since >= self.up_after_s]
            if ready:
                self._level, self._up_since = min(ready), {}
        p = self.ranking[self._level]
        return self._decided(Decision(p, batch, self.latency.predict(p, len(batch))), now)

    def _decided(self, decision: Decision, now: float) -> Decision:
        """Note when the decided batch is predicted to end (the idle test of the next decision)."""
        self._busy_until = max(now, self._busy_until or now) + decision.service_s
        return decision

    def _ok(self, plan: Tuple[List[bool], float], floor: List[bool], now: float, lam: float, fast: int) -> bool:
        """A plan meets every deadline ``floor`` meets, and its backlog, with the arrivals it lets in served
        at ``fast``, clears in time for a request arriving now."""
        met, end = plan
        if not all(m or not f for m, f in zip(met, floor)):
            return False
        scale = 1 + self.safety
        load = lam * scale * self.latency.predict(fast, self.max_batch) / self.max_batch
        return load < 1 and (end - now) / (1 - load) + scale * self.latency.predict(fast, 1) <= self.slo_s

    def _plan(self, batch: List[Request], rest: List[Request], now: float, patch: int, rest_patch: int,
              scale: float) -> Tuple[List[bool], float]:
        """Deadlines met (batch first, then ``rest`` in its order) and the end time of the plan: ``batch`` at
        ``patch``, then ``rest`` in its order, unpinned at ``rest_patch``, pinned at theirs, ``max_batch`` each."""
        t = now + scale * self.latency.predict(patch, len(batch))
        met = [t <= r.deadline for r in batch]
        groups: Dict[Optional[int], deque] = {}
        for i, r in enumerate(rest):
            groups.setdefault(r.patch, deque()).append((i, r))
        done = [False] * len(rest)
        while groups:
            pin = min(groups, key=lambda k: groups[k][0][0])
            q = groups[pin]
            grp = [q.popleft() for _ in range(min(self.max_batch, len(q)))]
            if not q:
                del groups[pin]
            t += scale * self.latency.predict(rest_patch if pin is None else pin, len(grp))
            for i, r in grp:
                done[i] = t <= r.deadline
        return met + done, t
