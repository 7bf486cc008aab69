"""Thread defaults for torch's OpenMP pool, set before torch loads: the tools (``_bootstrap``) and
the test suite (``tests/conftest.py``) start with the same ones. A variable already set wins.

- ``OMP_NUM_THREADS``: one thread per CPU this process may use (its affinity mask, not the
  machine's core count).
- ``GOMP_SPINCOUNT=1000``: a waiting thread spins briefly, then sleeps. libgomp's own default
  spins ~300 000 times at every barrier; beside another busy process those spins burn the cores
  the other one needs. 1 000 was chosen with ``tools/benchmark_jobs.py --spin`` (two trainings
  side by side vs alone, per setting): the shortest spin that costs little alone. The measured
  table: docs/results/threads_jobs.md; the guide: docs/get_started.md, "Threads".

The timing tools (``TIMING_TOOLS``) spin longer (``TIMING_SPINCOUNT``): they measure one job's latency
on a quiet machine, where spinning pays. Inference of a small model runs many short parallel regions
with serial work between them, and a thread that sleeps after a short spin is woken for each one; at
libgomp's own 300 000 the torch threads still spin while an ONNX Runtime session beside them runs, so
the timing tools take 100 000 (docs/get_started.md, "Threads").
"""
import os

GOMP_SPINCOUNT = '1000'
TIMING_SPINCOUNT = '100000'
TIMING_TOOLS = ('benchmark.py', 'benchmark_onnx.py', 'benchmark_backbone.py', 'benchmark_train.py')


def affinity_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else (os.cpu_count() or 1)


def thread_defaults(environ=os.environ, timing: bool = False) -> None:
    """``timing``: the timing tools' longer spin (``TIMING_SPINCOUNT``)."""
    environ.setdefault('OMP_NUM_THREADS', str(affinity_cpus()))
    if 'OMP_WAIT_POLICY' not in environ:
        environ.setdefault('GOMP_SPINCOUNT', TIMING_SPINCOUNT if timing else GOMP_SPINCOUNT)
