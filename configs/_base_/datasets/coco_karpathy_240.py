# COCO captions, Karpathy split (annotations/dataset_coco.json; images under train2014/ val2014/),
# 5 captions per image; 240 px.
data_root = 'data/coco'
img_size = 240
ann = 'annotations/dataset_coco.json'
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='InceptionCrop', size=img_size, scale=(0.5, 1.0)),
    dict(type='PackImageInputs', keys=('caption', 'captions', 'img_id')),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(img_size, img_size), keep_ratio=False),
    dict(type='PackImageInputs', keys=('captions', 'img_id')),
]
train_dataloader = dict(batch_size=256, num_workers=8, persistent_workers=True,
                        sampler=dict(type='DefaultSampler', shuffle=True),
                        dataset=dict(type='CaptionDataset', data_root=data_root, ann_file=ann, format='karpathy',
                                     split='train', train_mode=True, pipeline=train_pipeline))
val_dataloader = dict(batch_size=64, num_workers=8, persistent_workers=True,
                      sampler=dict(type='DefaultSampler', shuffle=False),
                      dataset=dict(type='CaptionDataset', data_root=data_root, ann_file=ann, format='karpathy',
                                   split='test', pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='RetrievalRecall', ks=(1, 5, 10))
test_evaluator = val_evaluator
