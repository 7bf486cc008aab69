# Oxford-IIIT Pets (37 classes) as class folders: data/pets/{train,test}/<breed>/*.jpg.
_base_ = ['./imagenet_flexi_b_ft_p30.py']
model = dict(num_classes=37)
data_root = 'data/pets'
train_dataloader = dict(batch_size=32, dataset=dict(data_root=data_root, data_prefix='train'))
val_dataloader = dict(batch_size=32, dataset=dict(data_root=data_root, data_prefix='test', ann_file=None))
test_dataloader = val_dataloader
train_cfg = dict(max_epochs=20)
param_scheduler = [dict(type='LinearLR', start_factor=0.01, by_epoch=True, begin=0, end=1, convert_to_iter_based=True),
                   dict(type='CosineAnnealingLR', by_epoch=True, begin=1, end=20, eta_min=0,
                        convert_to_iter_based=True)]
