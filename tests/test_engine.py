import os
import os.path as osp
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import ROOT

from flexitransfer.engine import RandomPatchSizeHook, draw_patch_size, format_patch_table, set_patch_size
from flexitransfer.models.backbones import DEFAULT_PATCH_SIZES, FlexiViT


def test_draw_is_a_function_of_seed_and_iteration():
    a = [draw_patch_size(i) for i in range(400)]
    assert a == [draw_patch_size(i) for i in range(400)]
    assert a != [draw_patch_size(i, seed=1) for i in range(400)]
    counts = Counter(a)
    assert set(counts) == set(DEFAULT_PATCH_SIZES)  # every size is used
    assert max(counts.values()) < 3 * min(counts.values())  # roughly uniform


def test_draw_respects_probs():
    sizes = [8, 16, 32]
    draws = Counter(draw_patch_size(i, sizes, probs=[0, 1, 3]) for i in range(400))
    assert draws[8] == 0 and draws[32] > 2 * draws[16] > 0
    with pytest.raises(ValueError, match='one per patch size'):
        RandomPatchSizeHook(sizes, probs=[1, 2])


class _Hub:
    def update_info(self, *a):
        pass


class _Runner:
    def __init__(self, model):
        self.model, self.iter, self.message_hub = model, 0, _Hub()


def _rank_worker(rank, world, port, out_dir):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=world)
    torch.manual_seed(rank)  # different global RNG state per rank must not matter
    model = torch.nn.Sequential(FlexiViT(arch=dict(embed_dims=16, num_layers=1, num_heads=1)))
    hook, runner = RandomPatchSizeHook(), _Runner(model)
    hook.before_train(runner)
    seen = []
    for it in range(64):
        runner.iter = it
        hook.before_train_iter(runner, it)
        seen.append(model[0].patch_size[0])
    gathered = [None] * world
    dist.all_gather_object(gathered, seen)
    if rank == 0:
        torch.save(gathered, osp.join(out_dir, 'draws.pt'))
    dist.destroy_process_group()


def test_two_ranks_draw_the_same_patch_every_iteration(tmp_path):
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    mp.spawn(_rank_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = torch.load(tmp_path / 'draws.pt')
    assert r0 == r1 and len(set(r0)) > 5


def test_set_patch_size_skips_locked_modules():
    a, b = FlexiViT(arch=dict(embed_dims=16, num_layers=1, num_heads=1)), \
        FlexiViT(arch=dict(embed_dims=16, num_layers=1, num_heads=1), patch_size=8)
    b.lock_patch_size = True
    set_patch_size(torch.nn.ModuleList([a, b]), 24)
    assert a.patch_size == (24, 24) and b.patch_size == (8, 8)
    with pytest.raises(ValueError, match='no FlexiViT'):
        set_patch_size(torch.nn.Linear(2, 2), 8)


def test_patch_table_format():
    t = format_patch_table([{'patch': '8', 'tokens': 225, 'mIoU': 91.234, 'name': 'x'},
                            {'patch': '16', 'tokens': 64, 'mIoU': 80.0, 'name': 'y'}])
    assert t.splitlines() == ['| patch | tokens | mIoU |', '|---|---|---|', '| 8 | 225 | 91.23 |',
                              '| 16 | 64 | 80.00 |']


def _latest(work):
    f = osp.join(work, 'last_checkpoint')
    return open(f).read().strip() if osp.exists(f) else None


def _iter_of(ckpt_path):
    return int(osp.basename(ckpt_path)[5:-4]) if ckpt_path else -1


def wait_for(condition, what, proc=None, limit_s=1800, poll_s=0.5):
    """Wait until ``condition()`` holds; fail clearly if ``proc`` dies first or nothing happens for ``limit_s``."""
    t0 = time.monotonic()
    while not condition():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f'the process exited (code {proc.returncode}) before {what}')
        if time.monotonic() - t0 > limit_s:
            pytest.fail(f'{what} did not happen within {limit_s} s (machine far too slow, or a hang)')
        time.sleep(poll_s)


