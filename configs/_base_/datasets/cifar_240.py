# CIFAR-10 from the python pickles (extracted cifar-10-batches-py), upsampled to 240 px.
data_root = 'data/cifar10/cifar-10-batches-py'
img_size = 240
train_pipeline = [
    dict(type='Resize', scale=(img_size, img_size), keep_ratio=False),
    dict(type='InceptionCrop', size=img_size, scale=(0.5, 1.0)),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackClsInputs'),
]
test_pipeline = [
    dict(type='Resize', scale=(img_size, img_size), keep_ratio=False),
    dict(type='PackClsInputs'),
]
train_dataloader = dict(batch_size=64, num_workers=8, persistent_workers=True,
                        sampler=dict(type='DefaultSampler', shuffle=True),
                        dataset=dict(type='CIFARDataset', data_root=data_root, split='train',
                                     pipeline=train_pipeline))
val_dataloader = dict(batch_size=64, num_workers=8, persistent_workers=True,
                      sampler=dict(type='DefaultSampler', shuffle=False),
                      dataset=dict(type='CIFARDataset', data_root=data_root, split='test', pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='ClsAccuracy', topk=(1, 5))
test_evaluator = val_evaluator
