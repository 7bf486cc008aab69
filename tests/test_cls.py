"""Classification: datasets in their real formats, top-k metric, classifier, FlexiDistill."""
import json
import os.path as osp
import pickle

import numpy as np
import pytest
import torch
from conftest import ROOT, data_opts, run_tool
from mmengine.config import Config
from mmengine.registry import MODELS

from flexitransfer.datasets import CIFARDataset, ImageFolderDataset, make_cifar_like, make_imagefolder_like
from flexitransfer.engine import RandomPatchSizeHook
from flexitransfer.evaluation import topk_accuracy
from flexitransfer.models.classifiers.distill import kl_distill_loss


def _brute_topk(scores, labels, k):
    """Sort classes by score, the true label placed *after* any class it ties with."""
    hits = 0
    for s, y in zip(scores, labels):
        order = sorted(range(len(s)), key=lambda c: (-s[c], c == y))
        hits += order.index(y) < k
    return 100.0 * hits / len(labels)


def test_topk_matches_brute_force_with_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(300, 7)).astype(float)  # many ties
    labels = rng.integers(0, 7, size=300)
    for k in (1, 2, 5, 7):
        assert topk_accuracy(scores, labels, k) == pytest.approx(_brute_topk(scores, labels, k))
    assert topk_accuracy(np.eye(3), np.array([0, 1, 2]), 1) == 100.0
    assert topk_accuracy(np.ones((2, 3)), np.array([0, 1]), 2) == 0.0  # 3-way tie never fits in k=2


@pytest.fixture(scope='module')
def cls_data(tmp_path_factory):
    return make_imagefolder_like(str(tmp_path_factory.mktemp('toy_cls')), num_train=96, num_val=24)


def test_image_folder_tree_and_list_file(cls_data):
    tree = ImageFolderDataset(cls_data, 'train')
    listed = ImageFolderDataset(cls_data, 'val', ann_file='meta/val.txt')
    assert tree.metainfo['classes'] == ('blue', 'green', 'red', 'yellow') and len(tree) == 4 * 96
    assert len(listed) == 4 * 24
    for path, label in listed.samples:  # list-file labels agree with the folder names
        assert osp.basename(osp.dirname(path)) == listed.metainfo['classes'][label]


def test_broken_list_file_is_named(tmp_path, cls_data):
    bad = tmp_path / 'bad.txt'
    bad.write_text('red/a.JPEG 2\nred/b.JPEG two\n')
    with pytest.raises(ValueError, match=r'bad.txt:2: expected "relative/path label"'):
        ImageFolderDataset(cls_data, 'val', ann_file=str(bad))
    bad.write_text('red/a.JPEG 9\n')
    with pytest.raises(ValueError, match='label 9 outside'):
        ImageFolderDataset(cls_data, 'val', ann_file=str(bad))


@pytest.mark.parametrize('cifar100', [False, True])
def test_cifar_pickles(tmp_path, cifar100):
    root = make_cifar_like(str(tmp_path / 'c'), cifar100=cifar100, num_train=50, num_test=20)
    pipeline = [dict(type='PackClsInputs')]
    tr, te = CIFARDataset(root, 'train', pipeline=pipeline), CIFARDataset(root, 'test', pipeline=pipeline)
    assert len(tr) == 50 and len(te) == 20 and len(tr.metainfo['classes']) == 4
    raw = pickle.load(open(osp.join(root, 'test' if cifar100 else 'test_batch'), 'rb'), encoding='bytes')
    item = te[3]
    rgb = raw[b'data'][3].reshape(3, 32, 32)
    assert torch.equal(item['inputs'], torch.from_numpy(rgb[::-1].copy()))  # stored BGR like cv2 loads
    assert int(item['data_samples'].gt_label) == (raw[b'fine_labels'] if cifar100 else raw[b'labels'])[3]
    with pytest.raises(FileNotFoundError, match='not an extracted CIFAR'):
        CIFARDataset(str(tmp_path), 'train')


def _test_table(cfg, ckpt, work, root, patches, *extra):
    out = osp.join(work, 'm.json')
    run_tool('tools/test.py', cfg, ckpt, '--patch', *map(str, patches), '--work-dir', work, '--out-json', out,
         '--cfg-options', *data_opts(root), *extra)
    return {r['patch']: r['accuracy/top1'] for r in json.load(open(out))['table']}


