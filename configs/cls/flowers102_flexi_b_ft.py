# Oxford Flowers-102 as class folders: data/flowers102/{train,test}/<class>/*.jpg.
_base_ = ['./pets_flexi_b_ft.py']
model = dict(num_classes=102)
data_root = 'data/flowers102'
train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
