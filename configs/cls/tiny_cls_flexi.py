# Tiny CPU config: 4-layer FlexiViT classifier on the generated ImageNet-style toy folders
# (python tools/make_toy_data.py cls): class = colour of a random shape, random patch sizes,
# tested at 6/12/30.
_base_ = ['../_base_/default_runtime_cls.py', '../_base_/models/flexivit_tiny.py']
data_root = 'data/toy_cls'
img_size = 60  # divides by 6, 10, 12, 15, 20, 30
model = dict(
    type='FlexiImageClassifier', num_classes=4, pool='tok', head_zero_init=True,
    data_preprocessor=dict(type='ImgDataPreprocessor', mean=[127.5] * 3, std=[127.5] * 3, bgr_to_rgb=True))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='InceptionCrop', size=img_size, scale=(0.6, 1.0)),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackClsInputs'),
]
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=(img_size, img_size), keep_ratio=False),
                 dict(type='PackClsInputs')]
train_dataloader = dict(batch_size=32, num_workers=2, persistent_workers=True,
                        sampler=dict(type='DefaultSampler', shuffle=True),
                        dataset=dict(type='ImageFolderDataset', data_root=data_root, data_prefix='train',
                                     pipeline=train_pipeline))
val_dataloader = dict(batch_size=64, num_workers=2, persistent_workers=True,
                      sampler=dict(type='DefaultSampler', shuffle=False),
                      dataset=dict(type='ImageFolderDataset', data_root=data_root, data_prefix='val',
                                   ann_file='meta/val.txt', pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='ClsAccuracy', topk=(1,))
test_evaluator = val_evaluator
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
                     clip_grad=dict(max_norm=1.0))
max_epochs = 8
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=True, begin=0, end=1, convert_to_iter_based=True),
                   dict(type='CosineAnnealingLR', by_epoch=True, begin=1, end=max_epochs, eta_min=1e-5,
                        convert_to_iter_based=True)]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict(type='MultiPatchValLoop', patch_sizes=[12])
test_cfg = dict(type='MultiPatchTestLoop', patch_sizes=[6, 12, 30])
custom_hooks = [dict(type='RandomPatchSizeHook', patch_sizes=[6, 10, 12, 15, 20, 30])]
default_hooks = dict(logger=dict(type='LoggerHook', interval=10), checkpoint=dict(type='CheckpointHook', interval=5))
