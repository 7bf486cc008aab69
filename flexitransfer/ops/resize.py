"""Resize maths for FlexiViT: the one place that builds resize matrices.

Everything that changes the size of a patch-embedding kernel or of a position
embedding goes through this module: the backbone (every forward), the weight
converters, the deploy tool and the analysis scripts.

Conventions (as big_vision's ``proj/flexi/vit.py``):

* ``bilinear_matrix(old, new)`` is the matrix ``B`` of a bilinear resize with
  half-pixel centres, so that ``vec(resize(x)) = B @ vec(x)``. It is built by
  resizing each one-hot basis image, exactly like the reference, in float64.
* PI-resize of a kernel ``w`` (old size) to the new size is
  ``w_new = pinv(B.T) @ vec(w)`` with ``B`` built *without* antialias. It is
  exact when upsampling: ``<x, w> == <resize(x), w_new>`` for every patch ``x``.
* Position embeddings are resized with a bilinear resize (antialiased when
  shrinking, like ``jax.image.resize(..., "linear")`` in the reference and
  timm's ``resample_abs_pos_embed``) applied as the same kind of matrix.

Matrices depend only on sizes: they are computed once (float64, CPU), cached,
and cached again per (device, dtype) on first use there. Cached tensors are always
built as plain tensors outside autograd (``plain_tensors``), whatever mode the first
caller runs in: a matrix first built under ``torch.inference_mode()`` must still be
usable when training later (an inference tensor cannot be saved for backward).
"""
from __future__ import annotations

import contextlib
from collections import OrderedDict
from functools import lru_cache, wraps
from typing import Sequence, Tuple, Union

import torch
import torch.nn.functional as F

Size2 = Tuple[int, int]
SizeLike = Union[int, Sequence[int]]

#: Kernel resize modes: the paper's PI-resize, PI-resize against an antialiased basis ('pi_aa': the same
#: when enlarging; when shrinking, each new pixel reads a box of old ones instead of the two nearest per
#: axis, see docs/results/digits_dip.md), and the naive baselines.
KERNEL_RESIZE_MODES = ('pi', 'pi_aa', 'bilinear', 'bilinear_aa', 'area')


def to_2tuple(size: SizeLike) -> Size2:
    """``16 -> (16, 16)``; ``(16, 12) -> (16, 12)``."""
    if isinstance(size, int):
        return (size, size)
    size = tuple(int(s) for s in size)
    if len(size) != 2:
        raise ValueError(f'expected an int or a pair (h, w), got {size!r}')
    return size


def plain_tensors(fn):
    """Run ``fn`` with autograd off and inference mode off, so the tensors it returns can be
    cached and later used in any mode (grad, no_grad, inference_mode)."""
    @wraps(fn)
    def wrapper(*args, **kwargs):
        with torch.inference_mode(False), torch.no_grad():
            return fn(*args, **kwargs)
    return wrapper


#: bound of every resize-matrix cache (float64 on the CPU, and per device / dtype); a model uses a few
#: dozen (patch sizes x image sizes), a sweep over arbitrary image sizes cannot grow memory without end
MAX_CACHED_MATRICES = 256


@lru_cache(maxsize=MAX_CACHED_MATRICES)
@plain_tensors
def _bilinear_matrix64(old: Size2, new: Size2, antialias: bool) -> torch.Tensor:
    n_old = old[0] * old[1]
    basis = torch.eye(n_old, dtype=torch.float64).reshape(n_old, 1, *old)
    out = F.interpolate(basis, size=new, mode='bilinear', align_corners=False,
                        antialias=antialias)
    # row i of `out` is resize(e_i); B has resize(e_i) as column i.
    return out.reshape(n_old, -1).T.contiguous()


@lru_cache(maxsize=MAX_CACHED_MATRICES)
@plain_tensors
def _area_matrix64(old: Size2, new: Size2) -> torch.Tensor:
    n_old = old[0] * old[1]
    basis = torch.eye(n_old, dtype=torch.float64).reshape(n_old, 1, *old)
    out = F.interpolate(basis, size=new, mode='area')
    return out.reshape(n_old, -1).T.contiguous()


@lru_cache(maxsize=MAX_CACHED_MATRICES)
@plain_tensors
def _pi_matrix64(old: Size2, new: Size2, antialias: bool = False) -> torch.Tensor:
    # w_new = pinv(B^T) w: least-squares solution of <x, w> = <Bx, w_new>.
    b = _bilinear_matrix64(old, new, antialias)
    return torch.linalg.pinv(b.T).contiguous()


def bilinear_matrix(old: SizeLike, new: SizeLike, antialias: bool = False) -> torch.Tensor:
    """Float64 matrix (new_h*new_w, old_h*old_w) of a half-pixel bilinear resize."""
    return _bilinear_matrix64(to_2tuple(old), to_2tuple(new), bool(antialias))


def pi_resize_matrix(old: SizeLike, new: SizeLike) -> torch.Tensor:
    """Float64 matrix ``pinv(B.T)`` (new_h*new_w, old_h*old_w) used by PI-resize."""
    return _pi_matrix64(to_2tuple(old), to_2tuple(new))


