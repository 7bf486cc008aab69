# Fine-tune FlexiViT-B on ImageNet-1k with random patch sizes (stays flexible).
_base_ = ['./imagenet_flexi_b_ft_p30.py']
model = dict(backbone=dict(patch_size=16))
custom_hooks = [dict(type='RandomPatchSizeHook', patch_sizes=[48, 40, 30, 24, 20, 16, 15, 12, 10, 8])]
val_cfg = dict(type='MultiPatchValLoop', patch_sizes=[30, 16, 8])
