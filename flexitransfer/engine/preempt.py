"""Preemption-safe training: atomic checkpoints, a resume that skips broken ones, a SIGTERM that saves.

A job killed while it writes ``iter_N.pth`` (preemption, a node failure) left mmengine 0.10.7 a
truncated file that ``last_checkpoint`` already named, and ``--resume`` died in ``torch.load``.

* :class:`AtomicLocalBackend` (file backend ``'atomic_local'``) writes ``iter_N.pth.tmp`` beside the
  target, flushes, fsyncs and renames it: a checkpoint file is whole or absent.
* :class:`PreemptibleCheckpointHook` (mmengine's ``CheckpointHook`` with that backend) writes
  ``last_checkpoint`` the same way and only after the checkpoint, removes the oldest kept checkpoint
  only after the new one is written, and saves at the current iteration when SIGTERM arrived.
* :func:`make_preemptible` gives a config that hook and resolves ``--resume`` (auto) to the newest
  checkpoint that reads, naming each file it skips and why.
* :func:`preemptible` turns SIGTERM (what Slurm and spot instances send before they kill) into a
  request: after the current iteration the hook saves a checkpoint and the run stops.
"""
from __future__ import annotations

import glob
import os
import os.path as osp
import re
import signal
import threading
from contextlib import contextmanager
from typing import Iterator, List, Optional, Tuple, Union

import torch
from mmengine.dist import all_reduce, barrier, get_world_size, is_main_process
from mmengine.fileio import LocalBackend, register_backend
from mmengine.hooks import CheckpointHook
from mmengine.registry import HOOKS

from .checkpoint import allow_mmengine_checkpoints

__all__ = ['AtomicLocalBackend', 'PreemptibleCheckpointHook', 'Preempted', 'Preemption', 'atomic_write',
           'find_resumable_checkpoint', 'make_preemptible', 'preemptible']

_CKPT_NAME = re.compile(r'^(iter|epoch)_(\d+)\.pth$')


