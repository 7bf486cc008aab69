# Classification / retrieval (plain mmengine scope, flexitransfer registered): epoch-based.
_base_ = ['./default_runtime.py']
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3),
    sampler_seed=dict(type='DistSamplerSeedHook'))
log_processor = dict(by_epoch=True)
