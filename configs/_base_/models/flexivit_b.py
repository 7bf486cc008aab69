# FlexiViT-B as released (big_vision layout: 32x32 kernel store, 7x7 position grid; ImageNet-21k weights
# converted with tools/convert_weights.py): the backbone every real config inherits and refines.
model = dict(backbone=dict(type='FlexiViT', arch='base', patch_size=16, base_patch_size=32, base_pos_grid=7,
                           pretrained='checkpoints/flexivit_b_i21k_300ep.pth'))
