"""mmengine checkpoints on torch >= 2.6.

mmengine 0.10.7 calls ``torch.load(path, map_location=...)`` without
``weights_only``; torch >= 2.6 then unpickles in weights-only mode and refuses
the non-tensor objects an mmengine checkpoint holds (message hub with its
HistoryBuffers, numpy arrays and scalars), so ``--resume`` and ``load_from``
fail with an UnpicklingError. Instead of turning the safety check off, we
allow-list exactly what mmengine writes. HistoryBuffer pickles its statistics
methods as ``getattr(buffer, 'mean')``: the real ``getattr`` is never
allowed; a restricted one that resolves only those methods stands in for it.
"""
from __future__ import annotations

import pickle

import torch

_DONE = False
_HISTORY_STATS = {'min', 'max', 'mean', 'current'}  # HistoryBuffer's default statistics


def _restricted_getattr(obj, name: str):
    from mmengine.logging import HistoryBuffer
    allowed = _HISTORY_STATS | set(getattr(HistoryBuffer, '_statistics_methods', {}))
    if (obj is HistoryBuffer or isinstance(obj, HistoryBuffer)) and name in allowed and not name.startswith('_'):
        return getattr(obj, name)
    raise pickle.UnpicklingError(f'checkpoint asks for getattr({obj!r}, {name!r}): only HistoryBuffer '
                                 f'statistics are allowed in weights-only loading')


def _safe_globals():
    from collections import OrderedDict, defaultdict

    import numpy as np
    from mmengine.logging import HistoryBuffer

    out = [HistoryBuffer, OrderedDict, defaultdict, np.ndarray, np.dtype,
           np._core.multiarray._reconstruct, np._core.multiarray.scalar,
           (_restricted_getattr, 'builtins.getattr')]
    out += sorted({type(np.dtype(t)) for t in np.sctypeDict.values() if t is not object}, key=str)
    return out


def allow_mmengine_checkpoints() -> None:
    """Allow-list the objects mmengine stores in checkpoints for ``weights_only`` loads (idempotent)."""
    global _DONE
    if not _DONE:
        torch.serialization.add_safe_globals(_safe_globals())
        _DONE = True
