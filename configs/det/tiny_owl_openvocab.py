# Tiny open-vocabulary experiment (OWL-ViT's LVIS-rare protocol at toy scale): the detector starts
# from the tiny LiT (configs/retrieval/tiny_lit_flexi.py: image and text towers trained on toy
# captions such as "a yellow triangle above a red circle") and trains its boxes on the `det_shapes`
# toy data (python tools/make_toy_data.py det_shapes; 12 classes, colour + shape) with one class
# held out: 'yellow triangle' shapes stay in the training images, unannotated, and the name is never
# a training query; its words are (as "yellow circle", "red triangle"). At test time its AP comes
# from its text query alone. python tools/reproduce_openvocab.py runs it with a from-scratch control
# and an all-classes run; tiny_owl_openvocab_colour.py holds out a whole colour instead.
_base_ = ['./tiny_owl_openvocab_colour.py']
data_root = 'data/toy_coco_det_shapes'
classes = tuple(f'{c} {s}' for c in ('red', 'green', 'blue', 'yellow') for s in ('circle', 'square', 'triangle'))
held_out = ('yellow triangle',)
seen_classes = tuple(c for c in classes if c not in held_out)
model = dict(templates=('a {}', 'a picture of a {}', 'there is a {}'), default_queries=classes)
train_dataloader = dict(dataset=dict(data_root=data_root, metainfo=dict(classes=seen_classes)))
val_dataloader = dict(dataset=dict(data_root=data_root, metainfo=dict(classes=classes)))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + '/annotations/instances_val2017.json')
test_evaluator = val_evaluator
