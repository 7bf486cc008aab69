"""Linear CKA with the unbiased HSIC estimator, accumulated over minibatches.

Minibatch CKA (Nguyen, Raghu & Kornblith, "Do wide and deep networks learn the same
things?", ICLR 2021): for minibatches b with linear Gram matrices K_b = X_b X_bᵀ and
L_b = Y_b Y_bᵀ,

    CKA(X, Y) = Σ_b HSIC₁(K_b, L_b) / sqrt(Σ_b HSIC₁(K_b, K_b) · Σ_b HSIC₁(L_b, L_b))

with the unbiased estimator of Song et al. (2012), K̃ = K with its diagonal set to 0:

    HSIC₁(K, L) = [tr(K̃L̃) + (1ᵀK̃1)(1ᵀL̃1) / ((n-1)(n-2)) - 2/(n-2) · 1ᵀK̃L̃1] / (n(n-3)).

For linear kernels every term can be had from the features without forming K
(``space='feature'``, O(n·dx·dy) instead of O(n²·d)):
tr(K̃L̃) = ‖XᵀY‖²_F - Σᵢ kᵢᵢlᵢᵢ, 1ᵀK̃1 = ‖Xᵀ1‖² - Σᵢ kᵢᵢ, K̃1 = X(Xᵀ1) - diag(K).
Sums run in float64. Rows are examples (images, or tokens of images on a common grid).
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch

SPACES = ('auto', 'gram', 'feature')


def _check(x: torch.Tensor, name: str) -> torch.Tensor:
    if x.ndim != 2:
        raise ValueError(f'{name} must be (examples, features), got shape {tuple(x.shape)}: flatten it first')
    if x.shape[0] < 4:
        raise ValueError(f'{name} has {x.shape[0]} examples; the unbiased HSIC needs at least 4 per minibatch')
    return x.detach().to(torch.float64)


class _Stats:
    """What one representation contributes to HSIC₁ on one minibatch."""

    def __init__(self, x: torch.Tensor, space: str):
        self.n = x.shape[0]
        self.diag = (x * x).sum(1)                       # kᵢᵢ
        colsum = x.sum(0)                                # Xᵀ1
        self.total = colsum @ colsum - self.diag.sum()   # 1ᵀK̃1
        self.row = x @ colsum - self.diag                # K̃1
        self.x = x
        self.gram = None
        if space == 'gram':
            k = x @ x.T
            k.diagonal().zero_()
            self.gram = k


def _space(n: int, dx: int, dy: int, space: str) -> str:
    if space not in SPACES:
        raise ValueError(f'space must be one of {SPACES}, got {space!r}')
    if space == 'auto':
        return 'gram' if n * n * (dx + dy) <= n * dx * dy else 'feature'
    return space


def _hsic(a: _Stats, b: _Stats) -> torch.Tensor:
    n = a.n
    if a.gram is not None and b.gram is not None:
        trace = (a.gram * b.gram).sum()
    else:
        trace = (a.x.T @ b.x).square().sum() - (a.diag * b.diag).sum()
    return (trace + a.total * b.total / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * (a.row @ b.row)) / (n * (n - 3))


def hsic_unbiased(x: torch.Tensor, y: torch.Tensor, space: str = 'auto') -> torch.Tensor:
    """HSIC₁ of the linear kernels of ``x`` (n, dx) and ``y`` (n, dy), as a float64 scalar."""
    x, y = _check(x, 'x'), _check(y, 'y')
    if x.shape[0] != y.shape[0]:
        raise ValueError(f'x and y must hold the same examples: {x.shape[0]} vs {y.shape[0]} rows')
    s = _space(x.shape[0], x.shape[1], y.shape[1], space)
    return _hsic(_Stats(x, s), _Stats(y, s))


def linear_cka(x: torch.Tensor, y: torch.Tensor, space: str = 'auto') -> float:
    """CKA of one minibatch (unbiased HSIC)."""
    m = MinibatchCKA(1, 1, space=space)
    m.update([x], [y])
    return float(m.compute()[0, 0])


class MinibatchCKA:
    """Accumulates CKA between every representation of a list ``xs`` and of a list ``ys``.

    ``update(xs, ys)`` takes one minibatch: ``len(xs) == num_x`` tensors (n, d_i) and
    ``len(ys) == num_y`` tensors (n, d_j), all with the same n rows (the same examples).
    ``ys=None`` compares ``xs`` with itself. ``compute()`` gives the (num_x, num_y) CKA matrix.
    """

    def __init__(self, num_x: int, num_y: Optional[int] = None, space: str = 'auto'):
        if space not in SPACES:
            raise ValueError(f'space must be one of {SPACES}, got {space!r}')
        self.num_x, self.num_y = num_x, num_x if num_y is None else num_y
        self.space = space
        self.xy = torch.zeros(self.num_x, self.num_y, dtype=torch.float64)
        self.xx = torch.zeros(self.num_x, dtype=torch.float64)
        self.yy = torch.zeros(self.num_y, dtype=torch.float64)
        self.batches = 0

    def _stats(self, reps: Sequence[torch.Tensor], name: str, n: int, d_other: int) -> List[_Stats]:
        out = []
        for i, r in enumerate(reps):
            r = _check(r, f'{name}[{i}]')
            if r.shape[0] != n:
                raise ValueError(f'{name}[{i}] has {r.shape[0]} rows, expected {n} (the same examples)')
            out.append(_Stats(r, _space(n, r.shape[1], d_other, self.space)))
        return out

    def update(self, xs: Sequence[torch.Tensor], ys: Optional[Sequence[torch.Tensor]] = None) -> None:
        same = ys is None
        ys = xs if same else ys
        if len(xs) != self.num_x or len(ys) != self.num_y:
            raise ValueError(f'expected {self.num_x} x and {self.num_y} y representations, got {len(xs)} and '
                             f'{len(ys)}')
        n = xs[0].shape[0]
        d = max(r.shape[-1] for r in list(xs) + list(ys))
        sx = self._stats(xs, 'xs', n, d)
        sy = sx if same else self._stats(ys, 'ys', n, d)
        for i, a in enumerate(sx):
            self.xx[i] += _hsic(a, a)
            for j, b in enumerate(sy):
                self.xy[i, j] += _hsic(a, b)
        if same:
            self.yy = self.xx.clone()
        else:
            self.yy += torch.stack([_hsic(b, b) for b in sy])
        self.batches += 1

    def compute(self) -> torch.Tensor:
        if not self.batches:
            raise RuntimeError('MinibatchCKA.compute() before any update()')
        return self.xy / torch.sqrt(self.xx[:, None] * self.yy[None, :])
