# Mask2Former + stride-aware simple feature pyramid on FlexiViT-B, COCO panoptic, random patch sizes
# while fine-tuning, evaluation at several patch sizes (PQ / SQ / RQ, things / stuff per patch).
# Backbone from converted FlexiViT-B weights:
#   python tools/convert_weights.py flexivit_b_i1k.npz checkpoints/flexivit_b_i1k.pth --from big_vision
_base_ = ['../_base_/models/mask2former_flexi_b_panoptic.py', '../_base_/datasets/coco_panoptic_960.py',
          '../_base_/default_runtime_panoptic.py', '../_base_/schedules/mask2former_panoptic_50e.py']
custom_hooks = [dict(type='RandomPatchSizeHook', patch_sizes=[48, 40, 30, 24, 20, 16, 15, 12, 10, 8])]
train_dataloader = dict(batch_size=2)  # x 8 GPUs = 16
test_cfg = dict(type='MultiPatchTestLoop', patch_sizes=[8, 10, 12, 16, 20, 24, 30, 48])
