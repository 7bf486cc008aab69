# LiT on COCO (Karpathy 5k test) with a locked FlexiViT-B, random image patch sizes while training.
_base_ = ['../_base_/models/lit_flexi_b.py', '../_base_/datasets/coco_karpathy_240.py',
          '../_base_/default_runtime_cls.py']
custom_hooks = [dict(type='RandomPatchSizeHook', patch_sizes=[48, 40, 30, 24, 20, 16, 15, 12, 10, 8])]
optim_wrapper = dict(type='AmpOptimWrapper', optimizer=dict(type='AdamW', lr=1e-4, weight_decay=1e-4),
                     clip_grad=dict(max_norm=1.0))
param_scheduler = [dict(type='LinearLR', start_factor=0.01, by_epoch=True, begin=0, end=1, convert_to_iter_based=True),
                   dict(type='CosineAnnealingLR', by_epoch=True, begin=1, end=20, eta_min=0,
                        convert_to_iter_based=True)]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=20, val_interval=2)
val_cfg = dict(type='MultiPatchValLoop', patch_sizes=[30, 16])
test_cfg = dict(type='MultiPatchTestLoop', patch_sizes=[48, 30, 24, 16, 12, 8])
