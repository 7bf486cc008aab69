"""Thread defaults for torch's OpenMP pool, set before torch loads: the tools (``_bootstrap``) and
the test suite (``tests/conftest.py``) start with the same ones. A variable already set wins.

- ``OMP_NUM_THREADS``: one thread per CPU this process may use (its affinity mask, not the
  machine's core count).
- ``GOMP_SPINCOUNT=1000``: a waiting thread spins briefly, then sleeps. libgomp's own default
  spins ~300 000 times at every barrier; beside another busy process those spins burn the cores
  the other one needs. Two tiny trainings side by side on 2 CPUs, s/iter over alone
  (``tools/benchmark_jobs.py --spin 1000 100000``): 6.2x with libgomp's default, 26x at 100 000,
  4.8x at 10 000, 1.5x at 1 000, 1.3x with no spinning (``OMP_WAIT_POLICY=PASSIVE``, which costs
  ~40 % alone); 1 000 costs nothing measurable alone. README, "Threads".
"""
import os

GOMP_SPINCOUNT = '1000'


def affinity_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else (os.cpu_count() or 1)


def thread_defaults(environ=os.environ) -> None:
    environ.setdefault('OMP_NUM_THREADS', str(affinity_cpus()))
    if 'OMP_WAIT_POLICY' not in environ:
        environ.setdefault('GOMP_SPINCOUNT', GOMP_SPINCOUNT)
