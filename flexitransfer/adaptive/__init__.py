"""Adaptive compute from one set of FlexiViT weights.

* ``partition``: quadtree partitions (patches s, 2s, 4s) and the detail score;
* ``mixed``: the mixed-patch tokens (one sequence of tokens of several patch sizes, padded and
  masked across a batch; the backbone's own blocks and outputs run them) and the way task models use
  them (``use_mixed_patches``; token counts through ``engine.record_tokens``);
* ``cascade``: per-image anytime cascades over patch sizes (``FlexiCascade``) and their calibration.

This package sits under the engine's patch policy: it imports models, ops and the patch-size setter
(`engine/patch_size.py`, which imports models only); the engine's mixed-patch hook imports it.
Dispatch by model type goes through the class hierarchy (``isinstance``), never by class name.
"""
from .cascade import (
                      NEVER,
                      CascadeResult,
                      FlexiCascade,
                      calibrate,
                      classifier_logits_fn,
                      confidence,
                      load_thresholds,
                      logits_fn_for,
                      save_thresholds,
                      simulate,
                      stop_stages,
                      stops_result,
                      zero_shot_logits_fn,
)
from .cost import stage_gflops, uniform_tokens, vit_flops
from .mixed import (
                      MixedPatchPolicy,
                      MixedTokens,
                      forward_mixed,
                      get_mixed_policy,
                      mixed_tokens,
                      set_mixed_policy,
                      use_mixed_patches,
)
from .partition import (
                      allowed_levels,
                      check_partition,
                      laplacian_detail,
                      partition_by_budget,
                      partition_by_threshold,
                      random_partition,
                      token_count,
                      uniform_partition,
)

__all__ = ['NEVER', 'CascadeResult', 'FlexiCascade', 'calibrate', 'classifier_logits_fn', 'confidence',
           'logits_fn_for', 'zero_shot_logits_fn',
           'load_thresholds', 'save_thresholds', 'simulate', 'stop_stages', 'stops_result', 'stage_gflops',
           'uniform_tokens', 'vit_flops',
           'MixedPatchPolicy', 'MixedTokens', 'forward_mixed', 'get_mixed_policy', 'mixed_tokens', 'set_mixed_policy',
           'use_mixed_patches', 'allowed_levels', 'check_partition', 'laplacian_detail', 'partition_by_budget',
           'partition_by_threshold', 'random_partition', 'token_count', 'uniform_partition']
