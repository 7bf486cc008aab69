# Tiny CPU config: the 4-layer FlexiViT of tiny_seg_flexi.py under a pyramid: StrideAwareSimpleFPN
# (ViTDet's simple pyramid, levels at strides 4-32 of the input whatever p is) + mmseg's UPerHead,
# on the generated ADE20k-layout toy data (python tools/make_toy_data.py seg). FlexiEncoderDecoder
# hands the input size to the neck. Random patch sizes while training, evaluation at three.
_base_ = ['./tiny_seg_flexi.py']
custom_imports = dict(imports=['flexitransfer', 'flexitransfer.models.segmentors'], allow_failed_imports=False)
model = dict(
    type='FlexiEncoderDecoder',
    neck=dict(type='StrideAwareSimpleFPN', in_channels=96, out_channels=64, strides=(4, 8, 16, 32)),
    decode_head=dict(_delete_=True, type='UPerHead', in_channels=[64, 64, 64, 64], in_index=[0, 1, 2, 3],
                     pool_scales=(1, 2, 3, 6), channels=64, dropout_ratio=0.0, num_classes=len(_base_.classes),
                     norm_cfg=dict(type='BN', requires_grad=True), align_corners=False,
                     loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)))
