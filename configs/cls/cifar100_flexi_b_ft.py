# CIFAR-100 (fine labels) transfer from FlexiViT-B at patch 30.
_base_ = ['./cifar10_flexi_b_ft.py']
data_root = 'data/cifar100/cifar-100-python'
model = dict(num_classes=100)
train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
