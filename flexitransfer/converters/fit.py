"""How a checkpoint fits a FlexiViT's store (the kernel at ``base_patch_size``, the position grid at
``base_pos_grid``): the one line every pretrained load and every conversion prints, and the warning
when the store loses what the checkpoint holds.

A store is lossy when resizing the checkpoint's kernel or grid into it and back to the checkpoint's
own patch / grid (what a forward there does) is not the identity. That is measured on the weights,
never assumed: the PI-resize up (16 -> 32) is injective, but the forward's PI-resize down (32 -> 16)
is the least-squares fit for *downsampled* patches, not its inverse, so 16 -> 32 -> 16 changes the
kernel; a grid grown by an odd factor without antialias comes back exactly. The warning then names
the relative error of the backbone's output at the checkpoint's own patch and image size (one
forward, batch 1, a seeded random input) and the argument that avoids it.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Optional, Tuple

import torch

from ..ops import resize_patch_embed, resize_pos_embed, to_2tuple

#: relative change above which a round trip is not the identity (float32 rounding stays far below)
ROUND_TRIP_TOL = 1e-5
#: a larger backbone is not copied for the output measurement (the warning still names what is lossy)
MAX_MEASURED_PARAMS = 400_000_000


def _size(s) -> str:
    return f'{s[0]}x{s[1]}'


def _rel(ref: torch.Tensor, other: torch.Tensor) -> float:
    """||ref - other|| / ||ref|| in float64 (0 when both are zero)."""
    ref, other = ref.detach().double().cpu(), other.detach().double().cpu()
    diff, norm = (ref - other).norm().item(), ref.norm().item()
    return diff / norm if norm > 0 else (0.0 if diff == 0 else float('inf'))


@dataclass
class StoreFit:
    """What putting a checkpoint's kernel and position grid into a FlexiViT's store did.

    ``patch`` / ``grid``: the checkpoint's own kernel size and position grid; ``store_patch`` /
    ``store_grid``: the backbone's; ``lossy``: the pieces whose round trip is not the identity
    ('kernel', 'grid'); ``error``: relative error of the backbone's output at the checkpoint's own
    patch and image size (0 when nothing is lossy, None when not measured: a huge backbone).
    """
    patch: Tuple[int, int]
    grid: Tuple[int, int]
    store_patch: Tuple[int, int]
    store_grid: Tuple[int, int]
    lossy: Tuple[str, ...] = ()
    error: Optional[float] = 0.0

    def resizes(self) -> str:
        """What was resized from what to what.

        Returns:
            str: e.g. 'patch kernel 16x16 -> store 32x32 (PI-resize), position grid 14x14 kept'.
        """
        k = (f'patch kernel {_size(self.patch)} -> store {_size(self.store_patch)} (PI-resize)'
             if self.patch != self.store_patch else f'patch kernel {_size(self.patch)} kept')
        g = (f'position grid {_size(self.grid)} -> store {_size(self.store_grid)} (bilinear)'
             if self.grid != self.store_grid else f'position grid {_size(self.grid)} kept')
        return f'{k}, {g}'

    def error_text(self) -> str:
        """The measured error, in words.

        Returns:
            str: e.g. "3.2% relative error of the output at the checkpoint's own patch 16x16 on 224x224 images".
        """
        img = _size((self.patch[0] * self.grid[0], self.patch[1] * self.grid[1]))
        what = ('an output error not measured (a backbone this large is not copied)' if self.error is None
                else f'{100 * self.error:.2g}% relative error of the output')
        return f"{what} at the checkpoint's own patch {_size(self.patch)} on {img} images"

    def fix(self, cli: bool = False) -> str:
        """The arguments that keep the checkpoint exact.

        Args:
            cli (bool): name ``tools/convert_weights.py``'s ``--base-patch`` for the kernel. Default: False.

        Returns:
            str: e.g. 'base_patch_size=16, base_pos_grid=14'.
        """
        args = []
        if 'kernel' in self.lossy:
            p = self.patch[0] if self.patch[0] == self.patch[1] else self.patch
            args.append(f'--base-patch {p} or no --base-patch' if cli else f'base_patch_size={p}')
        if 'grid' in self.lossy:
            g = self.grid[0] if self.grid[0] == self.grid[1] else self.grid
            args.append(f'base_pos_grid={g}')
        return ', '.join(args)

    def note(self, cli: bool = False) -> str:
        """The lossy part of a one-line summary.

        Args:
            cli (bool): as :meth:`fix`'s.

        Returns:
            str: '' or, for a lossy store, '; LOSSY: <error_text> (<fix> avoids it)'.
        """
        return f'; LOSSY: {self.error_text()} ({self.fix(cli)} avoids it)' if self.lossy else ''

    def warn(self, what: str, cli: bool = False) -> None:
        """Raise a one-line ``UserWarning`` when the store is lossy (nothing otherwise).

        Args:
            what (str): the load or conversion, e.g. "pretrained 'model.safetensors'".
            cli (bool): as :meth:`fix`'s.
        """
        if not self.lossy:
            return
        trips = ' and '.join(
            f'patch kernel {_size(self.patch)} -> {_size(self.store_patch)} -> {_size(self.patch)}' if p == 'kernel'
            else f'position grid {_size(self.grid)} -> {_size(self.store_grid)} -> {_size(self.grid)}'
            for p in self.lossy)
        how, verb = 'convert with' if cli else 'build the backbone with', 'are' if len(self.lossy) > 1 else 'is'
        warnings.warn(f'{what}: the store loses what the checkpoint holds ({trips} {verb} not the identity): '
                      f'{self.error_text()}; {how} {self.fix(cli)} to keep it exact', UserWarning, stacklevel=3)


def store_fit(backbone, kernel: Optional[torch.Tensor], pos: Optional[torch.Tensor], grid=None) -> StoreFit:
    """Measure how ``backbone`` (already loaded) keeps a checkpoint's ``kernel`` and ``pos`` grid.

    Args:
        backbone (FlexiViT): the backbone holding the stored (resized) weights.
        kernel (torch.Tensor, optional): the checkpoint's patch-embedding kernel (D, C, p, p) before
            any resize; None: the backbone's own (nothing to compare).
        pos (torch.Tensor, optional): the checkpoint's grid position embedding (1, N, D); None: the
            backbone's own.
        grid (tuple[int, int], optional): ``pos``'s grid. Default: the backbone's store grid.

    Returns:
        StoreFit: sizes, the lossy pieces and the measured output error.
    """
    store_patch, store_grid = tuple(backbone.base_patch_size), tuple(backbone.base_pos_grid)
    w, p = backbone.patch_embed.weight, backbone.pos_embed
    kernel = w if kernel is None else kernel
    pos, grid = (p, store_grid) if pos is None else (pos, to_2tuple(grid) if grid is not None else store_grid)
    patch = tuple(kernel.shape[-2:])
    fit = StoreFit(patch, grid, store_patch, store_grid)
    with torch.no_grad():  # back from the store as a forward at the checkpoint's patch / grid resizes
        back_w = resize_patch_embed(w, patch, backbone.kernel_resize)
        back_p = resize_pos_embed(p, store_grid, grid, backbone.pos_resize_antialias)
    fit.lossy = tuple(name for name, src, back in (('kernel', kernel, back_w), ('grid', pos, back_p))
                      if _rel(src, back) > ROUND_TRIP_TOL)
    if fit.lossy:
        small = sum(t.numel() for t in backbone.parameters()) <= MAX_MEASURED_PARAMS
        fit.error = _output_error(backbone, kernel, pos, patch, grid) if small else None
    return fit


def _output_error(backbone, kernel, pos, patch, grid) -> float:
    """||a - b|| / ||a|| of ``forward_features`` at ``patch`` on (patch x grid)-sized images: a with the
    checkpoint's kernel and grid, b with the store's resized back (a baked copy; ``backbone`` is unchanged)."""
    img = (patch[0] * grid[0], patch[1] * grid[1])
    model = backbone.bake(patch, img).eval()
    w = model.patch_embed.weight
    x = torch.randn(1, backbone.in_channels, *img, generator=torch.Generator().manual_seed(0)).to(w)
    with torch.no_grad():
        stored = model.forward_features(x, patch)
        model.patch_embed.weight.copy_(kernel)
        model.pos_embed.copy_(pos)
        source = model.forward_features(x, patch)
    return _rel(source, stored)
