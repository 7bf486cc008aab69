"""Preemption-safe training (engine/preempt.py): a kill during a checkpoint write leaves no partial file, a
truncated latest checkpoint is skipped by --resume, SIGTERM saves and stops so that --resume ends bit-identical."""
import builtins
import os
import os.path as osp
import shutil
import signal
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
from conftest import ROOT
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner
from test_engine import _iter_of, _latest, wait_for

SEG = [sys.executable, 'tools/train.py', 'configs/seg/tiny_seg_flexi.py']


# ----------------------------------------------------------------------------- a kill while a checkpoint is written
class _ToyModel(BaseModel):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 1)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        out = self.lin(torch.stack(inputs))
        return dict(loss=out.pow(2).mean()) if mode == 'loss' else out


class _Killed(BaseException):
    """The process dies: nothing after this point runs (no except / cleanup code catches a BaseException here)."""


class _DyingFile:
    """A file whose first write puts half of the bytes on disk and then 'kills the process'."""

    def __init__(self, f):
        self.f = f

    def write(self, data):
        self.f.write(data[:len(data) // 2])
        self.f.flush()
        raise _Killed()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()  # the OS closes a dead process's files

    def __getattr__(self, name):
        return getattr(self.f, name)


def _toy_runner(work, length, resume=False, name='toy', by_epoch=False, **kwargs):
    """The tools/train.py path on a toy model (8 samples, batch 2): the config made preemptible, then a Runner
    of ``length`` iterations (epochs with ``by_epoch``), a checkpoint every 2 iterations (every epoch)."""
    from flexitransfer.engine import make_preemptible
    cfg = Config(dict(work_dir=work, resume=resume, load_from=None, default_hooks=dict(
        checkpoint=dict(type='CheckpointHook', by_epoch=by_epoch, interval=1 if by_epoch else 2, max_keep_ckpts=1))))
    make_preemptible(cfg)
    g = torch.Generator().manual_seed(0)
    data = [dict(inputs=torch.randn(2, generator=g)) for _ in range(8)]
    sampler = 'DefaultSampler' if by_epoch else 'InfiniteSampler'
    return Runner(model=_ToyModel(), work_dir=work, experiment_name=name, default_scope='mmengine',
                  train_dataloader=dict(dataset=data, sampler=dict(type=sampler, shuffle=False), batch_size=2,
                                        num_workers=0),
                  train_cfg=dict(by_epoch=by_epoch, **{'max_epochs' if by_epoch else 'max_iters': length}),
                  optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)), default_hooks=cfg.default_hooks,
                  resume=cfg.resume, load_from=cfg.load_from, **kwargs)


