from __future__ import annotations

from typing import Optional, Sequence

from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from ..models.backbones.flexivit import DEFAULT_PATCH_SIZES
from ..ops import to_2tuple
from .patch_size import draw_patch_size, get_patch_size, normalize_probs, set_patch_size


@HOOKS.register_module()
class RandomPatchSizeHook(Hook):
    """FlexiViT training: a random patch size every iteration.

    Args:
        patch_sizes: the sizes to draw from (default: the paper's 48..8). Every
            training crop must be divisible by each of them.
        probs: optional weights, one per size.
        seed: the draw is ``f(seed, iteration)``, identical on every rank.
        eval_patch_size: patch size for validation during training (default: the
            model's own ``patch_size`` as configured). Multi-patch validation
            loops set their own.
    """
    priority = 'ABOVE_NORMAL'

    def __init__(self, patch_sizes: Sequence = DEFAULT_PATCH_SIZES, probs: Optional[Sequence[float]] = None,
                 seed: int = 0, eval_patch_size=None):
        self.patch_sizes = list(patch_sizes)
        self.probs = probs
        normalize_probs(self.patch_sizes, probs)  # validate early
        self.seed = seed
        self.eval_patch_size = eval_patch_size
        self._default = None

    def most_expensive_patch(self):
        """The patch size of the heaviest step this hook can draw: the smallest patch area (the most tokens)
        among the sizes whose probability is not zero (the memory preflight runs it, engine/preflight.py).

        Returns:
            int | tuple: that patch size, as configured.
        """
        probs = normalize_probs(self.patch_sizes, self.probs)
        drawable = [p for i, p in enumerate(self.patch_sizes) if probs is None or probs[i] > 0]
        return min(drawable, key=lambda p: to_2tuple(p)[0] * to_2tuple(p)[1])

    def before_train(self, runner) -> None:
        self._default = get_patch_size(runner.model)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        p = draw_patch_size(runner.iter, self.patch_sizes, self.probs, self.seed)
        set_patch_size(runner.model, p)
        runner.message_hub.update_info('patch_size', p)

    def _eval_patch(self, runner) -> None:
        p = self.eval_patch_size or self._default
        if p is not None:
            set_patch_size(runner.model, p)

    def before_val(self, runner) -> None:
        self._eval_patch(runner)

    def after_train(self, runner) -> None:
        self._eval_patch(runner)
