# "Fine-tune cheap, deploy small": fine-tune at a fixed large patch (30 -> 16x16 tokens on a
# 480 crop, ~3.5x fewer than patch 16), then evaluate at smaller patches with no extra training.
_base_ = ['./ade20k_flexi_b.py']
model = dict(backbone=dict(patch_size=30))
custom_hooks = []
val_cfg = dict(type='MultiPatchValLoop', patch_sizes=[30])
test_cfg = dict(type='MultiPatchTestLoop', patch_sizes=[30, 24, 20, 16, 12, 10, 8])
