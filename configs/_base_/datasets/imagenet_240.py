# ImageNet-1k as a class-per-folder tree (train/<wnid>/*.JPEG) and the usual val list file
# (meta/val.txt: "ILSVRC2012_val_00000001.JPEG 65"), 240 px (divides by every FlexiViT patch).
data_root = 'data/imagenet'
img_size = 240
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='InceptionCrop', size=img_size, scale=(0.08, 1.0)),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackClsInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(274, 274), keep_ratio=False),  # resize-then-crop 240 (crop_pct 0.875)
    dict(type='CenterCrop', crop_size=img_size),
    dict(type='PackClsInputs'),
]
train_dataloader = dict(batch_size=64, num_workers=8, persistent_workers=True,
                        sampler=dict(type='DefaultSampler', shuffle=True),
                        dataset=dict(type='ImageFolderDataset', data_root=data_root, data_prefix='train',
                                     pipeline=train_pipeline))
val_dataloader = dict(batch_size=64, num_workers=8, persistent_workers=True,
                      sampler=dict(type='DefaultSampler', shuffle=False),
                      dataset=dict(type='ImageFolderDataset', data_root=data_root, data_prefix='val',
                                   ann_file='meta/val.txt', pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='ClsAccuracy', topk=(1, 5))
test_evaluator = val_evaluator
