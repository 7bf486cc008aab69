"""Thread defaults for torch's OpenMP pool, set before torch loads: the tools (``_bootstrap``) and
the test suite (``tests/conftest.py``) start with the same ones. A variable already set wins.

- ``OMP_NUM_THREADS``: one thread per CPU this process may use (its affinity mask, not the
  machine's core count).
- ``GOMP_SPINCOUNT=1000``: a waiting thread spins briefly, then sleeps. libgomp's own default
  spins ~300 000 times at every barrier; beside another busy process those spins burn the cores
  the other one needs. Two tiny trainings side by side on 2 CPUs, s/iter over alone
  (``tools/benchmark_jobs.py --spin 1000 100000``): 6.2x with libgomp's default, 26x at 100 000,
  4.8x at 10 000, 1.5x at 1 000, 1.3x with no spinning (``OMP_WAIT_POLICY=PASSIVE``, which costs
  ~40 % alone); 1 000 costs little alone in training. README, "Threads".

The timing tools (``TIMING_TOOLS``) spin longer (``TIMING_SPINCOUNT``): they measure one job's latency
on a quiet machine, where spinning pays. Inference of a small model runs many short parallel regions
with serial work between them, and a thread that sleeps after a short spin is woken for each one. The
tiny Segmenter at p = 8 (batch 1, one process, medians of 40, measured 2026-12-03): 3.1 ms at
GOMP_SPINCOUNT=1000, 6.3 ms with OMP_WAIT_POLICY=PASSIVE, 2.6 ms at 100 000, 2.6-2.7 ms at 300 000
(libgomp's default); beside an ONNX Runtime session in the same rounds, ONNX Runtime took 2.3-2.7 ms at
1 000 and 100 000 but 2.8-3.0 ms at 300 000 (torch's threads still spinning while it runs), so 100 000.
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
