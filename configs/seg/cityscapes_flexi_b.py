# Segmenter on FlexiViT-B, Cityscapes (19 classes), 480x960 crops, random patch sizes.
_base_ = ['../_base_/models/segmenter_flexi_b.py', '../_base_/datasets/cityscapes_480.py',
          '../_base_/default_runtime_seg.py', '../_base_/schedules/seg_160k.py']
model = dict(data_preprocessor=dict(size=(480, 960)), decode_head=dict(num_classes=19),
             test_cfg=dict(mode='slide', crop_size=(480, 960), stride=(320, 640)))
custom_hooks = [dict(type='RandomPatchSizeHook', patch_sizes=[48, 40, 30, 24, 20, 16, 15, 12, 10, 8])]
param_scheduler = [dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=80000, by_epoch=False)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=80000, val_interval=8000)
test_cfg = dict(type='MultiPatchTestLoop', patch_sizes=[8, 16, 30])
