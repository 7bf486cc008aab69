# FlexiDistill (paper): teacher ViT-B/8 (fixed patch, frozen), student FlexiViT-B initialised from
# it (kernel PI-resized into the 32x32 store), KL on the same augmented image, random student patch.
# Teacher weights:
#   python tools/convert_weights.py vit_b8_i21k_ft_i1k.npz checkpoints/vit_b8_teacher.pth --from big_vision
#   then a classifier checkpoint whose backbone.* / head.* are the teacher's (tools/convert_weights.py writes
#   the big_vision head as extras.head.*; see README "FlexiDistill").
_base_ = ['../_base_/datasets/imagenet_240.py', '../_base_/default_runtime_cls.py']
preprocessor = dict(type='ImgDataPreprocessor', mean=[127.5] * 3, std=[127.5] * 3, bgr_to_rgb=True)
model = dict(
    type='FlexiDistiller', temperature=1.0, data_preprocessor=preprocessor,
    teacher_checkpoint='checkpoints/vit_b8_teacher_cls.pth',
    teacher=dict(type='FlexiImageClassifier', num_classes=1000,
                 backbone=dict(type='FlexiViT', arch='base', patch_size=8, base_patch_size=8, base_pos_grid=30)),
    student=dict(type='FlexiImageClassifier', num_classes=1000,
                 backbone=dict(type='FlexiViT', arch='base', patch_size=16, base_patch_size=32, base_pos_grid=7)))
custom_hooks = [dict(type='RandomPatchSizeHook', patch_sizes=[48, 40, 30, 24, 20, 16, 15, 12, 10, 8])]
optim_wrapper = dict(type='AmpOptimWrapper', optimizer=dict(type='AdamW', lr=1e-4, weight_decay=1e-5),
                     clip_grad=dict(max_norm=1.0))
param_scheduler = [dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=5, convert_to_iter_based=True),
                   dict(type='CosineAnnealingLR', by_epoch=True, begin=5, end=90, eta_min=1e-6,
                        convert_to_iter_based=True)]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=90, val_interval=5)
val_cfg = dict(type='MultiPatchValLoop', patch_sizes=[30, 16, 8])
test_cfg = dict(type='MultiPatchTestLoop', patch_sizes=[48, 40, 30, 24, 20, 16, 15, 12, 10, 8])
train_dataloader = dict(batch_size=128)
