# Cheap-transfer workflow on the toy data: train at a fixed large patch (30 -> 4x4 tokens),
# evaluate at smaller ones with no extra training.
_base_ = ['./tiny_seg_flexi.py']
model = dict(backbone=dict(patch_size=30))
custom_hooks = []
val_cfg = dict(type='MultiPatchValLoop', patch_sizes=[30])
test_cfg = dict(type='MultiPatchTestLoop', patch_sizes=[30, 24, 15, 12])
