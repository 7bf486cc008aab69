# FlexiViT-B pre-training from scratch on ImageNet-1k with random patch sizes (paper: 240 px,
# p ~ U{48..8}, AdamW, cosine, 90-1200 epochs; batch 4096 in the paper).
_base_ = ['../_base_/models/flexi_b_classifier.py', '../_base_/datasets/imagenet_240.py',
          '../_base_/default_runtime_cls.py']
model = dict(num_classes=1000, head_zero_init=True, label_smoothing=0.0,
             backbone=dict(pretrained=None, drop_path_rate=0.1))
custom_hooks = [dict(type='RandomPatchSizeHook', patch_sizes=[48, 40, 30, 24, 20, 16, 15, 12, 10, 8])]
optim_wrapper = dict(type='AmpOptimWrapper', optimizer=dict(type='AdamW', lr=1e-3, weight_decay=1e-4,
                                                              betas=(0.9, 0.999)), clip_grad=dict(max_norm=1.0))
param_scheduler = [dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=10, convert_to_iter_based=True),
                   dict(type='CosineAnnealingLR', by_epoch=True, begin=10, end=90, eta_min=1e-5,
                        convert_to_iter_based=True)]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=90, val_interval=5)
val_cfg = dict(type='MultiPatchValLoop', patch_sizes=[30, 16, 8])
test_cfg = dict(type='MultiPatchTestLoop', patch_sizes=[48, 40, 30, 24, 20, 16, 15, 12, 10, 8])
train_dataloader = dict(batch_size=128)
auto_scale_lr = dict(base_batch_size=4096)