def kernel_resize_matrix(old: SizeLike, new: SizeLike, mode: str = 'pi') -> torch.Tensor:
    """Float64 matrix M such that ``vec(w_new) = M @ vec(w_old)`` for one kernel slice.

    ``mode``: ``'pi'`` (PI-resize, the paper's), ``'pi_aa'`` (PI-resize against an antialiased
    basis: equal to ``'pi'`` when enlarging), ``'bilinear'`` (plain bilinear
    resize of the kernel, the naive baseline), ``'bilinear_aa'`` (the same,
    antialiased) or ``'area'``.
    """
    old, new = to_2tuple(old), to_2tuple(new)
    if mode == 'pi':
        return _pi_matrix64(old, new)
    if mode == 'pi_aa':
        return _pi_matrix64(old, new, True)
    if mode == 'bilinear':
        return _bilinear_matrix64(old, new, False)
    if mode == 'bilinear_aa':
        return _bilinear_matrix64(old, new, True)
    if mode == 'area':
        return _area_matrix64(old, new)
    raise ValueError(f'unknown kernel resize mode {mode!r}; choose one of {KERNEL_RESIZE_MODES}')


_DEVICE_CACHE: 'OrderedDict[tuple, torch.Tensor]' = OrderedDict()


@plain_tensors
def _on(mat_fn, key: tuple, device, dtype) -> torch.Tensor:
    """Per-(sizes, device, dtype) cached copy of a float64 CPU matrix; the least recently used of
    more than ``MAX_CACHED_MATRICES`` is dropped (a run over many image sizes stays bounded)."""
    device = torch.device(device)
    if device.type == 'cuda' and device.index is None:  # 'cuda' and 'cuda:0' are one device
        device = torch.device('cuda', torch.cuda.current_device())
    full_key = key + (device, dtype)
    mat = _DEVICE_CACHE.get(full_key)
    if mat is None:
        mat = mat_fn().to(device=device, dtype=dtype)
        _DEVICE_CACHE[full_key] = mat
        while len(_DEVICE_CACHE) > MAX_CACHED_MATRICES:
            _DEVICE_CACHE.popitem(last=False)
    else:
        _DEVICE_CACHE.move_to_end(full_key)
    return mat


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # Never resize in half precision: the pinv has large entries.
    return torch.float64 if dtype == torch.float64 else torch.float32


def _full_precision(device: torch.device):
    """Autocast off for ``device``: under AMP the resize matmuls would otherwise run in bf16 / fp16
    (the result is cast back to the input's dtype; the consuming conv / add autocasts as usual)."""
    try:
        return torch.autocast(device_type=device.type, enabled=False)
    except RuntimeError:  # a device type autocast does not know: nothing to turn off
        return contextlib.nullcontext()


def resize_patch_embed(weight: torch.Tensor, new_size: SizeLike, mode: str = 'pi') -> torch.Tensor:
    """Resize a conv patch-embedding kernel (D, C, h, w) to (D, C, *new_size).

    Differentiable w.r.t. ``weight``; the resize matrix is cached.
    """
    if weight.ndim != 4:
        raise ValueError(f'patch-embedding kernel must be (D, C, h, w), got shape {tuple(weight.shape)}')
    old, new = tuple(weight.shape[-2:]), to_2tuple(new_size)
    if old == new:
        return weight
    cdt = _compute_dtype(weight.dtype)
    mat = _on(lambda: kernel_resize_matrix(old, new, mode), ('k', old, new, mode), weight.device, cdt)
    d, c = weight.shape[:2]
    with _full_precision(weight.device):
        out = weight.reshape(d * c, old[0] * old[1]).to(cdt) @ mat.T
    return out.reshape(d, c, *new).to(weight.dtype)


def resize_pos_embed(pos_embed: torch.Tensor, old_grid: SizeLike, new_grid: SizeLike,
                     antialias: bool = True) -> torch.Tensor:
    """Bilinearly resize a grid position embedding (B, old_h*old_w, D) -> (B, new_h*new_w, D).

    ``antialias=True`` (default) matches big_vision (``jax.image.resize``
    'linear') and timm's ``resample_abs_pos_embed``; it only matters when
    shrinking the grid.
    """
    old, new = to_2tuple(old_grid), to_2tuple(new_grid)
    if pos_embed.shape[-2] != old[0] * old[1]:
        raise ValueError(f'position embedding has {pos_embed.shape[-2]} tokens, '
                         f'expected {old[0]}x{old[1]}={old[0] * old[1]} for grid {old}')
    if old == new:
        return pos_embed
    cdt = _compute_dtype(pos_embed.dtype)
    mat = _on(lambda: bilinear_matrix(old, new, antialias), ('p', old, new, antialias),
              pos_embed.device, cdt)
    with _full_precision(pos_embed.device):
        return torch.matmul(mat, pos_embed.to(cdt)).to(pos_embed.dtype)


def clear_caches() -> None:
    """Drop all cached matrices (e.g. in tests or after moving to a new device)."""
    _DEVICE_CACHE.clear()
    for fn in (_bilinear_matrix64, _area_matrix64, _pi_matrix64):
        fn.cache_clear()
