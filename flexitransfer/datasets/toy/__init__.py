"""Tiny datasets in the real on-disk formats, so every task runs end to end on a CPU.

One file per format; each registers its generator with ``register_toy`` (see ``registry.py``).
Every module of this package is imported here, so a new format is one new file.
"""
import importlib
import pkgutil

from .common import SHAPE_COLORS, SHAPES, TOY_SEG_CLASSES, TOY_SEG_PALETTE, draw_shape, render_shape_image
from .registry import TOY_DATASETS, ToyFormat, ensure_toy, register_toy

for _m in pkgutil.iter_modules(__path__):
    importlib.import_module(f'{__name__}.{_m.name}')

from .ade20k import make_ade20k_like, render_scene  # noqa: E402
from .cifar import make_cifar_like  # noqa: E402
from .coco_captions import make_coco_captions_like, render_pair  # noqa: E402
from .imagefolder import make_imagefolder_like  # noqa: E402

__all__ = ['SHAPE_COLORS', 'SHAPES', 'TOY_SEG_CLASSES', 'TOY_SEG_PALETTE', 'TOY_DATASETS', 'ToyFormat', 'draw_shape',
           'ensure_toy', 'make_ade20k_like', 'make_cifar_like', 'make_coco_captions_like', 'make_imagefolder_like',
           'register_toy', 'render_pair', 'render_scene', 'render_shape_image']
