"""Measurements: timing helpers (``timing``), the cross-task benchmark (``tasks``), training throughput
and memory per patch size (``train``), trainings side by side (``jobs``), the GPU self-check
(``gpu_check``: ``tools/gpu_check.py``)."""
from .gpu_check import gpu_check

__all__ = ['gpu_check']
