# Tiny CPU config: a 4-layer FlexiViT + linear Segmenter decoder on the generated ADE20k-layout
# toy data (python tools/make_toy_data.py seg). Random patch sizes while training, evaluation at
# three patch sizes. Trains in a couple of CPU minutes. This is the README's main job.
_base_ = ['../_base_/default_runtime_seg.py', '../_base_/models/flexivit_tiny.py']
data_root = 'data/toy_ade/ADEChallengeData2016'
crop_size = (120, 120)  # divisible by 8, 10, 12, 15, 20, 24, 30, 40
classes = ('ground', 'red', 'green', 'blue', 'yellow')
palette = [[120, 120, 120], [220, 40, 40], [40, 180, 60], [40, 70, 220], [230, 210, 40]]
metainfo = dict(classes=classes, palette=palette)

model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(type='SegDataPreProcessor', mean=[127.5] * 3, std=[127.5] * 3, bgr_to_rgb=True,
                           pad_val=0, seg_pad_val=255, size=crop_size, test_cfg=dict(size_divisor=120)),
    backbone=dict(out_indices=-1, final_norm=True),
    decode_head=dict(type='FCNHead', in_channels=96, channels=96, num_convs=0, concat_input=False,
                     kernel_size=1, dropout_ratio=0.0, num_classes=len(classes), align_corners=False,
                     loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
dataset = dict(type='BaseSegDataset', data_root=data_root, metainfo=metainfo, img_suffix='.jpg',
               seg_map_suffix='.png', reduce_zero_label=True)
train_dataloader = dict(
    batch_size=8, num_workers=2, persistent_workers=True, sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(**dataset, data_prefix=dict(img_path='images/training', seg_map_path='annotations/training'),
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4, num_workers=2, persistent_workers=True, sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(**dataset, data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation'),
                 pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=2e-3, weight_decay=0.01))
param_scheduler = [dict(type='LinearLR', start_factor=0.1, begin=0, end=30, by_epoch=False),
                   dict(type='CosineAnnealingLR', eta_min=1e-5, begin=30, end=300, by_epoch=False)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=300, val_interval=300)
val_cfg = dict(type='MultiPatchValLoop', patch_sizes=[12])
test_cfg = dict(type='MultiPatchTestLoop', patch_sizes=[8, 12, 24])
custom_hooks = [dict(type='RandomPatchSizeHook', patch_sizes=[8, 10, 12, 15, 20, 24, 30, 40])]
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=25, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=100, max_keep_ckpts=2),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
randomness = dict(seed=0)
