# Zero-shot CIFAR-100 with a trained LiT checkpoint: class embeddings from prompt templates.
#   python tools/test.py configs/retrieval/lit_zeroshot_cifar100.py work_dirs/lit_coco_flexi_b/epoch_20.pth
_base_ = ['../_base_/models/lit_flexi_b.py', '../_base_/datasets/cifar_240.py', '../_base_/default_runtime_cls.py']
data_root = 'data/cifar100/cifar-100-python'
test_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = test_dataloader
# CIFAR-100 fine label names, in label order (meta['fine_label_names']), '_' -> ' '
model = dict(zero_shot=dict(
    classnames=[c.replace('_', ' ') for c in (
        'apple', 'aquarium_fish', 'baby', 'bear', 'beaver', 'bed', 'bee', 'beetle', 'bicycle', 'bottle', 'bowl',
        'boy', 'bridge', 'bus', 'butterfly', 'camel', 'can', 'castle', 'caterpillar', 'cattle', 'chair', 'chimpanzee',
        'clock', 'cloud', 'cockroach', 'couch', 'crab', 'crocodile', 'cup', 'dinosaur', 'dolphin', 'elephant',
        'flatfish', 'forest', 'fox', 'girl', 'hamster', 'house', 'kangaroo', 'keyboard', 'lamp', 'lawn_mower',
        'leopard', 'lion', 'lizard', 'lobster', 'man', 'maple_tree', 'motorcycle', 'mountain', 'mouse', 'mushroom',
        'oak_tree', 'orange', 'orchid', 'otter', 'palm_tree', 'pear', 'pickup_truck', 'pine_tree', 'plain', 'plate',
        'poppy', 'porcupine', 'possum', 'rabbit', 'raccoon', 'ray', 'road', 'rocket', 'rose', 'sea', 'seal', 'shark',
        'shrew', 'skunk', 'skyscraper', 'snail', 'snake', 'spider', 'squirrel', 'streetcar', 'sunflower',
        'sweet_pepper', 'table', 'tank', 'telephone', 'television', 'tiger', 'tractor', 'train', 'trout', 'tulip',
        'turtle', 'wardrobe', 'whale', 'willow_tree', 'wolf', 'woman', 'worm',
    )],
    templates=['a photo of a {}.', 'a blurry photo of a {}.', 'a photo of the small {}.', 'a photo of the big {}.',
               'itap of a {}.', 'a bad photo of the {}.']))
test_evaluator = dict(type='ClsAccuracy', topk=(1, 5))
test_cfg = dict(type='MultiPatchTestLoop', patch_sizes=[30, 16, 8])
