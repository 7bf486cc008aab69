# FlexiViT-B classifier, inputs in [-1, 1] (big_vision), class-token pooling, zero-init head.
_base_ = ['./flexivit_b.py']
model = dict(
    type='FlexiImageClassifier', num_classes=1000, pool='tok', head_zero_init=True,
    data_preprocessor=dict(type='ImgDataPreprocessor', mean=[127.5] * 3, std=[127.5] * 3, bgr_to_rgb=True),
    backbone=dict(drop_path_rate=0.1))
