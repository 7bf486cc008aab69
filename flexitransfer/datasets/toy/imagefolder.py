"""ImageNet layout: ``split/<class>/<img>.JPEG`` folders and ``meta/<split>.txt`` list files."""
from __future__ import annotations

import os
import os.path as osp
from typing import Sequence, Tuple

import numpy as np
from PIL import Image

from .common import SHAPE_COLORS, render_shape_image
from .registry import register_toy


@register_toy('cls', root='data/toy_cls', size=(60, 60), num_train=96, num_val=24, per_class=True)
def make_imagefolder_like(root: str, num_train: int = 40, num_val: int = 12, size: Tuple[int, int] = (60, 60),
                          classes: Sequence[str] = tuple(SHAPE_COLORS), seed: int = 0) -> str:
    """ImageNet-style tree ``root/{train,val}/<class>/*.JPEG`` plus ``root/meta/val.txt``
    (``class/file.JPEG label`` lines, as ImageNet's list files). Counts are per class."""
    rng = np.random.default_rng(seed)
    os.makedirs(osp.join(root, 'meta'), exist_ok=True)
    for split, n in (('train', num_train), ('val', num_val)):
        lines = []
        for label, c in enumerate(sorted(classes)):  # ImageNet convention: label = index of sorted folder
            os.makedirs(osp.join(root, split, c), exist_ok=True)
            for i in range(n):
                name = f'{c}_{split}_{i:05d}.JPEG'
                Image.fromarray(render_shape_image(rng, size, c)).save(osp.join(root, split, c, name), 'JPEG',
                                                                        quality=95)
                lines.append(f'{c}/{name} {label}')
        with open(osp.join(root, 'meta', f'{split}.txt'), 'w') as f:
            f.write('\n'.join(lines) + '\n')
    return root
