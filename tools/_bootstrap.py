"""Shared start-up for the tools: repo root on sys.path, flexitransfer registered."""
import os
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
os.environ.setdefault('OMP_NUM_THREADS', str(os.cpu_count() or 1))

import flexitransfer  # noqa: E402,F401  (registers modules, allows mmengine checkpoints)
