# UPerNet on FlexiViT-B for ADE20k (ViTDet-style: one stride-p map -> StrideAwareSimpleFPN at strides
# 4-32 -> mmseg's UPerHead), 480 crops, random patch sizes while training, evaluation at 48 ... 8.
# The schedule, data and patch policy are those of ade20k_flexi_b.py; only the decoder differs.
_base_ = ['./ade20k_flexi_b.py']
custom_imports = dict(imports=['flexitransfer', 'flexitransfer.models.segmentors'], allow_failed_imports=False)
norm_cfg = dict(type='SyncBN', requires_grad=True)  # mmseg's UPerNet default; BN on a single device
model = dict(
    type='FlexiEncoderDecoder',
    neck=dict(type='StrideAwareSimpleFPN', in_channels=768, out_channels=256, strides=(4, 8, 16, 32)),
    decode_head=dict(_delete_=True, type='UPerHead', in_channels=[256, 256, 256, 256], in_index=[0, 1, 2, 3],
                     pool_scales=(1, 2, 3, 6), channels=512, dropout_ratio=0.1, num_classes=150, norm_cfg=norm_cfg,
                     align_corners=False,
                     loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)))
