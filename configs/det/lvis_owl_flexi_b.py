# OWL-ViT style open-vocabulary detection on LVIS v1 with FlexiViT-B, random patch sizes while
# training (the paper's {48..8}), LVIS AP (APr/APc/APf) at several patch sizes.
# Data: data/lvis_v1/annotations/lvis_v1_{train,val}.json and the COCO 2017 images under
# data/lvis_v1/{train2017,val2017}/ (LVIS finds them through coco_url).
# Training follows OWL-ViT's federated scheme: per image its positive classes, its
# neg_category_ids and random other classes, 50 queries in all; evaluation queries all 1203.
# Images: longer side 720 (divisible by every patch size 8..48), padded bottom-right to 720x720.
_base_ = ['../_base_/models/owlvit_flexi_b.py', '../_base_/default_runtime_det.py']
data_root = 'data/lvis_v1'
img_scale = (720, 720)
model = dict(data_preprocessor=dict(pad_size_divisor=720))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='SampleTextQueries', num_queries=50),
    dict(type='PackDetInputs', meta_keys={{_base_.owl_meta_keys}}),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs', meta_keys={{_base_.owl_meta_keys}}),
]
train_dataloader = dict(
    batch_size=8, num_workers=4, persistent_workers=True, sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type='LVISFederatedDataset', data_root=data_root, ann_file='annotations/lvis_v1_train.json',
                 data_prefix=dict(img=''), return_classes=True, filter_cfg=dict(filter_empty_gt=True),
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4, num_workers=4, persistent_workers=True, sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='LVISFederatedDataset', data_root=data_root, ann_file='annotations/lvis_v1_val.json',
                 data_prefix=dict(img=''), return_classes=True, test_mode=True, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='FastLVISMetric', ann_file=data_root + '/annotations/lvis_v1_val.json', max_dets=300)
test_evaluator = val_evaluator
optim_wrapper = dict(type='AmpOptimWrapper', optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05),
                     paramwise_cfg=dict(custom_keys={'text_tower': dict(lr_mult=0.1)}),
                     clip_grad=dict(max_norm=1.0))
max_iters = 100000
param_scheduler = [dict(type='LinearLR', start_factor=0.001, begin=0, end=1000, by_epoch=False),
                   dict(type='CosineAnnealingLR', eta_min=0, begin=1000, end=max_iters, by_epoch=False)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=10000)
val_cfg = dict(type='MultiPatchValLoop', patch_sizes=[30])
test_cfg = dict(type='MultiPatchTestLoop', patch_sizes=[48, 30, 24, 16, 12, 8])
custom_hooks = [dict(type='RandomPatchSizeHook', patch_sizes=[48, 40, 30, 24, 20, 16, 15, 12, 10, 8])]
default_hooks = dict(checkpoint=dict(interval=10000))
