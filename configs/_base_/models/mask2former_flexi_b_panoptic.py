# Mask2Former (mmdet) on FlexiViT-B + the stride-aware simple feature pyramid (ViTDet-style), COCO
# panoptic (80 things + 53 stuff). Inputs in [-1, 1] as big_vision. Training pads every batch to a
# fixed 960 x 960 (LSJ); test images are padded to a multiple of 480 = lcm(48, 40, 30, 24, 20, 16, 15,
# 12, 10, 8, 32), so every patch size of the paper and every pyramid stride divides the padded input.
# `pretrained`: a checkpoint converted with tools/convert_weights.py.
_base_ = ['./flexivit_b.py']
img_size = (960, 960)
num_things_classes, num_stuff_classes = 80, 53
num_classes = num_things_classes + num_stuff_classes
data_preprocessor = dict(
    type='DetDataPreprocessor', mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5], bgr_to_rgb=True,
    pad_size_divisor=480, pad_mask=True, mask_pad_value=0, pad_seg=True, seg_pad_value=255,
    batch_augments=[dict(type='BatchFixedSizePad', size=img_size, img_pad_value=0, pad_mask=True, mask_pad_value=0,
                         pad_seg=True, seg_pad_value=255)])
model = dict(
    type='FlexiMask2Former',
    data_preprocessor=data_preprocessor,
    backbone=dict(out_indices=-1, final_norm=True, drop_path_rate=0.1, pretrained='checkpoints/flexivit_b_i1k.pth'),
    neck=dict(type='StrideAwareSimpleFPN', in_channels=768, out_channels=256, strides=(4, 8, 16, 32),
              resample='per_level'),
    panoptic_head=dict(
        type='Mask2FormerHead', in_channels=[256, 256, 256, 256], strides=[4, 8, 16, 32], feat_channels=256,
        out_channels=256, num_things_classes=num_things_classes, num_stuff_classes=num_stuff_classes,
        num_queries=100, num_transformer_feat_level=3,
        pixel_decoder=dict(
            type='MSDeformAttnPixelDecoder', num_outs=3, norm_cfg=dict(type='GN', num_groups=32),
            act_cfg=dict(type='ReLU'),
            encoder=dict(num_layers=6, layer_cfg=dict(
                self_attn_cfg=dict(embed_dims=256, num_heads=8, num_levels=3, num_points=4, dropout=0.0,
                                   batch_first=True),
                ffn_cfg=dict(embed_dims=256, feedforward_channels=1024, num_fcs=2, ffn_drop=0.0,
                             act_cfg=dict(type='ReLU', inplace=True)))),
            positional_encoding=dict(num_feats=128, normalize=True)),
        enforce_decoder_input_project=False,
        positional_encoding=dict(num_feats=128, normalize=True),
        transformer_decoder=dict(
            return_intermediate=True, num_layers=9,
            layer_cfg=dict(
                self_attn_cfg=dict(embed_dims=256, num_heads=8, dropout=0.0, batch_first=True),
                cross_attn_cfg=dict(embed_dims=256, num_heads=8, dropout=0.0, batch_first=True),
                ffn_cfg=dict(embed_dims=256, feedforward_channels=2048, num_fcs=2, ffn_drop=0.0,
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
        num_points=12544, oversample_ratio=3.0, importance_sample_ratio=0.75,
        assigner=dict(type='HungarianAssigner', match_costs=[
            dict(type='ClassificationCost', weight=2.0),
            dict(type='CrossEntropyLossCost', weight=5.0, use_sigmoid=True),
            dict(type='DiceCost', weight=5.0, pred_act=True, eps=1.0)]),
        sampler=dict(type='MaskPseudoSampler')),
    test_cfg=dict(panoptic_on=True, semantic_on=False, instance_on=False, max_per_image=100, iou_thr=0.8,
                  filter_low_score=True),
    init_cfg=None)
