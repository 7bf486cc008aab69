"""CIFAR-10 / CIFAR-100 python pickles."""
from __future__ import annotations

import os
import os.path as osp

import numpy as np

from .common import SHAPE_COLORS, render_shape_image


def make_cifar_like(root: str, cifar100: bool = False, num_train: int = 50, num_test: int = 20, seed: int = 0) -> str:
    """CIFAR python pickles: ``cifar-10-batches-py`` (5 train batches, test_batch, batches.meta)
    or ``cifar-100-python`` (train, test, meta with fine/coarse names). 32x32 shape images."""
    import pickle
    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)

    def batch(n):
        names = list(SHAPE_COLORS)
        labels = [int(i % len(names)) for i in range(n)]
        data = np.stack([render_shape_image(rng, (32, 32), names[y]).transpose(2, 0, 1).reshape(-1) for y in labels])
        return data.astype(np.uint8), labels

    dump = lambda obj, name: pickle.dump(obj, open(osp.join(root, name), 'wb'))
    if cifar100:
        for split, n in (('train', num_train), ('test', num_test)):
            data, labels = batch(n)
            dump({b'data': data, b'fine_labels': labels, b'coarse_labels': [0] * n,
                  b'filenames': [f'{i}.png'.encode() for i in range(n)]}, split)
        dump({b'fine_label_names': [c.encode() for c in SHAPE_COLORS], b'coarse_label_names': [b'shape']}, 'meta')
    else:
        per = max(1, num_train // 5)
        for i in range(1, 6):
            data, labels = batch(per)
            dump({b'data': data, b'labels': labels, b'batch_label': f'training batch {i}'.encode()}, f'data_batch_{i}')
        data, labels = batch(num_test)
        dump({b'data': data, b'labels': labels}, 'test_batch')
        dump({b'label_names': [c.encode() for c in SHAPE_COLORS], b'num_vis': 3072}, 'batches.meta')
    return root
