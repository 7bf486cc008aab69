# Cheap transfer (the paper's "fine-tune cheap, deploy small"): fine-tune Mask2Former on FlexiViT-B at a
# fixed large patch p=30 (32 x 32 tokens on the 960 crops instead of 60 x 60 at p=16), then evaluate
# at smaller patches with no extra training: python tools/test.py THIS CKPT --patch 30 24 20 16 12 8
_base_ = ['./coco_panoptic_mask2former_flexi_b.py']
model = dict(backbone=dict(patch_size=30))
custom_hooks = []
val_cfg = dict(type='MultiPatchValLoop', patch_sizes=[30])
test_cfg = dict(type='MultiPatchTestLoop', patch_sizes=[30, 24, 20, 16, 12, 10, 8])
