"""The bad-input sweep (README "Bad input"): every case ends in an error naming the file or argument,
the problem and the fix, raised before any training work."""
import json
import os
import os.path as osp
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT
from mmengine.config import Config
from PIL import Image

from flexitransfer.datasets import (
    BadInputError,
    CaptionDataset,
    CIFARDataset,
    ImageFolderDataset,
    make_ade20k_like,
    make_cifar_like,
    make_coco_captions_like,
    make_imagefolder_like,
)
from flexitransfer.engine import RandomPatchSizeHook, check_checkpoint, validate_patch_config
from flexitransfer.models.backbones import FlexiViT

SEG_CFG = osp.join(ROOT, 'configs/seg/tiny_seg_flexi.py')
LOAD = [dict(type='LoadImageFromFile')]


def _truncate(path, keep=0.5):
    data = open(path, 'rb').read()
    open(path, 'wb').write(data[:int(len(data) * keep)])


def _corrupt(path, how):
    if how == 'truncated':
        _truncate(path)
    elif how == 'not_an_image':
        open(path, 'w').write('this is a text file, not an image\n')
    elif how == 'empty':
        open(path, 'wb').close()
    elif how == 'missing':
        os.remove(path)


@pytest.fixture(scope='module')
def small_data(tmp_path_factory):
    root = tmp_path_factory.mktemp('bad')
    return {'seg': make_ade20k_like(str(root / 'ade'), num_train=2, num_val=2, size=(48, 48)),
            'cls': make_imagefolder_like(str(root / 'cls'), num_train=1, num_val=1, size=(32, 32)),
            'captions': make_coco_captions_like(str(root / 'coco'), num_train=2, num_val=2, size=(32, 32))}


def _copy(src, dst):
    import shutil
    shutil.copytree(src, dst)
    return str(dst)


def _seg_dataset(root):
    from mmengine.registry import DefaultScope
    from mmseg.datasets import BaseSegDataset
    with DefaultScope.overwrite_default_scope('mmseg'):  # as the mmseg configs' runner does
        return BaseSegDataset(data_root=root, data_prefix=dict(img_path='images/training',
                                                               seg_map_path='annotations/training'),
                              img_suffix='.jpg', seg_map_suffix='.png', reduce_zero_label=True,
                              pipeline=LOAD + [dict(type='LoadAnnotations', reduce_zero_label=True)])


@pytest.mark.parametrize('how,expect', [('truncated', 'truncated JPEG'), ('not_an_image', 'not a decodable image'),
                                        ('empty', 'the file is empty'), ('missing', 'image file not found')])
@pytest.mark.parametrize('kind', ['seg', 'cls', 'captions'])
def test_broken_image_files_in_every_dataset_type(tmp_path, small_data, kind, how, expect):
    root = _copy(small_data[kind], tmp_path / kind)
    if kind == 'seg':
        ds = _seg_dataset(root)
        path = ds.get_data_info(0)['img_path']
    elif kind == 'cls':
        ds = ImageFolderDataset(root, data_prefix='train', pipeline=LOAD)
        path = ds.samples[0][0]
    else:
        ds = CaptionDataset(root, 'annotations/captions_train2017.json', data_prefix='train2017', pipeline=LOAD)
        path = ds.samples[0][0]
    _corrupt(path, how)
    with pytest.raises(BadInputError) as e:
        ds[0]
    msg = str(e.value)
    assert path in msg and expect in msg and ('replace the file' in msg or 'restore it' in msg)


def test_truncated_jpeg_is_caught_although_opencv_decodes_it(tmp_path):
    """cv2 decodes a truncated JPEG into an image with grey rows: a silent wrong result without the check."""
    import cv2
    path = str(tmp_path / 'x.jpg')
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path, quality=95)
    _truncate(path, 0.7)
    assert cv2.imread(path) is not None  # the silent case
    from mmengine.registry import TRANSFORMS
    with pytest.raises(BadInputError, match='truncated JPEG'):  # what every config's 'LoadImageFromFile' builds
        TRANSFORMS.build(dict(type='LoadImageFromFile')).transform({'img_path': path})


