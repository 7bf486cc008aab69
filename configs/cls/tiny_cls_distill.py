# Tiny FlexiDistill: the p=6 teacher above (frozen) -> FlexiViT student with random patch sizes.
_base_ = ['./tiny_cls_flexi.py']
teacher_checkpoint = 'work_dirs/tiny_cls_vit_p6/epoch_8.pth'
arch = dict(embed_dims=96, num_layers=4, num_heads=3)
model = dict(
    _delete_=True, type='FlexiDistiller', temperature=1.0, teacher_checkpoint=teacher_checkpoint,
    data_preprocessor=dict(type='ImgDataPreprocessor', mean=[127.5] * 3, std=[127.5] * 3, bgr_to_rgb=True),
    teacher=dict(type='FlexiImageClassifier', num_classes=4,
                 backbone=dict(type='FlexiViT', arch=arch, patch_size=6, base_patch_size=6, base_pos_grid=10)),
    student=dict(type='FlexiImageClassifier', num_classes=4,
                 backbone=dict(type='FlexiViT', arch=arch, patch_size=12, base_patch_size=32, base_pos_grid=7)))
optim_wrapper = dict(optimizer=dict(lr=3e-4))
max_epochs = 6
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=True, begin=0, end=1, convert_to_iter_based=True),
                   dict(type='CosineAnnealingLR', by_epoch=True, begin=1, end=max_epochs, eta_min=1e-6,
                        convert_to_iter_based=True)]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=max_epochs)
