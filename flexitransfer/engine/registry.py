"""The 'function' registries mmseg and mmdet do not declare.

mmengine's inferencers look their collate function up with
``FUNCTIONS.switch_scope_and_registry(scope)``; mmseg 1.2.2 and mmdet 3.3.0 declare no FUNCTIONS
registry, so every ``MMSegInferencer`` / ``DetInferencer`` logged "Failed to search registry with
scope ... in the 'function' registry tree" and fell back to mmengine's registry. Declaring the two
empty child registries is that fallback without the warning: a lookup in a child registry goes on
to its parent, mmengine's FUNCTIONS (``pseudo_collate`` and friends).
"""
from __future__ import annotations

from importlib import import_module
from typing import Sequence


def declare_function_registries(scopes: Sequence[str] = ('mmseg', 'mmdet')) -> None:
    """Give each installed scope in ``scopes`` a 'function' registry under mmengine's, where it has none.

    Args:
        scopes: OpenMMLab package names (default scopes of the configs).
    """
    from mmengine.registry import FUNCTIONS, Registry
    for scope in scopes:
        try:
            import_module(f'{scope}.registry')  # a later version may declare its own: it registers first
        except ImportError:
            continue
        if scope not in FUNCTIONS.children:
            Registry('function', parent=FUNCTIONS, scope=scope)  # kept alive by its parent's children