def _fsync_dir(path: str) -> None:
    try:  # the rename itself durable; not every file system lets a directory be opened
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str, data: Union[bytes, str]) -> None:
    """Write ``data`` to ``path`` so that ``path`` is either the old file or the whole new one.

    The bytes go to ``path + '.tmp'`` in the same directory, are flushed and fsynced, then renamed
    onto ``path`` (``os.replace``, atomic on POSIX). A kill before the rename leaves ``path``
    untouched and a stray ``.tmp`` (removed by the next run's :class:`PreemptibleCheckpointHook`).

    Args:
        path: the target file.
        data: its content (``str`` is written as UTF-8).
    """
    path = str(path)
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = path + '.tmp'
    with open(tmp, 'wb') as f:
        f.write(data.encode('utf-8') if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(folder)


@register_backend('atomic_local', force=True)
class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend whose writes are atomic (:func:`atomic_write`)."""

    def put(self, obj: bytes, filepath) -> None:
        atomic_write(filepath, obj)

    def put_text(self, obj: str, filepath, encoding: str = 'utf-8') -> None:
        atomic_write(filepath, obj.encode(encoding))


class Preempted(Exception):
    """Raised by :class:`PreemptibleCheckpointHook` to leave an epoch-based loop mid-epoch after the
    SIGTERM checkpoint (mmengine's epoch loop checks ``stop_training`` only between epochs);
    :func:`preemptible` catches it."""


class Preemption:
    """What :func:`preemptible` yields: ``requested`` (SIGTERM arrived), then ``checkpoint`` (the file
    saved because of it) and ``iteration`` (the iterations done) once the run stopped for it."""

    def __init__(self) -> None:
        self.requested = False
        self.checkpoint: Optional[str] = None
        self.iteration: Optional[int] = None


_ACTIVE: Optional[Preemption] = None  # the Preemption of the preemptible() block being run


@contextmanager
def preemptible() -> Iterator[Preemption]:
    """SIGTERM asks the run to save and stop instead of killing it, for the duration of the block.

    Enter it before the dataloaders start their workers (forked workers inherit the handler: a
    SIGTERM sent to the whole process group does not kill them under the main process). The
    :class:`PreemptibleCheckpointHook` of the run checks the request after every training iteration
    (all ranks agree on it: one all-reduce per iteration in distributed runs), saves a checkpoint at
    that iteration and stops the run; the block then ends normally and the yielded
    :class:`Preemption` says where the checkpoint is. Outside the main thread (no signals there)
    the block runs unchanged.

    Yields:
        Preemption: ``checkpoint`` is set when the run stopped because of SIGTERM.
    """
    global _ACTIVE
    state = Preemption()
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def _request(signum, frame):
        state.requested = True

    previous = signal.signal(signal.SIGTERM, _request)
    _ACTIVE = state
    try:
        yield state
    except Preempted:
        pass
    finally:
        _ACTIVE = None
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _stop_requested() -> bool:
    """True on every rank when SIGTERM reached any rank (one all-reduce across ranks)."""
    if _ACTIVE is None:
        return False
    flag = torch.tensor([int(_ACTIVE.requested)])
    if get_world_size() > 1:
        all_reduce(flag, op='max')
    return bool(flag.item())


@HOOKS.register_module()
class PreemptibleCheckpointHook(CheckpointHook):
    """mmengine's ``CheckpointHook`` made safe against kills and preemption (same arguments).

    * checkpoints are written atomically (file backend ``'atomic_local'``, unless ``backend_args``,
      ``file_client_args`` or a remote ``out_dir`` choose another backend);
    * ``last_checkpoint`` is written atomically, after the checkpoint;
    * the oldest kept checkpoint (``max_keep_ckpts``) is removed after the new one is written, not
      before (mmengine's order left no checkpoint at all when a ``max_keep_ckpts=1`` save was killed);
    * inside :func:`preemptible`, a SIGTERM makes it save a checkpoint after the current iteration
      (``iter_N.pth``, also for epoch-based runs, whose interrupted epoch then restarts on resume:
      mmengine's epoch loop does not skip the batches already seen) and stop the run without the
      validation that iteration may have scheduled;
    * stray ``*.pth.tmp`` files of a killed write are removed when training starts.
    """

    def __init__(self, *args, backend_args: Optional[dict] = None, file_client_args: Optional[dict] = None,
                 out_dir=None, **kwargs) -> None:
        local = out_dir is None or '://' not in str(out_dir)
        if backend_args is None and file_client_args is None and local:
            backend_args = dict(backend='atomic_local')
        super().__init__(*args, backend_args=backend_args, file_client_args=file_client_args, out_dir=out_dir,
                         **kwargs)
        self._saved_done: Optional[int] = None  # iterations done at the last save

    def before_train(self, runner) -> None:
        super().before_train(runner)
        if is_main_process() and isinstance(self.file_backend, LocalBackend):
            for tmp in glob.glob(osp.join(glob.escape(str(self.out_dir)), '*.pth.tmp')):
                runner.logger.warning(f'removing {tmp}: a checkpoint write that was killed before it finished')
                os.remove(tmp)

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        drop = None
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                drop = self.keep_ckpt_ids.popleft()
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))
        self._save_as(runner, self.filename_tmpl.format(step), meta)
        if drop is not None and is_main_process():
            old = self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(drop))
            if self.file_backend.isfile(old):
                self.file_backend.remove(old)
            elif self.file_backend.isdir(old):  # checkpoints saved by deepspeed are directories
                self.file_backend.rmtree(old)

    def _save_as(self, runner, filename: str, meta: dict) -> None:
        """Write ``filename`` (atomically), then point ``last_checkpoint`` at it (atomically)."""
        self.last_ckpt = self.file_backend.join_path(self.out_dir, filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        runner.save_checkpoint(self.out_dir, filename, self.file_client_args, save_optimizer=self.save_optimizer,
                               save_param_scheduler=self.save_param_scheduler, meta=meta, by_epoch=self.by_epoch,
                               backend_args=self.backend_args, **self.args)
        self._saved_done = meta.get('iter')
        if is_main_process():
            atomic_write(osp.join(runner.work_dir, 'last_checkpoint'), str(self.last_ckpt))

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        super().after_train_iter(runner, batch_idx, data_batch, outputs)
        if not _stop_requested():
            return
        done = runner.iter + 1
        if self._saved_done != done:  # not saved by the interval rule after this very iteration
            if self.by_epoch:
                self._save_as(runner, f'iter_{done}.pth', dict(epoch=runner.epoch, iter=done))
            else:
                self._save_checkpoint(runner)
        if get_world_size() > 1:
            barrier()  # no rank exits (and has its launcher kill the others) before rank 0 has written it
        _ACTIVE.checkpoint, _ACTIVE.iteration = str(self.last_ckpt), done
        runner.logger.warning(f'SIGTERM: stopped after iteration {done}, checkpoint {self.last_ckpt}; the same '
                              f'command with --resume continues from it')
        if self.by_epoch:
            raise Preempted(self.last_ckpt)
        loop = runner.train_loop
        loop.stop_training = True
        if hasattr(loop, 'val_begin'):  # no validation on the way out: the grace period is short
            loop.val_begin = float('inf')


def _checkpoint_files(folder: str) -> List[str]:
    return [f for f in glob.glob(osp.join(glob.escape(folder), '*.pth')) if _CKPT_NAME.match(osp.basename(f))]


def _resume_point(path: str) -> Tuple[int, int]:
    """(iteration, epoch) a training checkpoint resumes at; raises if it does not read."""
    allow_mmengine_checkpoints()
    ckpt = torch.load(path, map_location='cpu', weights_only=True, mmap=True)  # tensors are mapped, not read
    meta = ckpt.get('meta') if isinstance(ckpt, dict) else None
    if not isinstance(meta, dict) or 'state_dict' not in ckpt:
        raise ValueError('no meta / state_dict: not a checkpoint written by training')
    return int(meta.get('iter', 0)), int(meta.get('epoch', 0))


def find_resumable_checkpoint(work_dir: str) -> Tuple[Optional[str], List[str]]:
    """The checkpoint ``--resume`` should continue from, and the files it had to skip.

    Candidates: the file ``work_dir/last_checkpoint`` names and every ``iter_*.pth`` / ``epoch_*.pth``
    in ``work_dir`` and in that file's folder. Each is opened (memory-mapped: no tensor data is
    read); the one whose ``meta`` is the furthest in training wins. Files that do not read
    (truncated by a kill, not a checkpoint) are skipped.

    Args:
        work_dir: the run's work dir.

    Returns:
        tuple: the path (None when there is no candidate at all: a fresh start) and one line per
        skipped file naming it and why.

    Raises:
        ValueError: when there are candidates but none of them reads.
    """
    named = None
    pointer = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(pointer):
        named = open(pointer).read().strip() or None
    folders = {osp.abspath(work_dir)} | ({osp.dirname(osp.abspath(named))} if named else set())
    found = {osp.abspath(f): f for d in sorted(folders) for f in _checkpoint_files(d)}
    skipped, good = [], []
    if named and osp.abspath(named) not in found:
        if osp.isfile(named):
            found[osp.abspath(named)] = named
        else:
            skipped.append(f'--resume: skipped {named} (named in {pointer}): the file does not exist')
    for path in sorted(found.values()):
        try:
            good.append((_resume_point(path), path))
        except Exception as e:  # a truncated zip, a foreign pickle: any reason to skip it
            reason = (str(e).strip().splitlines() or [''])[0][:160]
            skipped.append(f'--resume: skipped {path}: it does not read ({type(e).__name__}: {reason}); '
                           f'most likely cut short by a kill or a full disk')
    if good:
        return max(good)[1], skipped
    if found:
        raise ValueError(f'--resume: no checkpoint in {work_dir!r} reads ({"; ".join(skipped)}); start without '
                         f'--resume, or give an intact checkpoint: --resume PATH')
    return None, skipped


def make_preemptible(cfg) -> List[str]:
    """Make a training config preemption-safe, in place: what ``tools/train.py`` does to every config.

    ``default_hooks.checkpoint`` of type ``CheckpointHook`` becomes :class:`PreemptibleCheckpointHook`
    (same arguments; a config's own subclass is kept). With ``resume=True`` and no ``load_from``
    (``--resume`` without a path), ``load_from`` becomes the newest checkpoint of ``cfg.work_dir`` that
    reads (:func:`find_resumable_checkpoint`), so a truncated latest file no longer ends the run.

    Args:
        cfg: an mmengine ``Config`` whose ``work_dir`` is set.

    Returns:
        list[str]: lines for the user: each skipped checkpoint and why, then the one resumed from.

    Raises:
        ValueError: ``--resume`` finds checkpoints but none that reads.
    """
    ckpt = (cfg.get('default_hooks') or {}).get('checkpoint')
    if isinstance(ckpt, dict) and ckpt.get('type') in ('CheckpointHook', 'mmengine.CheckpointHook', CheckpointHook):
        ckpt['type'] = 'PreemptibleCheckpointHook'
    if not cfg.get('resume') or cfg.get('load_from') or not cfg.get('work_dir'):
        return []
    path, notes = find_resumable_checkpoint(cfg.work_dir)
    if path is None:
        return notes
    cfg.load_from = path
    return notes + [f'--resume: continuing from {path}']
