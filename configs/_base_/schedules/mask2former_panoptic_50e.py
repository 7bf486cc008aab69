# Mask2Former's COCO panoptic schedule (mmdet): AdamW 1e-4, backbone lr x 0.1, 368,750 iterations at
# batch 16 (8 GPUs x 2, about 50 epochs), steps at 327,778 and 355,092.
max_iters = 368750
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05, eps=1e-8, betas=(0.9, 0.999)),
    paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0.1, decay_mult=1.0),
                                    'query_embed': dict(lr_mult=1.0, decay_mult=0.0),
                                    'query_feat': dict(lr_mult=1.0, decay_mult=0.0),
                                    'level_embed': dict(lr_mult=1.0, decay_mult=0.0)},
                       norm_decay_mult=0.0),
    clip_grad=dict(max_norm=0.01, norm_type=2))
param_scheduler = dict(type='MultiStepLR', begin=0, end=max_iters, by_epoch=False, milestones=[327778, 355092],
                       gamma=0.1)
interval = 5000
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=interval)
val_cfg = dict(type='MultiPatchValLoop', patch_sizes=[16])
test_cfg = dict(type='MultiPatchTestLoop', patch_sizes=[8, 16, 30])
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, save_last=True, interval=interval, max_keep_ckpts=3),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='DetVisualizationHook'))
auto_scale_lr = dict(enable=False, base_batch_size=16)