@pytest.mark.parametrize('how,expect', [('resized', 'must have its image'), ('truncated', 'truncated PNG'),
                                        ('missing', 'label map not found')])
def test_broken_label_maps(tmp_path, small_data, how, expect):
    root = _copy(small_data['seg'], tmp_path / 'seg')
    ds = _seg_dataset(root)
    path = ds.get_data_info(0)['seg_map_path']
    if how == 'resized':
        Image.open(path).resize((40, 48)).save(path)
    else:
        _corrupt(path, how)
    with pytest.raises(BadInputError) as e:
        ds[0]
    assert path in str(e.value) and expect in str(e.value)


def test_cifar_truncated_or_malformed_pickle(tmp_path):
    root = make_cifar_like(str(tmp_path / 'cifar'), num_train=10, num_test=4)
    CIFARDataset(root, split='test')  # fine before
    _truncate(osp.join(root, 'test_batch'))
    with pytest.raises(BadInputError, match=r"test_batch.*truncated or not a CIFAR pickle.*extract"):
        CIFARDataset(root, split='test')
    import pickle
    pickle.dump({b'data': np.zeros((3, 100), np.uint8), b'labels': [0, 1, 2]}, open(osp.join(root, 'test_batch'), 'wb'))
    with pytest.raises(BadInputError, match='expected 3072 per image'):
        CIFARDataset(root, split='test')


@pytest.mark.parametrize('edit,expect', [
    (lambda d: 'not json {', 'not valid JSON'),
    (lambda d: {'images': d['images']}, 'expected COCO captions JSON'),
    (lambda d: dict(d, images=[{'id': 1}] + d['images']), 'lacks "id" / "file_name"'),
    (lambda d: dict(d, annotations=d['annotations'] + [{'id': 99, 'image_id': 12345, 'caption': 'x'}]),
     'names image_id 12345, which is not in "images"'),
    (lambda d: dict(d, annotations=[dict(d['annotations'][0], caption='  ')] + d['annotations'][1:]),
     'empty caption'),
])
def test_broken_caption_files(tmp_path, small_data, edit, expect):
    root = _copy(small_data['captions'], tmp_path / 'coco')
    path = osp.join(root, 'annotations/captions_train2017.json')
    new = edit(json.load(open(path)))
    open(path, 'w').write(new if isinstance(new, str) else json.dumps(new))
    with pytest.raises(BadInputError) as e:
        CaptionDataset(root, 'annotations/captions_train2017.json', data_prefix='train2017')
    assert path in str(e.value) and expect in str(e.value)


def test_karpathy_empty_caption(tmp_path, small_data):
    root = _copy(small_data['captions'], tmp_path / 'coco')
    path = osp.join(root, 'annotations/dataset_coco.json')
    d = json.load(open(path))
    d['images'][0]['sentences'][1]['raw'] = ''
    json.dump(d, open(path, 'w'))
    with pytest.raises(BadInputError, match='image entry 0 .* has an empty caption'):
        CaptionDataset(root, 'annotations/dataset_coco.json', format='karpathy', split='train')


def test_empty_datasets(tmp_path):
    os.makedirs(tmp_path / 'cls' / 'train' / 'red')
    with pytest.raises(BadInputError, match='no images found.*dataset is empty.*make_toy_data'):
        ImageFolderDataset(str(tmp_path / 'cls'), data_prefix='train')
    d = {'images': [], 'annotations': []}
    os.makedirs(tmp_path / 'coco' / 'annotations')
    json.dump(d, open(tmp_path / 'coco' / 'annotations' / 'c.json', 'w'))
    with pytest.raises(BadInputError, match='no images with captions'):
        CaptionDataset(str(tmp_path / 'coco'), 'annotations/c.json')


