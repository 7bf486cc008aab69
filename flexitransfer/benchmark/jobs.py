"""Several trainings side by side on one machine: how much slower is each than alone?

``tools/benchmark_jobs.py``. One measurement = one thread setting (environment variables for the
OpenMP runtime that torch uses) and a number of jobs ``k``: ``k`` copies of ``tools/train.py CONFIG``
start together, each in its own work dir, and each job's seconds per iteration are read back from
mmengine's ``vis_data/scalars.json`` (the IterTimerHook's ``time``, averaged over the logged
intervals after the first one, i.e. without start-up and warm-up). ``slowdown`` is a job's s/iter
beside ``k - 1`` others over its s/iter alone, in the same setting. ``k`` jobs that share the cores
fairly are each at most ``k`` times slower than alone (less when one job alone could not keep
every core busy); anything far above ``k`` is cores burnt on waiting.

The settings (``SETTINGS``): ``before`` is what the tools did until this benchmark existed (one
OpenMP thread per CPU, libgomp's default wait: threads spin about 300 000 times at every barrier
before they sleep); ``default`` leaves the variables unset, so ``tools/_bootstrap.py`` chooses
(today's defaults); ``passive``: threads sleep at once (no spinning at all); ``1-thread`` is one
thread per job.
"""
from __future__ import annotations

import json
import os
import os.path as osp
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence

from ..reporting import save_figure, write_table

__all__ = ['SETTINGS', 'THREAD_VARS', 'iteration_time', 'run_jobs', 'benchmark_jobs']

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
WORK_ROOT = 'work_dirs/benchmark_jobs'  # the trainings' work dirs (not beside --out, which may be docs/)
THREAD_VARS = ('OMP_NUM_THREADS', 'OMP_WAIT_POLICY', 'GOMP_SPINCOUNT', 'MKL_NUM_THREADS')


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else (os.cpu_count() or 1)


SETTINGS: Dict[str, Dict[str, str]] = {
    'before': {'OMP_NUM_THREADS': str(_cpus()), 'GOMP_SPINCOUNT': '300000'},
    'default': {},
    'passive': {'OMP_WAIT_POLICY': 'PASSIVE'},
    '1-thread': {'OMP_NUM_THREADS': '1'},
}


def iteration_time(work_dir: str) -> float:
    """Mean seconds per training iteration of the run in ``work_dir``, without the first logged interval."""
    runs = sorted(d for d in os.listdir(work_dir) if osp.isfile(osp.join(work_dir, d, 'vis_data', 'scalars.json')))
    if not runs:
        raise FileNotFoundError(f'{work_dir}: no vis_data/scalars.json (did the training log any interval?)')
    with open(osp.join(work_dir, runs[-1], 'vis_data', 'scalars.json')) as f:
        times = [r['time'] for r in map(json.loads, f) if 'time' in r and 'loss' in r]
    if len(times) < 2:
        raise ValueError(f'{work_dir}: {len(times)} logged training interval(s); raise --iters so that at '
                         'least two are logged (the first one holds the warm-up and is left out)')
    return sum(times[1:]) / len(times[1:])


def run_jobs(config: str, k: int, env: Dict[str, str], work_root: str, iters: int,
             cfg_options: Sequence[str] = (), timeout: float = 3600.0) -> List[float]:
    """Start ``k`` trainings of ``config`` at once with ``env`` over the thread variables; their s/iter."""
    base = {n: v for n, v in os.environ.items() if n not in THREAD_VARS}
    procs, works = [], []
    for i in range(k):
        work = osp.join(work_root, f'job{i}')
        os.makedirs(work, exist_ok=True)
        log = open(osp.join(work_root, f'job{i}.log'), 'w')
        cmd = [sys.executable, osp.join(ROOT, 'tools', 'train.py'), config, '--work-dir', work, '--cfg-options',
               f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={10 * iters}',
               f'default_hooks.checkpoint.interval={10 * iters}', 'default_hooks.logger.interval=10', *cfg_options]
        procs.append((subprocess.Popen(cmd, cwd=ROOT, env={**base, **env}, stdout=log, stderr=subprocess.STDOUT),
                      log))
        works.append(work)
    deadline = time.monotonic() + timeout
    for i, (p, log) in enumerate(procs):
        try:
            p.wait(max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for q, _ in procs:
                q.kill()
            raise RuntimeError(f'{k} jobs of {config} did not finish within {timeout:.0f} s (see {work_root}/job*.log)')
        finally:
            log.close()
        if p.returncode:
            raise RuntimeError(f'job {i} of {config} failed (exit {p.returncode}); see {work_root}/job{i}.log')
    return [iteration_time(w) for w in works]


def benchmark_jobs(config: str, settings: Sequence[str], jobs: Sequence[int] = (1, 2), iters: int = 60,
                   out: str = 'work_dirs/benchmark_jobs/jobs', cfg_options: Sequence[str] = (),
                   extra_settings: Optional[Dict[str, Dict[str, str]]] = None) -> List[dict]:
    """For each setting, 1 job alone then ``k`` side by side (``jobs``); a table, a CSV and a PNG at ``out``."""
    table = {**SETTINGS, **(extra_settings or {})}
    unknown = [s for s in settings if s not in table]
    if unknown:
        raise ValueError(f'unknown thread setting(s) {unknown}: choose from {sorted(table)}')
    rows = []
    for name in settings:
        alone = None
        for k in jobs:
            t = run_jobs(config, k, table[name], osp.join(WORK_ROOT, 'runs', f'{name}_{k}'), iters,
                         cfg_options)
            mean = sum(t) / len(t)
            alone = mean if k == 1 else alone
            rows.append(dict(setting=name, env=' '.join(f'{a}={b}' for a, b in table[name].items()) or '(unset)',
                             jobs=k, sec_per_iter=mean, slowdown=mean / alone if alone else None))
            print(f'{name:>9} x{k}: {mean:.4f} s/iter' + (f'  ({mean / alone:.2f}x alone)' if alone else ''),
                  flush=True)
    load = os.getloadavg()[0] if hasattr(os, 'getloadavg') else float('nan')
    md = write_table(out, rows, ('setting', 'env', 'jobs', 'sec_per_iter', 'slowdown'),
                     formats=dict(sec_per_iter='{:.4f}', slowdown='{:.2f}'),
                     text_before=f'{osp.basename(config)}, {iters} iterations per job, {_cpus()} CPUs, '
                                 f'load average at the end {load:.2f}')
    save_figure(lambda fig, axes: _plot(axes[0, 0], rows, jobs), out + '.png', size=(6.0, 3.8))
    print(md)
    return rows


def _plot(ax, rows, jobs):
    names = list(dict.fromkeys(r['setting'] for r in rows))
    width = 0.8 / len(jobs)
    for j, k in enumerate(jobs):
        vals = [next(r['sec_per_iter'] for r in rows if r['setting'] == n and r['jobs'] == k) for n in names]
        bars = ax.bar([i + (j - (len(jobs) - 1) / 2) * width for i in range(len(names))], vals, width,
                      label=f'{k} job{"s" if k > 1 else ""} side by side' if k > 1 else '1 job alone')
        if k > 1:
            for b, n in zip(bars, names):
                r = next(r for r in rows if r['setting'] == n and r['jobs'] == k)
                ax.annotate(f'{r["slowdown"]:.1f}x', (b.get_x() + b.get_width() / 2, b.get_height()),
                            ha='center', va='bottom', fontsize=9)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel('seconds per iteration (per job)')
    ax.set_title('training beside other trainings (label: slowdown vs alone)', fontsize=10)
    ax.legend(fontsize=8)