def test_train_kill_resume_is_bit_identical(tmp_path, seg_toy_data):
    """save -> SIGKILL mid-run -> --resume continues from the last checkpoint and ends bit-identical to an
    uninterrupted run of the same length; the checkpoint loads on torch >= 2.6 (weights-only unpickling)."""
    work, ref_work = str(tmp_path / 'work'), str(tmp_path / 'ref')
    opts = ['--cfg-options', f'train_dataloader.dataset.data_root={seg_toy_data}',
            f'val_dataloader.dataset.data_root={seg_toy_data}', f'test_dataloader.dataset.data_root={seg_toy_data}',
            'default_hooks.checkpoint.interval=5', 'train_cfg.val_interval=1000',
            'train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False',
            'default_hooks.checkpoint.max_keep_ckpts=10', 'default_hooks.logger.interval=1']
    cmd = [sys.executable, 'tools/train.py', 'configs/seg/tiny_seg_flexi.py']
    proc = subprocess.Popen(cmd + ['--work-dir', work] + opts + ['train_cfg.max_iters=400'], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:  # the event: a complete checkpoint of iteration >= 10 (last_checkpoint is written after the file)
        wait_for(lambda: _iter_of(_latest(work)) >= 10, 'a checkpoint of iteration >= 10 was recorded', proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done = _iter_of(_latest(work))
    assert 10 <= done < 400
    end = done + 5
    res = subprocess.run(cmd + ['--work-dir', work, '--resume'] + opts + [f'train_cfg.max_iters={end}'],
                         cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    log = res.stdout + res.stderr
    assert f'resumed epoch: 0, iter: {done}' in log
    assert f'Iter(train) [{end}/{end}]' in log
    ref = subprocess.run(cmd + ['--work-dir', ref_work] + opts + [f'train_cfg.max_iters={end}'],
                         cwd=ROOT, capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr[-3000:]

    ckpt = torch.load(osp.join(work, f'iter_{end}.pth'))  # torch's default: weights_only=True
    ref_ckpt = torch.load(osp.join(ref_work, f'iter_{end}.pth'))
    assert ckpt['meta']['iter'] == end and 'message_hub' in ckpt
    sd, ref_sd = ckpt['state_dict'], ref_ckpt['state_dict']
    assert sd.keys() == ref_sd.keys()
    diff = max((sd[k].double() - ref_sd[k].double()).abs().max().item() for k in sd)
    assert diff == 0.0, f'killed at {done} + resumed to {end} vs uninterrupted: max abs diff {diff}'
    first = torch.load(osp.join(work, 'iter_5.pth'))['state_dict']
    assert any(not torch.equal(first[k], sd[k]) for k in sd)  # it did train

    # load_from / load_checkpoint into a model
    from mmengine.runner import load_checkpoint
    m = FlexiViT(arch=dict(embed_dims=96, num_layers=4, num_heads=3))
    load_checkpoint(m, osp.join(work, f'iter_{end}.pth'), revise_keys=[(r'^backbone\.', '')], strict=False)
    assert torch.equal(m.pos_embed, sd['backbone.pos_embed'])


# ----------------------------------------------------------------------------- memory preflight (engine/preflight.py)
@pytest.fixture(scope='module')
def seg_runner(tmp_path_factory, seg_toy_data):
    """The tiny Segmenter's Runner, built in-process (no training): random p in 8..40, batch 8 of 120x120."""
    from mmengine.config import Config
    from mmengine.runner import Runner

    cfg = Config.fromfile(osp.join(ROOT, 'configs/seg/tiny_seg_flexi.py'))
    for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
        loader.update(num_workers=0, persistent_workers=False)
        loader.dataset.data_root = seg_toy_data
    cfg.work_dir = str(tmp_path_factory.mktemp('preflight'))
    return Runner.from_cfg(cfg)


def test_preflight_runs_the_smallest_patch_and_leaves_the_run_untouched(seg_runner):
    """One forward + backward at the smallest patch the hook draws (8 of 8..40), at the config's batch and crop;
    weights, buffers, gradients, patch size and random generators are as before (training is unchanged)."""
    import numpy as np

    from flexitransfer.engine import get_patch_size, memory_preflight
    model = seg_runner.model
    seg_runner.train_loop  # built before the preflight, as tools/train.py does (check_datasets_nonempty)
    backbone = next(m for m in model.modules() if isinstance(m, FlexiViT))
    seen = []
    handle = backbone.register_forward_pre_hook(lambda m, args: seen.append(m.patch_size))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = (torch.get_rng_state(), np.random.get_state()[1].copy())
    try:
        assert memory_preflight(seg_runner) is None  # off by default on a CPU
        assert seen == []
        report = memory_preflight(seg_runner, enabled=True)
    finally:
        handle.remove()
    assert seen == [(8, 8)], seen  # the heaviest draw, once
    assert 'patch 8 (the smallest RandomPatchSizeHook draws), batch 8 at 120x120' in report, report
    assert 'GiB' in report
    assert get_patch_size(model) == (12, 12)  # the model's own again
    assert all(p.grad is None for p in model.parameters())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(rng[0], torch.get_rng_state()) and (rng[1] == np.random.get_state()[1]).all()


def test_preflight_fails_at_iteration_0_when_the_step_does_not_fit(seg_runner, monkeypatch):
    """Over budget (a mocked device): one error naming the patch, the memory needed, what the device has and the
    fixes (with_cp, a smaller batch, dropping the smallest patch from the draw)."""
    from flexitransfer.engine import PreflightMemoryError, memory_preflight
    from flexitransfer.engine import preflight as pf
    monkeypatch.setattr(pf, 'device_memory', lambda device: (3 * pf.GiB, pf.GiB))
    with pytest.raises(PreflightMemoryError) as e:
        memory_preflight(seg_runner, enabled=True)
    msg = str(e.value)
    for part in ('patch 8 ', 'batch 8 at 120x120', 'needs 3.0', 'forward + backward 3.00 GiB', 'cpu has 1.00 GiB',
                 'model.backbone.with_cp=True', 'train_dataloader.batch_size=4',
                 'dropping patch 8 from the draw (custom_hooks.0.patch_sizes=[10,12,15,20,24,30,40])',
                 '--no-preflight'):
        assert part in msg, (part, msg)
