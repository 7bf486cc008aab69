# The paper's resource-efficient transfer: fine-tune FlexiViT-B (i21k) on ImageNet-1k at a cheap
# patch 30 (8x8 tokens at 240 px), then evaluate at every patch size with no extra training
# (paper: ~81.8% top-1 at grid 8 -> ~85.3% at grid 24).
_base_ = ['../_base_/models/flexi_b_classifier.py', '../_base_/datasets/imagenet_240.py',
          '../_base_/default_runtime_cls.py', '../_base_/schedules/cls_finetune.py']
model = dict(num_classes=1000, backbone=dict(patch_size=30))
