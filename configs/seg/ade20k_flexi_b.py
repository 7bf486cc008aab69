# Segmenter (mask transformer) on FlexiViT-B, ADE20k, 480x480, random patch sizes while
# fine-tuning; evaluation at several patch sizes. Backbone from converted FlexiViT-B weights:
#   python tools/convert_weights.py flexivit_b_i1k.npz checkpoints/flexivit_b_i1k.pth --from big_vision
_base_ = ['../_base_/models/segmenter_flexi_b.py', '../_base_/datasets/ade20k_480.py',
          '../_base_/default_runtime_seg.py', '../_base_/schedules/seg_160k.py']
model = dict(decode_head=dict(num_classes=150))
custom_hooks = [dict(type='RandomPatchSizeHook', patch_sizes=[48, 40, 30, 24, 20, 16, 15, 12, 10, 8])]
train_dataloader = dict(batch_size=2)  # x 4 GPUs = 8
test_cfg = dict(type='MultiPatchTestLoop', patch_sizes=[8, 10, 12, 16, 20, 24, 30, 48])