def test_empty_training_set_fails_before_training(tmp_path):
    """An empty mmseg dataset would make the infinite sampler spin forever: tools/train.py stops at once."""
    root = tmp_path / 'ADEChallengeData2016'
    for sub in ('images/training', 'images/validation', 'annotations/training', 'annotations/validation'):
        os.makedirs(root / sub)
    res = subprocess.run([sys.executable, 'tools/train.py', SEG_CFG, '--work-dir', str(tmp_path / 'w'), '--cfg-options',
                          f'train_dataloader.dataset.data_root={root}', f'val_dataloader.dataset.data_root={root}',
                          'train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False'],
                         cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert res.returncode != 0
    assert 'train_dataloader: the dataset BaseSegDataset' in res.stderr and 'has no samples' in res.stderr
    assert str(root) in res.stderr and 'Iter(train)' not in res.stdout + res.stderr


@pytest.mark.parametrize('tool,config', [('tools/train.py', 'configs/seg/tiny_seg_flexi.py'),
                                         ('tools/test.py', 'configs/det/tiny_owl_det.py')])
def test_missing_data_folder_names_data_root_and_the_fix(tmp_path, tool, config):
    """A seg / det config whose data folder is missing: one line naming the config, the entry and the fix
    (was mmseg's bare "[Errno 2] ... images/training"), before any dataset is built."""
    stage = 'train' if tool.endswith('train.py') else 'test'
    args = [tool, config]
    if stage == 'test':  # a checkpoint that fits (random weights): tools/test.py reads it first
        from flexitransfer.apis import init_model
        args.append(str(tmp_path / 'random.pth'))
        torch.save({'state_dict': init_model(osp.join(ROOT, config)).state_dict(), 'meta': {}}, args[-1])
    root = str(tmp_path / 'nowhere' / 'data')
    rc, err, out, _ = _tool(*args, '--work-dir', str(tmp_path / 'w'), '--cfg-options',
                            f'{stage}_dataloader.dataset.data_root={root}')
    said = '\n'.join(err)
    assert rc != 0 and 'Errno' not in said, said
    assert f"{config}: {stage}_dataloader.dataset.data_root: the folder {root!r} does not exist" in said, said
    assert f'--cfg-options {stage}_dataloader.dataset.data_root=DIR' in said and 'make_toy_data.py' in said


@pytest.mark.parametrize('config,kind', [('configs/seg/tiny_seg_flexi.py', 'seg'),
                                         ('configs/det/tiny_owl_det.py', 'det'),
                                         ('configs/panoptic/tiny_panoptic_flexi.py', 'panoptic'),
                                         ('configs/retrieval/tiny_lit_flexi.py', 'captions')])
def test_missing_toy_data_of_every_task_names_its_generator(tmp_path, monkeypatch, config, kind):
    """Run from a folder without data/: each tiny config's message names the command that writes its data."""
    from flexitransfer.engine.validate import check_data_paths
    cfg = Config.fromfile(osp.join(ROOT, config))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as e:
        check_data_paths(cfg, ('train', 'val'), config)
    msg = str(e.value)
    assert msg.startswith(f'{config}: train_dataloader.dataset.data_root: the folder ') and 'does not exist' in msg
    assert msg.endswith(f'generate the toy data: python tools/make_toy_data.py {kind}'), msg


def test_missing_annotation_file_and_evaluator_file(tmp_path):
    from flexitransfer.engine.validate import check_data_paths
    cfg = Config.fromfile(SEG_CFG)
    cfg.train_dataloader.dataset.data_root = str(tmp_path)  # exists, but holds no images/training
    with pytest.raises(FileNotFoundError, match=re.escape(
            f"x.py: train_dataloader.dataset.data_prefix.img_path: the folder '{tmp_path}/images/training' does "
            f"not exist under data_root='{tmp_path}'")):
        check_data_paths(cfg, ('train',), 'x.py')
    det = Config.fromfile(osp.join(ROOT, 'configs/det/tiny_owl_det.py'))
    det.val_dataloader.dataset = dict(type='CocoDataset', data_root=str(tmp_path))  # data fine, evaluator not
    det.val_evaluator.ann_file = str(tmp_path / 'instances_val.json')
    with pytest.raises(FileNotFoundError, match=r"val_evaluator.ann_file: .*instances_val.json' does not exist; .*"
                                                r"--cfg-options val_evaluator.ann_file=PATH"):
        check_data_paths(det, ('val',), 'x.py')


def _seg_cfg(**edits):
    cfg = Config.fromfile(SEG_CFG)
    for k, v in edits.items():
        obj = cfg
        *path, last = k.split('.')
        for p in path:
            obj = obj[int(p)] if p.isdigit() else obj[p]
        obj[last] = v
    return cfg


@pytest.mark.parametrize('edits,expect', [
    ({'custom_hooks.0.patch_sizes': [8, 0, 12]}, 'invalid patch size 0; a patch size is a positive integer'),
    ({'custom_hooks.0.patch_sizes': [8, -4]}, 'invalid patch size -4'),
    ({'custom_hooks.0.patch_sizes': [8, 240]}, 'patch size 240x240 is larger than the input 120x120'),
    ({'custom_hooks.0.patch_sizes': [8, 7]}, 'patch size 7x7 does not divide the input 120x120'),
    ({'custom_hooks.0.patch_sizes': [8, 16], 'custom_hooks.0.probs': [1, 2, 3]}, 'probs: probs must be 2'),
    ({'test_cfg.patch_sizes': [8, 16]}, 'test_cfg.patch_sizes: patch size 16x16 does not divide the pad divisor 120'),
    ({'model.backbone.patch_size': 0}, 'model.backbone.patch_size: invalid patch size 0'),
])
def test_bad_patch_sizes_fail_when_the_config_is_built(edits, expect):
    with pytest.raises(ValueError) as e:
        validate_patch_config(_seg_cfg(**edits), 'tiny_seg_flexi.py')
    assert 'tiny_seg_flexi.py' in str(e.value) and expect in str(e.value)
    if 'divide' in expect or 'larger' in expect:
        assert 'patch sizes that divide' in str(e.value) or 'lcm' in str(e.value)  # the fix


def test_every_shipped_config_passes_the_patch_check():
    import glob
    for f in sorted(glob.glob(osp.join(ROOT, 'configs/**/*.py'), recursive=True)):
        if '_base_' not in f:
            validate_patch_config(Config.fromfile(f), f)


def test_train_tool_rejects_a_bad_patch_before_training(tmp_path):
    res = subprocess.run([sys.executable, 'tools/train.py', SEG_CFG, '--work-dir', str(tmp_path),
                          '--cfg-options', 'custom_hooks.0.patch_sizes=[8,7]'],
                         cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert res.returncode != 0 and 'patch size 7x7 does not divide the input 120x120' in res.stderr
    assert not os.listdir(tmp_path) or 'Iter(train)' not in res.stdout + res.stderr


def test_hook_rejects_bad_probs():
    with pytest.raises(ValueError, match='one per patch size'):
        RandomPatchSizeHook([8, 16], probs=[1.0])


def test_wrong_or_truncated_checkpoints(tmp_path):
    arch = dict(embed_dims=32, num_layers=2, num_heads=2)
    model = torch.nn.Sequential()
    model.backbone = FlexiViT(arch=arch)
    good = str(tmp_path / 'good.pth')
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, good)
    check_checkpoint(model, good)
    other = torch.nn.Sequential()
    other.backbone = FlexiViT(arch=dict(embed_dims=48, num_layers=2, num_heads=2))
    with pytest.raises(ValueError, match=r'does not fit this Sequential: .* tensor\(s\) of another shape .*'
                                         r'backbone.pos_embed \(1, 49, 32\) vs model \(1, 49, 48\).*config it was'):
        check_checkpoint(other, good)
    deeper = torch.nn.Sequential()
    deeper.backbone = FlexiViT(arch=dict(arch, num_layers=3))
    with pytest.raises(ValueError, match=r'lacks .* backbone.blocks.2'):
        check_checkpoint(deeper, good)
    check_checkpoint(deeper, good, require_all=False)  # fine as an initialisation
    with pytest.raises(ValueError, match='no tensor in common'):
        check_checkpoint(torch.nn.Linear(2, 2), good)
    bad = str(tmp_path / 'truncated.pth')
    open(bad, 'wb').write(open(good, 'rb').read()[:5000])
    with pytest.raises(ValueError, match='truncated or not a PyTorch checkpoint'):
        check_checkpoint(model, bad)
    with pytest.raises(FileNotFoundError, match='checkpoint not found'):
        check_checkpoint(model, str(tmp_path / 'nope.pth'))


@pytest.mark.parametrize('keep,reason', [(100, r'RuntimeError: PytorchStreamReader failed reading zip archive: '
                                               r'failed finding central directory'),
                                         (0, "not in torch.save's zip format")])
def test_truncated_checkpoint_message_is_whole_and_names_the_file(tmp_path, keep, reason):
    """torch's reason as a whole sentence (the message used to cut it after 200 characters), the file, its
    size and the fix."""
    from flexitransfer.engine import read_state_dict
    good = str(tmp_path / 'good.pth')
    torch.save({'state_dict': {'w': torch.zeros(64)}, 'meta': {}}, good)
    bad = str(tmp_path / 'iter_300.pth')
    open(bad, 'wb').write(open(good, 'rb').read()[:keep])
    with pytest.raises(ValueError) as e:
        read_state_dict(bad)
    msg = str(e.value)
    assert re.search(rf"^checkpoint {re.escape(repr(bad))} \({keep} bytes\) cannot be read \({reason}\); the file is "
                     r"truncated or not a PyTorch checkpoint: download or copy it again, or pick an earlier "
                     r"checkpoint$", msg), msg


def test_test_tool_rejects_a_checkpoint_of_another_architecture(tmp_path, seg_toy_data):
    m = FlexiViT(arch=dict(embed_dims=32, num_layers=1, num_heads=2))
    ckpt = str(tmp_path / 'other.pth')
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in m.state_dict().items()}}, ckpt)
    res = subprocess.run([sys.executable, 'tools/test.py', SEG_CFG, ckpt, '--work-dir', str(tmp_path / 'w'),
                          '--cfg-options', f'test_dataloader.dataset.data_root={seg_toy_data}',
                          'test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False'],
                         cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert res.returncode != 0 and f'checkpoint {ckpt!r} does not fit this EncoderDecoder' in res.stderr


# ----------------------------------------------------------------------------- tool arguments: one or two lines
def _tool(*args):
    """Run a tool with -X importtime: its error, and whether it imported torch before answering."""
    res = subprocess.run([sys.executable, '-X', 'importtime', *args], cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
    err = [ln for ln in res.stderr.splitlines() if not ln.startswith('import time:')]
    imported_torch = any(ln.rstrip().endswith('| torch') for ln in res.stderr.splitlines())
    return res.returncode, err, res.stdout, imported_torch


@pytest.mark.parametrize('args,expect', [
    (['tools/test.py', 'configs/seg/tiny_seg_flexy.py', 'x.pth'],
     "config file not found: 'configs/seg/tiny_seg_flexy.py'; did you mean configs/seg/tiny_seg_flexi.py"),
    (['tools/train.py', 'configs/seg/tiny_seg_flexy.py'], "config file not found: 'configs/seg/tiny_seg_flexy.py'"),
    (['tools/test.py', SEG_CFG, 'work_dirs/nope/iter_300.pth'],
     "checkpoint not found: 'work_dirs/nope/iter_300.pth'; check the path"),
    (['tools/train.py', SEG_CFG, '--resume', 'nope.pth'], "--resume checkpoint not found: 'nope.pth'"),
    (['tools/detect.py', 'img.png'], 'the following arguments are required: --queries'),
])
def test_wrong_paths_and_arguments_are_answered_before_heavy_imports(args, expect):
    rc, err, out, imported_torch = _tool(*args)
    assert rc != 0 and expect in '\n'.join(err) and len([ln for ln in err if 'error' in ln]) == 1, err
    assert not imported_torch and 'Config:' not in out, (err, out[-500:])  # no config dump
    assert len(err) <= (6 if 'required' in expect else 2), err  # argparse: its usage + the error line


def test_missing_load_from_fails_before_the_config_dump(tmp_path):
    rc, err, out, _ = _tool('tools/train.py', SEG_CFG, '--work-dir', str(tmp_path), '--cfg-options',
                            'load_from=nope.pth')
    assert rc != 0 and "load_from checkpoint not found: 'nope.pth'" in '\n'.join(err) and len(err) <= 2, err
    assert 'Config:' not in out and not os.listdir(tmp_path)


def test_patch_not_dividing_the_test_input_same_message_in_test_and_deploy(tmp_path):
    from flexitransfer.engine.validate import check_patch_fits
    with pytest.raises(ValueError) as e:
        check_patch_fits(Config.fromfile(SEG_CFG), [8, 7], 'tiny_seg_flexi.py')
    assert str(e.value) == ('--patch 7: patch size 7 does not divide the test input of tiny_seg_flexi.py, padded to a '
                            'multiple of 120 (model.data_preprocessor.test_cfg.size_divisor); valid patch sizes: 2, 3, '
                            '4, 5, 6, 8, 10, 12, 15, 20, 24, 30, 40, 60, 120')
    with pytest.raises(ValueError, match=r'--patch 16: patch size 16 does not divide the input 120x120 of x.py '
                                         r'\(--img-size\); valid patch sizes: 2, 3, 4, 5, 6, 8, 10'):
        check_patch_fits(Config.fromfile(SEG_CFG), [16], 'x.py', img_size=(120, 120))
    ckpt = str(tmp_path / 'c.pth')
    open(ckpt, 'wb').close()  # never read: the patch is checked first
    said = []
    for tool in ('tools/test.py', 'tools/resize_deploy.py'):
        rc, err, _, _ = _tool(tool, 'configs/seg/tiny_seg_flexi.py', ckpt, '--patch', '7', '--cfg-options',
                              f'work_dir={tmp_path}')
        assert rc != 0 and len(err) == 2 and err[0].startswith(osp.basename(tool) + ': error: --patch 7: '), err
        said.append(err[0].split(': error: ', 1)[1])
    assert said[0] == said[1] and 'valid patch sizes: 2, 3, 4, 5, 6, 8' in said[0] and 'pad divisor' not in said[0]


@pytest.mark.parametrize('name,text', [('notes.txt', 'epoch 12: loss 0.31\n'), ('model.pth', 'epoch 12: loss 0.31\n'),
                                       ('model.npz', 'epoch 12: loss 0.31\n'), ('notes.txt', 'PKG notes\n')])
@pytest.mark.parametrize('fmt', ['timm', 'big_vision'])
def test_convert_weights_on_a_text_file(tmp_path, name, text, fmt):
    src = tmp_path / name
    src.write_text(text)
    rc, err, _, _ = _tool('tools/convert_weights.py', str(src), str(tmp_path / 'out.pth'), '--from', fmt)
    assert rc != 0 and len(err) == 1, err
    assert f"checkpoint '{src}' is a text file (starts '{text.strip()}'), not a checkpoint; give a weight" in err[0]
