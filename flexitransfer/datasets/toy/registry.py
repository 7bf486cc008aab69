"""Registry of the tiny-dataset generators, so ``tools/make_toy_data.py KIND`` finds each one.

Every generator is ``fn(root, num_train, num_val, size, seed) -> root`` and writes one real
on-disk format. Registering it (one decorator in its own file) is all a new format needs.
"""
from __future__ import annotations

import os.path as osp
from dataclasses import dataclass
from typing import Callable, Dict, Tuple


@dataclass(frozen=True)
class ToyFormat:
    kind: str
    fn: Callable[..., str]
    root: str
    size: Tuple[int, int]
    num_train: int
    num_val: int
    per_class: bool = False  # counts are per class, not images


TOY_DATASETS: Dict[str, ToyFormat] = {}


def register_toy(kind: str, root: str, size: Tuple[int, int], num_train: int, num_val: int, per_class: bool = False):
    """Decorator: make ``fn`` available as ``tools/make_toy_data.py kind`` with these defaults."""
    def deco(fn):
        if kind in TOY_DATASETS:
            raise KeyError(f'toy dataset kind {kind!r} is registered twice ({TOY_DATASETS[kind].fn.__module__} '
                           f'and {fn.__module__})')
        TOY_DATASETS[kind] = ToyFormat(kind, fn, root, tuple(size), num_train, num_val, per_class)
        return fn
    return deco


def ensure_toy(kind: str, base: str = '.') -> str:
    """The folder of ``kind`` (its registered root under ``base``), generated with its registered
    defaults (as ``tools/make_toy_data.py KIND``) when it does not exist yet."""
    t = TOY_DATASETS[kind]
    root = osp.join(base, t.root)
    if not osp.isdir(root):
        print(f'generating {t.root} (tools/make_toy_data.py {kind})', flush=True)
        t.fn(root, num_train=t.num_train, num_val=t.num_val, size=t.size)
    return root