def test_kill_during_checkpoint_write_leaves_no_partial_file(tmp_path, monkeypatch):
    """Killed halfway through writing iter_4.pth: no iter_4.pth at all, last_checkpoint still names iter_2.pth,
    which is still there although max_keep_ckpts=1 (removed only after its successor is written); the next
    --resume continues from it and clears the stray .tmp."""
    from flexitransfer.engine import find_resumable_checkpoint
    work = str(tmp_path)
    real_open = builtins.open

    def dying_open(file, mode='r', *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        return _DyingFile(f) if 'w' in mode and 'iter_4.pth' in str(file) else f

    runner = _toy_runner(work, 6)
    monkeypatch.setattr(builtins, 'open', dying_open)
    with pytest.raises(_Killed):
        runner.train()
    monkeypatch.undo()
    names = sorted(os.listdir(work))
    assert 'iter_4.pth' not in names, f'a partial checkpoint was left behind: {names}'
    assert 'iter_4.pth.tmp' in names  # the write did start and was cut short
    assert _latest(work) == osp.join(work, 'iter_2.pth')
    assert torch.load(osp.join(work, 'iter_2.pth'))['meta']['iter'] == 2
    assert find_resumable_checkpoint(work) == (osp.join(work, 'iter_2.pth'), [])

    runner = _toy_runner(work, 4, resume=True, name='toy_resumed')
    runner.train()
    assert runner.iter == 4
    assert sorted(f for f in os.listdir(work) if f.startswith('iter_')) == ['iter_4.pth']  # no .tmp, kept 1
    assert torch.load(osp.join(work, 'iter_4.pth'))['meta']['iter'] == 4


class _SigtermAt(Hook):
    """Sends this process SIGTERM after training iteration ``at`` (0-based), before the checkpoint hook runs."""

    def __init__(self, at):
        self.at = at

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.iter == self.at:
            os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_in_an_epoch_based_run_saves_and_leaves_the_epoch(tmp_path):
    """Epoch-based loops check for a stop only between epochs: SIGTERM in the middle of epoch 2 still saves
    iter_6.pth after the current iteration and stops there; --resume continues from it (the newest by its meta)."""
    from flexitransfer.engine import find_resumable_checkpoint, preemptible
    work = str(tmp_path)
    runner = _toy_runner(work, 3, by_epoch=True, custom_hooks=[_SigtermAt(5)])
    handler = signal.getsignal(signal.SIGTERM)
    with preemptible() as run:
        runner.train()
        pytest.fail('the run went on after SIGTERM')
    assert run.requested and run.iteration == 6 and run.checkpoint == osp.join(work, 'iter_6.pth')
    assert signal.getsignal(signal.SIGTERM) == handler  # the handler of before the block is back
    meta = torch.load(run.checkpoint)['meta']
    assert (meta['epoch'], meta['iter']) == (1, 6)  # one whole epoch done, the second restarts on resume
    assert sorted(f for f in os.listdir(work) if f.endswith('.pth')) == ['epoch_1.pth', 'iter_6.pth']
    assert find_resumable_checkpoint(work) == (run.checkpoint, [])


# ----------------------------------------------------------------------------- SIGTERM, and a truncated latest file
def _opts(root):
    return ['--cfg-options', f'train_dataloader.dataset.data_root={root}', f'val_dataloader.dataset.data_root={root}',
            f'test_dataloader.dataset.data_root={root}', 'default_hooks.checkpoint.interval=5',
            'train_cfg.val_interval=1000', 'train_dataloader.num_workers=0',
            'train_dataloader.persistent_workers=False', 'default_hooks.checkpoint.max_keep_ckpts=20',
            'default_hooks.logger.interval=1']


def _train(work, opts, max_iters, *flags):
    res = subprocess.run(SEG + ['--work-dir', work, *flags] + opts + [f'train_cfg.max_iters={max_iters}'], cwd=ROOT,
                         capture_output=True, text=True)
    return res.returncode, res.stdout + res.stderr


@pytest.fixture(scope='module')
def sigterm_run(tmp_path_factory, seg_toy_data):
    """A run sent SIGTERM (to its whole process group, as Slurm does) once it has saved a checkpoint, and an
    uninterrupted reference run to two iterations past where the first one stopped."""
    base = tmp_path_factory.mktemp('preempt')
    work, ref, log = str(base / 'work'), str(base / 'ref'), str(base / 'sigterm.log')
    opts = _opts(seg_toy_data)
    with open(log, 'w') as out:
        proc = subprocess.Popen(SEG + ['--work-dir', work] + opts + ['train_cfg.max_iters=400'], cwd=ROOT,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for(lambda: _iter_of(_latest(work)) >= 5, 'a checkpoint of iteration >= 5 was recorded', proc)
            os.killpg(proc.pid, signal.SIGTERM)
            wait_for(lambda: proc.poll() is not None, 'the run ended after SIGTERM', limit_s=600)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    stopped = _iter_of(_latest(work))
    end = stopped + 2
    rc, ref_log = _train(ref, opts, end)
    assert rc == 0, ref_log[-3000:]
    return dict(work=work, ref=ref, opts=opts, rc=proc.returncode, log=open(log).read(), stopped=stopped, end=end)


def _final_state(work, end):
    return torch.load(osp.join(work, f'iter_{end}.pth'))['state_dict']


def _assert_identical(sd, ref_sd, what):
    assert sd.keys() == ref_sd.keys()
    diff = max((sd[k].double() - ref_sd[k].double()).abs().max().item() for k in sd)
    assert diff == 0.0, f'{what} vs uninterrupted: max abs diff {diff}'


def test_sigterm_saves_stops_and_resume_is_bit_identical(sigterm_run):
    """SIGTERM mid-run: a checkpoint of the current iteration, one clear line, exit code 143; --resume from it
    ends bit-identical to the uninterrupted run."""
    r = sigterm_run
    assert r['rc'] == 143, (r['rc'], r['log'][-3000:])
    k = r['stopped']
    assert f'SIGTERM: stopped after iteration {k}, checkpoint {osp.join(r["work"], f"iter_{k}.pth")}' in r['log']
    assert 'Traceback' not in r['log']
    assert k >= 5 and osp.isfile(osp.join(r['work'], f'iter_{k}.pth'))
    assert not [f for f in os.listdir(r['work']) if f.endswith('.tmp')]
    rc, log = _train(r['work'], r['opts'], r['end'], '--resume')
    assert rc == 0, log[-3000:]
    assert f'resumed epoch: 0, iter: {k}' in log
    _assert_identical(_final_state(r['work'], r['end']), _final_state(r['ref'], r['end']),
                      f'SIGTERM at {k} + resumed to {r["end"]}')


def test_resume_skips_a_truncated_latest_checkpoint(sigterm_run, tmp_path):
    """The newest checkpoint cut in half (the job died while writing it, after last_checkpoint named it):
    --resume names it, says why it skips it, continues from the newest one that reads and ends bit-identical."""
    r, work = sigterm_run, str(tmp_path / 'work')
    end = r['end']
    shutil.copytree(r['ref'], work)
    latest = osp.join(work, f'iter_{end}.pth')
    with open(osp.join(work, 'last_checkpoint'), 'w') as f:  # the copy's own latest checkpoint
        f.write(latest)
    os.truncate(latest, os.path.getsize(latest) // 2)
    previous = (end - 1) // 5 * 5  # the interval checkpoint before it
    rc, log = _train(work, r['opts'], end, '--resume')
    assert rc == 0, log[-3000:]
    skip = [line for line in log.splitlines() if 'skipped' in line]
    assert len(skip) == 1 and latest in skip[0] and 'does not read' in skip[0], skip
    assert f'resumed epoch: 0, iter: {previous}' in log
    _assert_identical(_final_state(work, end), _final_state(r['ref'], end), f'truncated {end}, resumed from {previous}')
