import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
import flexitransfer  # noqa: E402,F401

torch.set_num_threads(max(1, os.cpu_count() or 1))


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
