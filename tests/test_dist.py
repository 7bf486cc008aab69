"""Distributed runs on a CPU machine (gloo): real torchrun training, gathered LiT losses."""
import json
import os
import os.path as osp
import socket
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import ROOT, data_opts
from mmengine.structures import BaseDataElement

PROBE = '''
import json, os
import torch
import mmengine.runner.runner as mm_runner
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from flexitransfer.engine import flexi_modules

OUT = os.environ['DIST_PROBE_OUT']
_save = mm_runner.save_checkpoint

def _log(rec):
    rank = int(os.environ.get('RANK', 0))
    with open(os.path.join(OUT, f'rank{rank}.jsonl'), 'a') as f:
        f.write(json.dumps(rec) + '\\n')

def save_checkpoint(checkpoint, filename, *a, **k):  # who writes checkpoints
    _log({'save': os.path.basename(str(filename))})
    return _save(checkpoint, filename, *a, **k)

mm_runner.save_checkpoint = save_checkpoint

@HOOKS.register_module()
class DistProbeHook(Hook):
    priority = 'LOWEST'

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        model = getattr(runner.model, 'module', runner.model)
        _log({'iter': runner.iter, 'patch': flexi_modules(model)[0].patch_size[0], 'world': runner.world_size,
              'wrapper': type(runner.model).__name__})

    def after_train(self, runner):
        model = getattr(runner.model, 'module', runner.model)
        torch.save({k: v.detach().clone() for k, v in model.state_dict().items()},
                   os.path.join(OUT, f'params_rank{runner.rank}_iter{runner.iter}.pt'))
'''


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _records(out, rank):
    return [json.loads(line) for line in open(osp.join(out, f'rank{rank}.jsonl'))]


def _torchrun(cfg, work, out, *extra):
    env = dict(os.environ, PYTHONPATH=out + os.pathsep + os.environ.get('PYTHONPATH', ''), DIST_PROBE_OUT=out,
               OMP_NUM_THREADS='1')
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port', str(_free_port()),
           'tools/train.py', cfg, '--launcher', 'pytorch', '--work-dir', work, *extra]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert res.returncode == 0, (res.stdout[-3000:], res.stderr[-5000:])
    return res.stdout + res.stderr


def test_torchrun_two_ranks_on_cpu(tmp_path, seg_toy_data):
    """torchrun --nproc_per_node 2 tools/train.py ... --launcher pytorch on a machine without CUDA (gloo)."""
    out, work = str(tmp_path / 'probe'), str(tmp_path / 'work')
    os.makedirs(out)
    open(osp.join(out, 'dist_probe.py'), 'w').write(PROBE)
    cfg = tmp_path / 'cfg.py'
    cfg.write_text(textwrap.dedent(f'''
        _base_ = [{osp.join(ROOT, 'configs/seg/tiny_seg_flexi.py')!r}]
        custom_imports = dict(imports=['flexitransfer', 'dist_probe'], allow_failed_imports=False)
        custom_hooks = [dict(type='RandomPatchSizeHook', patch_sizes=[8, 10, 12, 15, 20, 24, 30, 40]),
                        dict(type='DistProbeHook')]
    '''))
    opts = ['--cfg-options', *data_opts(seg_toy_data), 'val_dataloader.num_workers=0', 'train_cfg.val_interval=1000',
            'default_hooks.checkpoint.interval=3', 'default_hooks.logger.interval=1', 'train_dataloader.batch_size=4']
    _torchrun(str(cfg), work, out, *opts, 'train_cfg.max_iters=6')
    log = _torchrun(str(cfg), work, out, '--resume', *opts, 'train_cfg.max_iters=9')
    assert 'resumed epoch: 0, iter: 6' in log

    r0, r1 = _records(out, 0), _records(out, 1)
    it0 = [(r['iter'], r['patch']) for r in r0 if 'iter' in r]
    it1 = [(r['iter'], r['patch']) for r in r1 if 'iter' in r]
    assert [i for i, _ in it0] == list(range(9)), it0  # 0..5, then 6..8 after the resume
    assert it0 == it1, 'ranks trained at different patch sizes'
    assert len({p for _, p in it0}) > 2
    assert all(r['world'] == 2 and r['wrapper'] == 'MMDistributedDataParallel' for r in r0 + r1 if 'iter' in r)
    # only rank 0 writes checkpoints
    assert [r['save'] for r in r0 if 'save' in r] == ['iter_3.pth', 'iter_6.pth', 'iter_9.pth']
    assert not [r for r in r1 if 'save' in r]
    # DDP keeps the replicas identical, before and after the resume
    for it in (6, 9):
        p0 = torch.load(osp.join(out, f'params_rank0_iter{it}.pt'))
        p1 = torch.load(osp.join(out, f'params_rank1_iter{it}.pt'))
        assert p0.keys() == p1.keys()
        for k in p0:
            assert torch.equal(p0[k], p1[k]), f'{k} differs between ranks after iteration {it}'
    start = torch.load(osp.join(out, 'params_rank0_iter6.pt'))
    assert any(not torch.equal(start[k], p0[k]) for k in p0), 'the resumed run did not train'


