# LiT on Flickr30k (Karpathy split, dataset_flickr30k.json, images/ folder), 1k test images.
_base_ = ['./lit_coco_flexi_b.py']
data_root = 'data/flickr30k'
ann = 'dataset_flickr30k.json'
train_dataloader = dict(dataset=dict(data_root=data_root, ann_file=ann, data_prefix='images'))
val_dataloader = dict(dataset=dict(data_root=data_root, ann_file=ann, data_prefix='images'))
test_dataloader = val_dataloader
