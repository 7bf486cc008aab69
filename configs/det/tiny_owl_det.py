# Tiny CPU config: OWL-ViT style open-vocabulary detector (4-layer FlexiViT + 2-layer open_clip text
# tower, from scratch) on the generated COCO-instances toy data (python tools/make_toy_data.py det):
# the class of a shape is its colour, queried by its name ("red", ...). Random patch sizes while
# training; COCO box AP at p = 12, 16, 24 with tools/test.py.
_base_ = ['../_base_/default_runtime_det.py', '../_base_/models/flexivit_tiny.py']
data_root = 'data/toy_coco_det'
classes = ('red', 'green', 'blue', 'yellow')
img_size = (96, 96)  # the toy images (and pad size): the input size for deploy / benchmark
model = dict(
    type='OWLViTDetector',
    data_preprocessor=dict(type='DetDataPreprocessor', mean=[127.5] * 3, std=[127.5] * 3, bgr_to_rgb=True,
                           pad_size_divisor=96),  # 96: divisible by every patch size below
    backbone=dict(arch=dict(embed_dims=64, num_layers=3, num_heads=2)),  # narrower than the tiny base
    text_tower=dict(type='OpenCLIPTextTower', width=64, heads=2, layers=2, context_length=32, output_dim=64),
    # box prior at the token's own cell centre (OWL-ViT's is the cell's bottom-right corner, the layout of
    # its released checkpoints): from scratch, the corner prior leaves an object centred in a cell
    # equally near four tokens' priors and the one-to-one matching flips between them
    box_prior_centre='cell',
    templates=('a {} circle', 'a {} square', 'a {} triangle'),
    default_queries=classes,
    loss=dict(type='OWLSetLoss'),
    test_cfg=dict(max_per_img=100, score_thr=0.0))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs', meta_keys={{_base_.owl_meta_keys}}),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs', meta_keys={{_base_.owl_meta_keys}}),
]
dataset = dict(type='CocoDataset', data_root=data_root, metainfo=dict(classes=classes), return_classes=True)
train_dataloader = dict(
    batch_size=8, num_workers=2, persistent_workers=True, sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(**dataset, ann_file='annotations/instances_train2017.json', data_prefix=dict(img='train2017/'),
                 filter_cfg=dict(filter_empty_gt=False), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=16, num_workers=2, persistent_workers=True, sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(**dataset, ann_file='annotations/instances_val2017.json', data_prefix=dict(img='val2017/'),
                 test_mode=True, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='CocoMetric', ann_file=data_root + '/annotations/instances_val2017.json', metric='bbox')
test_evaluator = val_evaluator
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
                     clip_grad=dict(max_norm=1.0))
max_iters = 300
param_scheduler = [dict(type='LinearLR', start_factor=0.1, begin=0, end=30, by_epoch=False),
                   dict(type='CosineAnnealingLR', eta_min=1e-5, begin=30, end=max_iters, by_epoch=False)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='MultiPatchValLoop', patch_sizes=[12])
test_cfg = dict(type='MultiPatchTestLoop', patch_sizes=[12, 16, 24])
custom_hooks = [dict(type='RandomPatchSizeHook', patch_sizes=[12, 16, 24, 32])]
default_hooks = dict(logger=dict(interval=25), checkpoint=dict(interval=max_iters))
