"""Distributed start-up that works on CPU-only machines too.

mmengine 0.10.7's ``init_dist`` calls ``torch.cuda.set_device`` unconditionally, and its
Runner wraps the model in DDP with ``device_ids=[LOCAL_RANK]``: both fail without CUDA. The
Runner skips ``init_dist`` when a process group already exists, so the tools call
``init_distributed(cfg, launcher)`` first: it picks the backend from the device (nccl on
CUDA, gloo on CPU) unless the config sets ``env_cfg.dist_cfg.backend``, starts the process
group from torchrun's (``pytorch``) or Slurm's (``slurm``) environment, and on CPU asks
mmengine for a DDP wrapper without device ids.
"""
from __future__ import annotations

import datetime
import os
import subprocess

import torch
import torch.distributed as dist

LAUNCHERS = ('none', 'pytorch', 'slurm')


def _env_from_slurm(port=None) -> None:
    """RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT from Slurm's variables (as mmengine does)."""
    missing = [k for k in ('SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_NODELIST') if k not in os.environ]
    if missing:
        raise RuntimeError(f'--launcher slurm: {", ".join(missing)} not set; start the job with srun '
                           f'(or use --launcher pytorch with torchrun)')
    proc, ntasks = int(os.environ['SLURM_PROCID']), int(os.environ['SLURM_NTASKS'])
    local = os.environ.get('SLURM_LOCALID')
    if local is None:
        local = proc % max(1, torch.cuda.device_count())
    os.environ.setdefault('MASTER_ADDR', subprocess.getoutput(
        f'scontrol show hostname {os.environ["SLURM_NODELIST"]} | head -n1'))
    if port is not None:
        os.environ['MASTER_PORT'] = str(port)
    os.environ.setdefault('MASTER_PORT', '29500')
    os.environ.update(WORLD_SIZE=str(ntasks), RANK=str(proc), LOCAL_RANK=str(local))


def choose_backend(requested=None) -> str:
    """The process-group backend: ``requested`` if given (checked), else nccl on CUDA, gloo on CPU."""
    cuda = torch.cuda.is_available()
    if requested is None:
        return 'nccl' if cuda else 'gloo'
    if requested == 'nccl' and not cuda:
        raise RuntimeError("env_cfg.dist_cfg.backend='nccl' but this machine has no CUDA device: remove the key "
                           "(the backend is then chosen from the device: gloo on CPU) or pass "
                           "--cfg-options env_cfg.dist_cfg.backend=gloo")
    return requested


def init_distributed(cfg, launcher: str) -> None:
    """Start the process group for ``launcher`` before mmengine's Runner is built (no-op for 'none')."""
    if launcher not in LAUNCHERS:
        raise ValueError(f'--launcher must be one of {LAUNCHERS}, got {launcher!r}')
    if launcher == 'none' or (dist.is_available() and dist.is_initialized()):
        return
    env_cfg = cfg.setdefault('env_cfg', {})
    dist_cfg = dict(env_cfg.get('dist_cfg') or {})
    if launcher == 'slurm':
        _env_from_slurm(dist_cfg.pop('port', None))
    missing = [k for k in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT') if k not in os.environ]
    if missing:
        raise RuntimeError(f'--launcher {launcher}: {", ".join(missing)} not set; start the tool with '
                           f'`torchrun --nproc_per_node N tools/train.py CONFIG --launcher pytorch`')
    backend = choose_backend(dist_cfg.pop('backend', None))
    timeout = dist_cfg.pop('timeout', None)
    dist_cfg.pop('port', None)
    local_rank = int(os.environ.get('LOCAL_RANK', 0))
    if backend == 'nccl':
        torch.cuda.set_device(local_rank)
    kwargs = dict(timeout=datetime.timedelta(seconds=timeout)) if timeout else {}
    dist.init_process_group(backend=backend, rank=int(os.environ['RANK']),
                            world_size=int(os.environ['WORLD_SIZE']), **kwargs, **dist_cfg)
    env_cfg['dist_cfg'] = dict(env_cfg.get('dist_cfg') or {}, backend=backend)
    if not torch.cuda.is_available():  # DDP on CPU modules takes no device ids
        wrapper = cfg.get('model_wrapper_cfg') or dict(
            type='MMDistributedDataParallel', broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))
        wrapper.setdefault('device_ids', None)
        cfg.model_wrapper_cfg = wrapper
