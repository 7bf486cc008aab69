"""Studies over seeds: their runs spread over worker processes and kept as they finish (a killed study
resumes), their means with a confidence interval."""
from __future__ import annotations

import json
import os.path as osp
from typing import Callable, Dict, Iterable, Iterator, Optional, Sequence, Tuple


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


def kept_runs(path: str, key: Callable[[dict], tuple], keep: Callable[[dict], bool]) -> Dict[tuple, dict]:
    """The runs an earlier (maybe killed) study appended to ``path`` (JSON lines), by ``key``.

    Args:
        path: the ``.jsonl`` file (absent: no run kept).
        key: a run's identity.
        keep: whether a run still counts (made with the settings asked for now).

    Returns:
        ``{key(run): run}`` of the runs kept.
    """
    done = {}
    if osp.isfile(path):
        with open(path) as f:
            for line in f:
                run = json.loads(line)
                if keep(run):
                    done[key(run)] = run
    return done


def run_and_keep(fn: Callable, jobs: Sequence, workers: int, path: str, key: Callable[[dict], tuple],
                 done: Dict[tuple, dict], describe: Callable[[dict], str], extra: Optional[dict] = None) -> None:
    """Run ``fn`` over ``jobs`` (:func:`pool_map`), appending each run to ``path`` as it finishes (a killed
    study loses only the runs in flight) and to ``done``, with a progress line per run.

    Args:
        fn: the run (module level).
        jobs: its arguments.
        workers: processes.
        path: the ``.jsonl`` file.
        key: a run's identity in ``done``.
        done: the runs so far (updated).
        describe: a run's progress line.
        extra: fields added to every run before it is kept.
    """
    with open(path, 'a') as f:
        for i, run in enumerate(pool_map(fn, jobs, workers)):
            run.update(extra or {})
            done[key(run)] = run
            f.write(json.dumps(run) + '\n')
            f.flush()
            print(f'[{i + 1}/{len(jobs)}] {describe(run)}', flush=True)
