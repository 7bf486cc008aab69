"""Same seed, same numbers: every task whose numbers the README quotes, trained twice on this CPU,
gives bit-identical weights (and so identical metrics: evaluation is a deterministic forward).

Each config runs as its README command runs it (two loader workers, where augmentation and LiT's
caption draw happen; random patch sizes) for a few iterations, twice. LiT, the case that once did
not come back, also compares its validation metric. The digits study trains through its own loop
(``flexitransfer/experiments/digits.py``): the same check, in-process. The thread count is part of
"the same command": 1 and 2 OpenMP threads sum in different orders (README, "Threads")."""
import os.path as osp

import pytest
import torch
from conftest import data_opts, det_opts, pan_opts, run_tool


def _trained_twice(tmp_path, config, opts, ckpt):
    states = []
    for run in ('a', 'b'):
        work = str(tmp_path / run)
        log = run_tool('tools/train.py', config, '--work-dir', work, '--cfg-options', *opts)
        states.append((torch.load(osp.join(work, ckpt))['state_dict'], log))
    return states


def _assert_bit_identical(a, b):
    assert a.keys() == b.keys()
    diffs = {k: (a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].numel()}
    assert max(diffs.values()) == 0.0, {k: v for k, v in diffs.items() if v}


@pytest.fixture(scope='module')
def toy_captions(tmp_path_factory):
    from flexitransfer.datasets import make_coco_captions_like
    return make_coco_captions_like(str(tmp_path_factory.mktemp('coco')), num_train=96, num_val=30)


def test_tiny_lit_trains_bit_identically_twice(tmp_path, toy_captions):
    (a, la), (b, lb) = _trained_twice(
        tmp_path, 'configs/retrieval/tiny_lit_flexi.py',
        [f'train_dataloader.dataset.data_root={toy_captions}', f'val_dataloader.dataset.data_root={toy_captions}',
         'train_cfg.max_epochs=2', 'train_dataloader.num_workers=2', 'val_dataloader.num_workers=0',
         'val_dataloader.persistent_workers=False', 'default_hooks.checkpoint.interval=2'], 'epoch_2.pth')
    _assert_bit_identical(a, b)
    ra, rb = ([ln.split('mean_R@1:')[-1].split()[0] for ln in log.splitlines() if 'Epoch(val)' in ln]
              for log in (la, lb))
    assert ra == rb and ra, (ra, rb)


ITERS = 6  # a few random-patch steps with two loader workers; enough to diverge if anything is unseeded


def _iter_opts(n=ITERS):
    return [f'train_cfg.max_iters={n}', f'train_cfg.val_interval={100 * n}',
            f'default_hooks.checkpoint.interval={n}', 'param_scheduler=[]']


def test_tiny_seg_trains_bit_identically_twice(tmp_path, seg_toy_data):
    (a, _), (b, _) = _trained_twice(tmp_path, 'configs/seg/tiny_seg_flexi.py',
                                    [*data_opts(seg_toy_data, 2), *_iter_opts()], f'iter_{ITERS}.pth')
    _assert_bit_identical(a, b)


def test_tiny_panoptic_trains_bit_identically_twice(tmp_path, pan_toy):
    (a, _), (b, _) = _trained_twice(tmp_path, 'configs/panoptic/tiny_panoptic_flexi.py',
                                    [*pan_opts(pan_toy, 2), *_iter_opts()], f'iter_{ITERS}.pth')
    _assert_bit_identical(a, b)


def test_tiny_det_trains_bit_identically_twice(tmp_path, det_data):
    (a, _), (b, _) = _trained_twice(tmp_path, 'configs/det/tiny_owl_det.py',
                                    [*det_opts(det_data, osp.join(det_data, 'annotations', 'instances_val2017.json')),
                                     'train_dataloader.num_workers=2', *_iter_opts()],
                                    f'iter_{ITERS}.pth')
    _assert_bit_identical(a, b)


def test_digits_study_trains_bit_identically_twice():
    """``tools/reproduce_digits.py``'s loop (seeded init, batch order, augmentation and patch draw)."""
    from flexitransfer.experiments.digits import flexi_net, load_digits_48, random_patch_fn, train
    (x, y), _ = load_digits_48(0)
    states = []
    for _ in range(2):
        torch.manual_seed(0)
        net = train(flexi_net(8), (x[:256], y[:256]), 2, random_patch_fn(0), 0, 'digits')
        states.append(net.state_dict())
    _assert_bit_identical(*states)
