# Tiny CPU config: two-tower model on generated COCO-format captions ("a red circle above a blue
# square"), python tools/make_toy_data.py captions. Both towers train from scratch here (a locked
# tower needs pretrained weights); random image patch sizes; retrieval tested at p = 6, 12, 30.
_base_ = ['../_base_/default_runtime_cls.py', '../_base_/models/flexivit_tiny.py']
data_root = 'data/toy_coco'
img_size = 60
model = dict(
    _delete_=True,  # LiT names its image tower image_backbone
    type='LiT', embed_dim=64, pool='tok', image_proj='linear', lock_image=False, loss='clip',
    data_preprocessor=dict(type='ImgDataPreprocessor', mean=[127.5] * 3, std=[127.5] * 3, bgr_to_rgb=True),
    image_backbone={{_base_.model.backbone}},
    text_tower=dict(type='OpenCLIPTextTower', width=64, heads=2, layers=2, context_length=32, output_dim=64))
train_pipeline = [dict(type='LoadImageFromFile'),
                  dict(type='PackImageInputs', keys=('caption', 'captions', 'img_id'))]
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='PackImageInputs', keys=('captions', 'img_id'))]
train_dataloader = dict(batch_size=32, num_workers=2, persistent_workers=True,
                        sampler=dict(type='DefaultSampler', shuffle=True),
                        dataset=dict(type='CaptionDataset', data_root=data_root,
                                     ann_file='annotations/dataset_coco.json', format='karpathy', split='train',
                                     train_mode=True, pipeline=train_pipeline))
val_dataloader = dict(batch_size=30, num_workers=2, persistent_workers=True,
                      sampler=dict(type='DefaultSampler', shuffle=False),
                      dataset=dict(type='CaptionDataset', data_root=data_root,
                                   ann_file='annotations/captions_val2017.json', data_prefix='val2017',
                                   format='coco', pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='RetrievalRecall', ks=(1, 5, 10))
test_evaluator = val_evaluator
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
                     clip_grad=dict(max_norm=1.0))
max_epochs = 25
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=True, begin=0, end=1, convert_to_iter_based=True),
                   dict(type='CosineAnnealingLR', by_epoch=True, begin=1, end=max_epochs, eta_min=1e-5,
                        convert_to_iter_based=True)]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict(type='MultiPatchValLoop', patch_sizes=[12])
test_cfg = dict(type='MultiPatchTestLoop', patch_sizes=[6, 12, 30])
custom_hooks = [dict(type='RandomPatchSizeHook', patch_sizes=[6, 10, 12, 15, 20, 30])]
default_hooks = dict(logger=dict(type='LoggerHook', interval=10), checkpoint=dict(type='CheckpointHook', interval=5))
