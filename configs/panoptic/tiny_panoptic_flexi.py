# Tiny CPU config: a 4-layer FlexiViT + StrideAwareSimpleFPN + a small Mask2Former on the generated
# COCO-panoptic-layout toy data (python tools/make_toy_data.py panoptic). Random patch sizes while
# training, evaluation (PQ / SQ / RQ, things / stuff) at three patch sizes. 200 iterations of batch 4.
_base_ = ['../_base_/default_runtime_panoptic.py', '../_base_/models/flexivit_tiny.py']
data_root = 'data/toy_coco_panoptic/'
img_size = (96, 96)  # toy images; the pad (96) divides by every patch size used and by 32
thing_classes = ('red', 'green', 'blue', 'yellow')
stuff_classes = ('sky', 'sand', 'road')
metainfo = dict(classes=thing_classes + stuff_classes, thing_classes=thing_classes, stuff_classes=stuff_classes,
                palette=[(220, 40, 40), (40, 180, 60), (40, 70, 220), (230, 210, 40), (165, 205, 235),
                         (200, 170, 120), (90, 90, 95)])
num_things_classes, num_stuff_classes = len(thing_classes), len(stuff_classes)
num_classes = num_things_classes + num_stuff_classes
embed, ch = 96, 64

model = dict(
    type='FlexiMask2Former',
    data_preprocessor=dict(type='DetDataPreprocessor', mean=[127.5] * 3, std=[127.5] * 3, bgr_to_rgb=True,
                           pad_size_divisor=96, pad_mask=True, mask_pad_value=0, pad_seg=True, seg_pad_value=255),
    backbone=dict(out_indices=-1, final_norm=True),  # embed: the tiny backbone's width
    neck=dict(type='StrideAwareSimpleFPN', in_channels=embed, out_channels=ch, strides=(4, 8, 16, 32),
              resample='per_level'),
    panoptic_head=dict(
        type='Mask2FormerHead', in_channels=[ch] * 4, strides=[4, 8, 16, 32], feat_channels=ch, out_channels=ch,
        num_things_classes=num_things_classes, num_stuff_classes=num_stuff_classes, num_queries=16,
        num_transformer_feat_level=3,
        pixel_decoder=dict(
            type='MSDeformAttnPixelDecoder', num_outs=3, norm_cfg=dict(type='GN', num_groups=8),
            act_cfg=dict(type='ReLU'),
            encoder=dict(num_layers=1, layer_cfg=dict(
                self_attn_cfg=dict(embed_dims=ch, num_heads=4, num_levels=3, num_points=4, dropout=0.0,
                                   batch_first=True),
                ffn_cfg=dict(embed_dims=ch, feedforward_channels=2 * ch, num_fcs=2, ffn_drop=0.0,
                             act_cfg=dict(type='ReLU', inplace=True)))),
            positional_encoding=dict(num_feats=ch // 2, normalize=True)),
        enforce_decoder_input_project=False,
        positional_encoding=dict(num_feats=ch // 2, normalize=True),
        transformer_decoder=dict(
            return_intermediate=True, num_layers=3,
            layer_cfg=dict(
                self_attn_cfg=dict(embed_dims=ch, num_heads=4, dropout=0.0, batch_first=True),
                cross_attn_cfg=dict(embed_dims=ch, num_heads=4, dropout=0.0, batch_first=True),
                ffn_cfg=dict(embed_dims=ch, feedforward_channels=2 * ch, num_fcs=2, ffn_drop=0.0,
                             act_cfg=dict(type='ReLU', inplace=True))),
            init_cfg=None),
        loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=2.0, reduction='mean',
                      class_weight=[1.0] * num_classes + [0.1]),
        loss_mask=dict(type='CrossEntropyLoss', use_sigmoid=True, reduction='mean', loss_weight=5.0),
        loss_dice=dict(type='DiceLoss', use_sigmoid=True, activate=True, reduction='mean', naive_dice=True,
                       eps=1.0, loss_weight=5.0)),
    panoptic_fusion_head=dict(type='MaskFormerFusionHead', num_things_classes=num_things_classes,
                              num_stuff_classes=num_stuff_classes, loss_panoptic=None, init_cfg=None),
    train_cfg=dict(
        num_points=1024, oversample_ratio=3.0, importance_sample_ratio=0.75,
        assigner=dict(type='HungarianAssigner', match_costs=[
            dict(type='ClassificationCost', weight=2.0),
            dict(type='CrossEntropyLossCost', weight=5.0, use_sigmoid=True),
            dict(type='DiceCost', weight=5.0, pred_act=True, eps=1.0)]),
        sampler=dict(type='MaskPseudoSampler')),
    test_cfg=dict(panoptic_on=True, semantic_on=False, instance_on=False, max_per_image=16, iou_thr=0.8,
                  filter_low_score=True),
    init_cfg=None)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadPanopticAnnotations', with_bbox=True, with_mask=True, with_seg=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadPanopticAnnotations', with_bbox=True, with_mask=True, with_seg=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
dataset = dict(type='CocoPanopticDataset', data_root=data_root, metainfo=metainfo)
train_dataloader = dict(
    batch_size=4, num_workers=2, persistent_workers=True, sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(**dataset, ann_file='annotations/panoptic_train2017.json',
                 data_prefix=dict(img='train2017/', seg='annotations/panoptic_train2017/'),
                 filter_cfg=dict(filter_empty_gt=True, min_size=32), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4, num_workers=2, persistent_workers=True, drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(**dataset, ann_file='annotations/panoptic_val2017.json',
                 data_prefix=dict(img='val2017/', seg='annotations/panoptic_val2017/'), test_mode=True,
                 pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='CocoPanopticMetric', ann_file=data_root + 'annotations/panoptic_val2017.json',
                     seg_prefix=data_root + 'annotations/panoptic_val2017/')
test_evaluator = val_evaluator

optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
                     paramwise_cfg=dict(custom_keys={'query_embed': dict(decay_mult=0.0),
                                                     'query_feat': dict(decay_mult=0.0),
                                                     'level_embed': dict(decay_mult=0.0)}, norm_decay_mult=0.0),
                     clip_grad=dict(max_norm=1.0, norm_type=2))
max_iters = 200
param_scheduler = [dict(type='LinearLR', start_factor=0.1, begin=0, end=20, by_epoch=False),
                   dict(type='CosineAnnealingLR', eta_min=1e-5, begin=20, end=max_iters, by_epoch=False)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='MultiPatchValLoop', patch_sizes=[12])
test_cfg = dict(type='MultiPatchTestLoop', patch_sizes=[8, 12, 24])
custom_hooks = [dict(type='RandomPatchSizeHook', patch_sizes=[8, 12, 16, 24])]
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=25, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters, max_keep_ckpts=1),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='DetVisualizationHook'))
randomness = dict(seed=0)
