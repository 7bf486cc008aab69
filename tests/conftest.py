import os.path as osp
import subprocess
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, osp.join(ROOT, 'tools'))
from _threads import thread_defaults  # noqa: E402

thread_defaults()  # the tools' thread defaults, before torch loads (tools/_threads.py); tools run here inherit them

import pytest  # noqa: E402
import torch  # noqa: E402
from mmengine.config import Config  # noqa: E402

import flexitransfer  # noqa: E402,F401


@pytest.fixture
def tiny_arch():
    return dict(embed_dims=64, num_layers=2, num_heads=2)


def randomize(model, seed=0):
    """Random values everywhere (zero-init'd pos/cls would hide bugs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model


@pytest.fixture(scope='session')
def seg_toy_data(tmp_path_factory):
    from flexitransfer.datasets import make_ade20k_like
    root = tmp_path_factory.mktemp('toy_ade') / 'ADEChallengeData2016'
    return make_ade20k_like(str(root), num_train=96, num_val=24)


def data_opts(root, workers=0):
    """--cfg-options pointing a tiny config's dataloaders at generated data."""
    return [f'train_dataloader.dataset.data_root={root}', f'val_dataloader.dataset.data_root={root}',
            f'test_dataloader.dataset.data_root={root}', f'train_dataloader.num_workers={workers}',
            f'val_dataloader.num_workers={workers}', 'train_dataloader.persistent_workers=False',
            'val_dataloader.persistent_workers=False']


def run_tool(*args):
    """Run `python tools/...` from the repo root as a user would; return its output, fail on error."""
    res = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, (res.stdout[-2000:], res.stderr[-4000:])
    return res.stdout + res.stderr


# ----------------------------------------------------------------------------- trained tiny models, once per session
# (shared by the task tests and the API / inferencer tests)
@pytest.fixture(scope='session')
def trained_seg(tmp_path_factory, seg_toy_data):
    """The tiny Segmenter trained once (300 iterations, random p); returns (checkpoint, work dir)."""
    work = str(tmp_path_factory.mktemp('tiny_seg'))
    run_tool('tools/train.py', 'configs/seg/tiny_seg_flexi.py', '--work-dir', work, '--cfg-options',
             *data_opts(seg_toy_data, 2))
    ckpt = osp.join(work, 'iter_300.pth')
    assert osp.isfile(ckpt)
    return ckpt, work


PAN_TINY = 'configs/panoptic/tiny_panoptic_flexi.py'


@pytest.fixture(scope='session')
def pan_toy(tmp_path_factory):
    from flexitransfer.datasets.toy.coco_panoptic import make_coco_panoptic_like
    return make_coco_panoptic_like(str(tmp_path_factory.mktemp('toy_coco_panoptic')), num_train=96, num_val=24)


def pan_opts(root, workers=0):
    """--cfg-options pointing the tiny panoptic config's data and evaluator at generated data."""
    root = root.rstrip('/') + '/'
    ann, seg = root + 'annotations/panoptic_val2017.json', root + 'annotations/panoptic_val2017/'
    return [f'train_dataloader.dataset.data_root={root}', f'val_dataloader.dataset.data_root={root}',
            f'test_dataloader.dataset.data_root={root}', f'train_dataloader.num_workers={workers}',
            f'val_dataloader.num_workers={workers}', f'test_dataloader.num_workers={workers}',
            'train_dataloader.persistent_workers=False', 'val_dataloader.persistent_workers=False',
            'test_dataloader.persistent_workers=False', f'val_evaluator.ann_file={ann}',
            f'val_evaluator.seg_prefix={seg}', f'test_evaluator.ann_file={ann}', f'test_evaluator.seg_prefix={seg}']


@pytest.fixture(scope='session')
def tiny_pan_ckpt(tmp_path_factory, pan_toy):
    """The tiny config trained once (200 iterations, random p in {8, 12, 16, 24}); reused below."""
    work = str(tmp_path_factory.mktemp('tiny_panoptic'))
    run_tool('tools/train.py', PAN_TINY, '--work-dir', work, '--cfg-options', *pan_opts(pan_toy),
             'train_cfg.val_interval=100000')
    ckpt = osp.join(work, f'iter_{Config.fromfile(osp.join(ROOT, PAN_TINY)).max_iters}.pth')
    assert osp.isfile(ckpt)
    return ckpt


def det_opts(root, ann_val=None):
    """--cfg-options pointing the tiny detection config at generated data."""
    o = [f'train_dataloader.dataset.data_root={root}', f'val_dataloader.dataset.data_root={root}',
         f'test_dataloader.dataset.data_root={root}', 'train_dataloader.num_workers=0', 'val_dataloader.num_workers=0',
         'train_dataloader.persistent_workers=False', 'val_dataloader.persistent_workers=False']
    if ann_val:
        o += [f'val_evaluator.ann_file={ann_val}', f'test_evaluator.ann_file={ann_val}']
    return o


@pytest.fixture(scope='session')
def det_data(tmp_path_factory):
    from flexitransfer.datasets.toy.coco_instances import make_coco_instances_like
    return make_coco_instances_like(str(tmp_path_factory.mktemp('toy_det')), num_train=240, num_val=48)


@pytest.fixture(scope='session')
def trained_det(det_data, tmp_path_factory):
    work = tmp_path_factory.mktemp('owl_work')
    run_tool('tools/train.py', 'configs/det/tiny_owl_det.py', '--work-dir', str(work), '--cfg-options',
             *det_opts(det_data, osp.join(det_data, 'annotations', 'instances_val2017.json')),
             'default_hooks.checkpoint.interval=100000')  # only the final checkpoint
    ckpt = osp.join(work, 'iter_300.pth')
    assert osp.isfile(ckpt)
    return ckpt, work