# ---------------------------------------------------------------- gathered losses
def _lit(loss):
    from flexitransfer.models import LiT
    torch.manual_seed(0)
    return LiT(image_backbone=dict(type='FlexiViT', arch=dict(embed_dims=32, num_layers=1, num_heads=2),
                                   patch_size=8, base_patch_size=8, base_pos_grid=3),
               text_tower=dict(type='OpenCLIPTextTower', width=32, heads=2, layers=1, context_length=16,
                               output_dim=16),
               embed_dim=16, lock_image=False, loss=loss)


def _batch():
    g = torch.Generator().manual_seed(1)
    imgs = torch.randn(8, 3, 24, 24, generator=g)
    caps = [f'a {c} {s}' for c, s in zip(['red', 'green', 'blue', 'yellow'] * 2,
                                           ['circle'] * 4 + ['square', 'triangle', 'square', 'circle'])]
    return imgs, caps


def _loss_and_grads(model, imgs, caps):
    samples = [BaseDataElement(caption=c) for c in caps]
    loss = model(imgs, samples, mode='loss')['loss']
    loss.backward()
    return loss.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _loss_worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=world)
    torch.set_num_threads(1)
    imgs, caps = _batch()
    n = len(caps) // world
    res = {}
    for loss_type in ('clip', 'siglip'):
        loss, grads = _loss_and_grads(_lit(loss_type), imgs[rank * n:(rank + 1) * n], caps[rank * n:(rank + 1) * n])
        dist.all_reduce(loss)
        for g in grads.values():  # what DDP does: average the gradients over ranks
            dist.all_reduce(g)
            g /= world
        res[loss_type] = {'loss': loss / world, 'grads': grads}
    if rank == 0:
        torch.save(res, out)
    dist.destroy_process_group()


@pytest.fixture(scope='module')
def two_rank_losses(tmp_path_factory):
    out = str(tmp_path_factory.mktemp('dist_loss') / 'dist.pt')
    mp.start_processes(_loss_worker, args=(2, _free_port(), out), nprocs=2, join=True, start_method='fork')
    return torch.load(out)


@pytest.mark.parametrize('loss_type', ['clip', 'siglip'])
def test_gathered_lit_loss_equals_one_process(two_rank_losses, loss_type):
    """ClipLoss / SigLipLoss over 2 ranks (4 pairs each) == one process on the 8 pairs: loss and gradients."""
    got = two_rank_losses[loss_type]
    ref_loss, ref_grads = _loss_and_grads(_lit(loss_type), *_batch())
    torch.testing.assert_close(got['loss'], ref_loss, rtol=1e-5, atol=1e-6)
    assert got['grads'].keys() == ref_grads.keys() and len(ref_grads) > 10
    for k, g in ref_grads.items():
        torch.testing.assert_close(got['grads'][k], g, rtol=1e-4, atol=1e-6, msg=lambda m: f'{k}: {m}')
    assert ref_grads['logit_scale'].abs() > 0
