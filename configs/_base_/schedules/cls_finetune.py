# Fine-tuning schedule (big_vision transfer style): SGD momentum, cosine, short warm-up.
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.03, momentum=0.9, weight_decay=0.0),
                     clip_grad=dict(max_norm=1.0))
param_scheduler = [dict(type='LinearLR', start_factor=0.01, by_epoch=True, begin=0, end=1, convert_to_iter_based=True),
                   dict(type='CosineAnnealingLR', by_epoch=True, begin=1, end=10, eta_min=0,
                        convert_to_iter_based=True)]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=10, val_interval=1)
val_cfg = dict(type='MultiPatchValLoop', patch_sizes=[30])
test_cfg = dict(type='MultiPatchTestLoop', patch_sizes=[48, 40, 30, 24, 20, 16, 15, 12, 10, 8])
auto_scale_lr = dict(base_batch_size=512)