@pytest.fixture(scope='module')
def trained_teacher(tmp_path_factory, cls_data):
    work = str(tmp_path_factory.mktemp('teacher'))
    run_tool('tools/train.py', 'configs/cls/tiny_cls_vit_p6.py', '--work-dir', work,
             '--cfg-options', *data_opts(cls_data, 2))
    return osp.join(work, 'epoch_8.pth')


def test_tiny_classifier_accuracy_at_several_patches(tmp_path, cls_data):
    """4 balanced classes: chance is 25%. Require > 85% at p = 6, 12 and 30."""
    work = str(tmp_path)
    run_tool('tools/train.py', 'configs/cls/tiny_cls_flexi.py', '--work-dir', work,
             '--cfg-options', *data_opts(cls_data, 2))
    acc = _test_table('configs/cls/tiny_cls_flexi.py', osp.join(work, 'epoch_8.pth'), work, cls_data, [6, 12, 30])
    assert set(acc) == {'6', '12', '30'} and min(acc.values()) > 85, acc


def _tiny_distiller(teacher_ckpt=None):
    cfg = Config.fromfile(osp.join(ROOT, 'configs/cls/tiny_cls_distill.py'))
    cfg.model.teacher_checkpoint = teacher_ckpt
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model


def test_distill_loss_same_input_and_frozen_teacher():
    torch.manual_seed(0)
    model = _tiny_distiller()
    seen = {}
    model.teacher.backbone.register_forward_pre_hook(lambda m, a: seen.__setitem__('teacher', a[0]))
    model.student.backbone.register_forward_pre_hook(lambda m, a: seen.__setitem__('student', a[0]))
    # student initialised from teacher: kernel PI-resized into the 32x32 store, head copied
    from flexitransfer.ops import resize_patch_embed
    assert torch.allclose(model.student.backbone.patch_embed.weight,
                          resize_patch_embed(model.teacher.backbone.patch_embed.weight, 32), atol=1e-5)
    assert torch.equal(model.student.head.weight, model.teacher.head.weight)

    class Runner:
        iter = 3
        message_hub = type('H', (), {'update_info': lambda *a: None})()
    runner = Runner()
    runner.model = model
    hook = RandomPatchSizeHook([10, 12, 15])
    hook.before_train(runner)
    hook.before_train_iter(runner, 3)
    assert model.teacher.backbone.patch_size == (6, 6) and model.student.backbone.patch_size[0] in (10, 12, 15)

    model.train()
    assert not model.teacher.training  # the teacher stays in eval mode
    x = torch.randn(4, 3, 60, 60)
    teacher_before = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    loss = model(x, mode='loss')['loss_kl']
    assert seen['teacher'] is seen['student'] is x  # identical tensors, not two augmentations
    with torch.no_grad():
        ref = kl_distill_loss(model.student(x, mode='tensor'), model.teacher(x, mode='tensor'))
        t = model.teacher(x, mode='tensor').softmax(-1)
        s = model.student(x, mode='tensor').softmax(-1)
        manual = (t * (t.log() - s.log())).sum(-1).mean()
    assert torch.allclose(loss, ref) and torch.allclose(loss, manual, atol=1e-5)
    loss.backward()
    assert all(p.grad is None for p in model.teacher.parameters())
    assert model.student.backbone.patch_embed.weight.grad is not None
    opt.step()
    assert all(torch.equal(v, teacher_before[k]) for k, v in model.teacher.state_dict().items())


def test_distilled_student_approaches_teacher(tmp_path, cls_data, trained_teacher):
    work = str(tmp_path)
    teacher_acc = _test_table('configs/cls/tiny_cls_vit_p6.py', trained_teacher, work, cls_data, [6])['6']
    run_tool('tools/train.py', 'configs/cls/tiny_cls_distill.py', '--work-dir', work, '--cfg-options',
         *data_opts(cls_data, 2), f'model.teacher_checkpoint={trained_teacher}')
    student = _test_table('configs/cls/tiny_cls_distill.py', osp.join(work, 'epoch_6.pth'), work, cls_data,
                          [6, 12, 30], f'model.teacher_checkpoint={trained_teacher}')
    assert teacher_acc > 85
    assert student['6'] >= teacher_acc - 5 and student['12'] >= teacher_acc - 10, (teacher_acc, student)
