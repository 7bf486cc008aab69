# Tiny open-vocabulary experiment, novel attribute: the detector starts from the tiny LiT
# (configs/retrieval/tiny_lit_flexi.py: image and text towers trained on toy captions that name all
# four colours) and trains its boxes on three colours of the `det` toy data (class = colour).
# 'yellow' is held out: its shapes stay in the training images, unannotated, and 'yellow' is never
# a training query. At test time its AP comes from its text query alone. The harder sibling of
# tiny_owl_openvocab.py (there the held-out class's words are seen in other classes' names);
# python tools/reproduce_openvocab.py runs both, with a from-scratch control and an all-classes run.
_base_ = ['./tiny_owl_det.py']
held_out = ('yellow',)
seen_classes = tuple(c for c in _base_.classes if c not in held_out)
lit_checkpoint = 'work_dirs/tiny_lit_flexi/epoch_25.pth'
load_from = lit_checkpoint  # backbone.* and text_tower.* (same names as LiT); the heads start fresh
model = dict(
    # the towers of configs/retrieval/tiny_lit_flexi.py, so the LiT checkpoint fills them exactly
    backbone=dict(arch=dict(embed_dims=96, num_layers=4, num_heads=3), patch_size=12, base_patch_size=32,
                  base_pos_grid=7),
    text_tower=dict(type='OpenCLIPTextTower', width=64, heads=2, layers=2, context_length=32, output_dim=64),
    # the README's open-vocabulary table was measured with OWL-ViT's corner-centred box prior
    box_prior_centre='corner')
# mmdet's CocoDataset keeps only boxes of `classes`: the held-out boxes go, their images stay
train_dataloader = dict(dataset=dict(metainfo=dict(classes=seen_classes)))
# the text tower keeps what LiT taught it (OWL-ViT fine-tunes it with a smaller learning rate)
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'text_tower': dict(lr_mult=0.1)}))
max_iters = 600  # twice the base schedule: every class (and the held-out result) is still noisy at 300
param_scheduler = [dict(type='LinearLR', start_factor=0.1, begin=0, end=30, by_epoch=False),
                   dict(type='CosineAnnealingLR', eta_min=1e-5, begin=30, end=max_iters, by_epoch=False)]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(checkpoint=dict(interval=max_iters))
val_evaluator = dict(classwise=True)
test_evaluator = val_evaluator
