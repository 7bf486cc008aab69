"""Training with mixed patch sizes inside each image (``flexitransfer.adaptive``): a random partition
policy every iteration, as ``RandomPatchSizeHook`` draws one patch size."""
from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from ..adaptive.mixed import MixedPatchPolicy, set_mixed_policy


def draw_mixed_policy(iteration: int, base_patches: Sequence[int], num_levels: int = 3,
                      min_fraction: Optional[float] = None, seed: int = 0) -> MixedPatchPolicy:
    """The partition policy of training iteration ``iteration``: a pure function of (seed, iteration).

    The finest patch s is drawn from ``base_patches`` and a token budget fraction uniformly from
    ``[min_fraction, 1]`` of the finest grid's token count (default ``min_fraction``: the all-coarsest
    count, ``4**-(num_levels-1)``); each image is then split greedily by its own detail score.
    """
    rng = np.random.default_rng([int(seed), int(iteration), 0x4D49])  # 'MI': independent of the patch draw
    s = int(base_patches[int(rng.integers(len(base_patches)))])
    lo = 4.0 ** -(num_levels - 1) if min_fraction is None else float(min_fraction)
    frac = float(rng.uniform(lo, 1.0))
    return MixedPatchPolicy(s, num_levels=num_levels, budget=frac)


@HOOKS.register_module()
class MixedPartitionHook(Hook):
    """Fine-tune a FlexiViT on mixed partitions: every iteration, every rank draws the same policy
    (finest patch s from ``base_patches``, a token budget fraction) and each image in the batch is
    partitioned by its detail score under that budget (``flexitransfer.adaptive``).

    Validation and the end of training run the ordinary uniform forward (the multi-patch loops set p);
    ``eval_policy`` (a ``MixedPatchPolicy`` kwargs dict) makes validation run mixed instead.

    Args:
        base_patches: finest patch sizes to draw from; ``s * 2**(num_levels-1)`` should divide the crop
            (fewer levels are used where it does not).
        num_levels: levels of the quadtree (s, 2s, 4s).
        min_fraction: the smallest budget drawn, as a fraction of the finest token count.
        seed: the draw is ``f(seed, iteration)``.
    """
    priority = 'ABOVE_NORMAL'

    def __init__(self, base_patches: Union[int, Sequence[int]] = 8, num_levels: int = 3,
                 min_fraction: Optional[float] = None, seed: int = 0, eval_policy: Optional[dict] = None):
        self.base_patches = [base_patches] if isinstance(base_patches, int) else list(base_patches)
        if not self.base_patches or any(int(p) <= 0 for p in self.base_patches):
            raise ValueError(f'base_patches must be positive patch sizes, got {base_patches!r}')
        if num_levels < 1:
            raise ValueError(f'num_levels must be >= 1, got {num_levels}')
        self.num_levels, self.min_fraction, self.seed = num_levels, min_fraction, seed
        self.eval_policy = eval_policy

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        policy = draw_mixed_policy(runner.iter, self.base_patches, self.num_levels, self.min_fraction, self.seed)
        set_mixed_policy(runner.model, policy)
        runner.message_hub.update_info('mixed_budget', policy.budget)

    def _eval(self, runner) -> None:
        set_mixed_policy(runner.model, MixedPatchPolicy(**self.eval_policy) if self.eval_policy else None)

    def before_val(self, runner) -> None:
        self._eval(runner)

    def before_test(self, runner) -> None:
        self._eval(runner)

    def after_train(self, runner) -> None:
        self._eval(runner)
