# FlexiViT-B classifier, inputs in [-1, 1] (big_vision), class-token pooling, zero-init head.
model = dict(
    type='FlexiImageClassifier', num_classes=1000, pool='tok', head_zero_init=True,
    data_preprocessor=dict(type='ImgDataPreprocessor', mean=[127.5] * 3, std=[127.5] * 3, bgr_to_rgb=True),
    backbone=dict(type='FlexiViT', arch='base', patch_size=16, base_patch_size=32, base_pos_grid=7,
                  drop_path_rate=0.1, pretrained='checkpoints/flexivit_b_i21k_300ep.pth'))
