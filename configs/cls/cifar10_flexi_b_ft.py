# CIFAR-10 transfer from FlexiViT-B at a fixed cheap patch 30; tested at all patch sizes.
_base_ = ['../_base_/models/flexi_b_classifier.py', '../_base_/datasets/cifar_240.py',
          '../_base_/default_runtime_cls.py', '../_base_/schedules/cls_finetune.py']
model = dict(num_classes=10, backbone=dict(patch_size=30))
