# Tiny plain ViT at a fixed patch 6 (kernel stored at 6x6, 10x10 grid): the FlexiDistill teacher.
_base_ = ['./tiny_cls_flexi.py']
model = dict(backbone=dict(patch_size=6, base_patch_size=6, base_pos_grid=10))
custom_hooks = []
val_cfg = dict(type='MultiPatchValLoop', patch_sizes=[6])
test_cfg = dict(type='MultiPatchTestLoop', patch_sizes=[6])
