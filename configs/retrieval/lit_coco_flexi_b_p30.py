# Cheap variant: LiT trained with the image tower at a fixed patch 30, evaluated at smaller patches.
_base_ = ['./lit_coco_flexi_b.py']
model = dict(image_backbone=dict(patch_size=30))
custom_hooks = []
val_cfg = dict(type='MultiPatchValLoop', patch_sizes=[30])
