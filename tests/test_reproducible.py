"""Same seed, same numbers: a tiny config trained twice on this CPU gives bit-identical weights.

LiT is the case that once did not come back (its caption draw runs in the loader workers), so
it is trained here with two workers, as its config does."""
import os.path as osp

import pytest
import torch

from conftest import run_tool


@pytest.fixture(scope='module')
def toy_captions(tmp_path_factory):
    from flexitransfer.datasets import make_coco_captions_like
    return make_coco_captions_like(str(tmp_path_factory.mktemp('coco')), num_train=96, num_val=30)


def test_tiny_lit_trains_bit_identically_twice(tmp_path, toy_captions):
    outs = []
    for run in ('a', 'b'):
        work = str(tmp_path / run)
        log = run_tool('tools/train.py', 'configs/retrieval/tiny_lit_flexi.py', '--work-dir', work, '--cfg-options',
                       f'train_dataloader.dataset.data_root={toy_captions}',
                       f'val_dataloader.dataset.data_root={toy_captions}', 'train_cfg.max_epochs=2',
                       'train_dataloader.num_workers=2', 'val_dataloader.num_workers=0',
                       'val_dataloader.persistent_workers=False', 'default_hooks.checkpoint.interval=2')
        outs.append((torch.load(osp.join(work, 'epoch_2.pth'))['state_dict'],
                     [ln.split('mean_R@1:')[-1].split()[0] for ln in log.splitlines() if 'Epoch(val)' in ln]))
    (a, ra), (b, rb) = outs
    assert a.keys() == b.keys()
    diffs = {k: (a[k].double() - b[k].double()).abs().max().item() for k in a}
    assert max(diffs.values()) == 0.0, {k: v for k, v in diffs.items() if v}
    assert ra == rb and ra, (ra, rb)  # and so the metric
