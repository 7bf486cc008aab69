# Segmenter (mask-transformer decoder) on FlexiViT-B. Inputs in [-1, 1] as big_vision.
# `pretrained`: a checkpoint converted with tools/convert_weights.py.
_base_ = ['./flexivit_b.py']
data_preprocessor = dict(type='SegDataPreProcessor', mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5],
                         bgr_to_rgb=True, pad_val=0, seg_pad_val=255, size=(480, 480),
                         # test images are padded to a multiple of 240 = lcm(48, 40, 30, 24, 20, 16, 15, 12, 10, 8)
                         # so every sliding window divides by every patch size.
                         test_cfg=dict(size_divisor=240))
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    backbone=dict(out_indices=-1, final_norm=True, drop_path_rate=0.1, pretrained='checkpoints/flexivit_b_i1k.pth'),
    decode_head=dict(type='SegmenterMaskTransformerHead', in_channels=768, channels=768, num_classes=150,
                     num_layers=2, num_heads=12, embed_dims=768, dropout_ratio=0.0,
                     loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='slide', crop_size=(480, 480), stride=(320, 320)))
