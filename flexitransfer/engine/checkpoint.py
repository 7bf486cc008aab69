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


def _load_error(e: Exception) -> str:
    """torch.load's reason in one complete sentence (its messages run to paragraphs of advice)."""
    text = ' '.join(str(e).split())
    if 'WeightsUnpickler error:' in text:  # weights-only refusal: the object it met, not the options text
        text = text.split('WeightsUnpickler error:', 1)[1].strip()
    elif text.startswith('mmap can only be used'):  # torch's advice to re-save does not apply to a broken file
        return "not in torch.save's zip format"
    sentence = text.split('. ', 1)[0].rstrip('.')
    return f'{type(e).__name__}: {sentence}' if sentence else f'{type(e).__name__}, the file ends early'


def read_state_dict(path: str) -> dict:
    """The checkpoint's (meta, state dict) with clear errors; tensors are memory-mapped, not read."""
    import os.path as osp
    allow_mmengine_checkpoints()
    if osp.isdir(path) or str(path).endswith('.safetensors'):  # a hub directory / safetensors file of a whole model
        from ..converters.reader import read_checkpoint
        ck = read_checkpoint(path)
        return dict(ck.meta or {}), ck.state_dict
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint not found: {path!r}; check the path (training writes '
                                f'work_dirs/<config>/iter_*.pth or epoch_*.pth)')
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True, mmap=True)
    except Exception as e:
        raise ValueError(f'checkpoint {path!r} ({osp.getsize(path)} bytes) cannot be read ({_load_error(e)}); the '
                         f'file is truncated or not a PyTorch checkpoint: download or copy it again, or pick an '
                         f'earlier checkpoint') from None
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f'checkpoint {path!r} holds no state dict of tensors; give a checkpoint written by '
                         f'tools/train.py or tools/convert_weights.py')
    if state and all(k.startswith('module.') for k in state):  # saved from a DDP-wrapped model
        state = {k[len('module.'):]: v for k, v in state.items()}
    meta = ckpt.get('meta', {}) if isinstance(ckpt.get('meta'), dict) else {}
    return meta, state


def _listed(keys, max_listed):
    return ', '.join(keys[:max_listed]) + (', ...' if len(keys) > max_listed else '')


def check_state(model: torch.nn.Module, state: dict, path: str, require_all: bool = True,
                allow_unexpected: bool = True, max_listed: int = 5) -> None:
    """Fail with a message naming the tensors when ``state`` cannot serve ``model`` (see check_checkpoint)."""
    model = getattr(model, 'module', model)
    own = model.state_dict()
    shared = [k for k in own if k in state]
    wrong = [k for k in shared if tuple(state[k].shape) != tuple(own[k].shape)]
    arch = f'{type(model).__name__}'
    if wrong:
        listed = ', '.join(f'{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}' for k in wrong[:max_listed])
        raise ValueError(f'checkpoint {path!r} does not fit this {arch}: {len(wrong)} tensor(s) of another shape '
                         f'({listed}{", ..." if len(wrong) > max_listed else ""}); it was trained with another '
                         f'architecture: use the config it was trained with, or convert the weights with '
                         f'tools/convert_weights.py')
    if not shared:
        raise ValueError(f'checkpoint {path!r} has no tensor in common with this {arch} (its keys look like '
                         f'{list(state)[:3]}, the model\'s like {list(own)[:3]}); wrong checkpoint or config?')
    missing = [k for k in own if k not in state]
    if require_all and missing:
        raise ValueError(f'checkpoint {path!r} lacks {len(missing)} of this {arch}\'s tensors '
                         f'({_listed(missing, max_listed)}); it is not a trained checkpoint of this config (a '
                         f'backbone-only checkpoint goes in model.backbone.pretrained or load_from for training; '
                         f'strict=False loads it partially on purpose)')
    unexpected = [k for k in state if k not in own]
    if not allow_unexpected and unexpected:
        raise ValueError(f'checkpoint {path!r} has {len(unexpected)} tensor(s) this {arch} does not have '
                         f'({_listed(unexpected, max_listed)}); it belongs to another config: use the config it was '
                         f'trained with (strict=False ignores them on purpose)')


def check_checkpoint(model: torch.nn.Module, path: str, require_all: bool = True, max_listed: int = 5) -> None:
    """Fail clearly, before any work, when ``path`` cannot serve ``model``.

    A missing, truncated or non-PyTorch file, tensors whose shapes differ from the model's (a
    checkpoint of another architecture), no tensor in common, or, with ``require_all`` (testing a
    trained model), model tensors the checkpoint lacks. mmengine would only log warnings for
    these and go on with random weights. The file is memory-mapped: no tensor data is read.
    """
    check_state(model, read_state_dict(path)[1], path, require_all=require_all, max_listed=max_listed)


def load_weights(model: torch.nn.Module, path: str, strict: bool = True) -> dict:
    """Load a trained checkpoint into ``model`` (unwrapped from DDP if needed); returns its ``meta``.

    ``strict=True`` (default): every tensor of the model must be in the file and the file may hold no
    other; a missing head tensor is an error naming it, never a model left half random.
    ``strict=False``: shapes must still fit; missing / unexpected tensors are skipped on purpose.
    The one checkpoint loader of the package (``flexitransfer.apis.init_model`` and every tool use it).
    """
    return load_state(model, read_state_dict(path), path, strict)


def load_state(model: torch.nn.Module, meta_state, path: str, strict: bool = True) -> dict:
    """:func:`load_weights` of an already read ``(meta, state)`` (:func:`read_state_dict`: read it before
    heavy set-up, so a missing or broken file fails first)."""
    meta, state = meta_state
    check_state(model, state, path, require_all=strict, allow_unexpected=not strict)
    target = getattr(model, 'module', model)
    own = target.state_dict()
    target.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    return meta
