"""What every toy generator shares: the colour classes, the shapes and how to draw them.

Images are simple coloured shapes on a noisy background; the *colour* decides the class, the
shape and place are random.
"""
from __future__ import annotations

from typing import Dict, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

#: class name -> RGB. Index i here is ADE-style label value i + 2 (0 = unlabeled, 1 = ground).
SHAPE_COLORS: Dict[str, Tuple[int, int, int]] = {
    'red': (220, 40, 40), 'green': (40, 180, 60), 'blue': (40, 70, 220), 'yellow': (230, 210, 40),
}
TOY_SEG_CLASSES = ('ground',) + tuple(SHAPE_COLORS)
TOY_SEG_PALETTE = [[120, 120, 120]] + [list(c) for c in SHAPE_COLORS.values()]
SHAPES = ('circle', 'square', 'triangle')


def draw_shape(draw: ImageDraw.ImageDraw, kind: str, box: Sequence[int], fill) -> None:
    x0, y0, x1, y1 = box
    if kind == 'circle':
        draw.ellipse(box, fill=fill)
    elif kind == 'square':
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=fill)


def render_shape_image(rng: np.random.Generator, size: Tuple[int, int], color: str) -> np.ndarray:
    """One shape (random kind, size and place) of a class colour on a noisy background: class = colour."""
    h, w = size
    img = Image.fromarray(rng.normal(128, 20, size=(h, w, 3)).clip(0, 255).astype(np.uint8))
    s = int(rng.integers(min(h, w) * 2 // 5, min(h, w) * 4 // 5))
    x0, y0 = int(rng.integers(0, w - s)), int(rng.integers(0, h - s))
    rgb = tuple(int(v) for v in np.clip(np.array(SHAPE_COLORS[color]) + rng.normal(0, 15, 3), 0, 255))
    draw_shape(ImageDraw.Draw(img), SHAPES[int(rng.integers(len(SHAPES)))], [x0, y0, x0 + s, y0 + s], rgb)
    return np.asarray(img)
