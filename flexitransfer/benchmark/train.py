"""Training throughput and peak memory per patch size, for any config (``tools/benchmark_train.py``).

One measurement = one (patch, with_cp) pair: the config's model (FlexiViT ``pretrained=None``:
random weights, nothing loaded), its optimizer wrapper (mixed precision with ``amp``: see
``flexitransfer.engine.amp``), a synthetic batch at the config's training input size
(``flexitransfer.datasets.synthetic``), ``warmup`` untimed and ``iters`` timed ``model.train_step``
calls (forward, loss, backward, optimizer step: what the Runner's training loop does).

Before the baseline is taken the optimizer state is created (a step on zero gradients, as after
any first step), so even one measured iteration is a steady-state one. Memory:

* CUDA: ``torch.cuda.max_memory_allocated`` (``peak_mib``, everything: weights, optimizer state,
  activations, gradients) and that minus the memory allocated after building (``peak_over_base_mib``);
* CPU: the process's peak RSS (``ru_maxrss``) and that minus the RSS after building the model,
  optimizer state and inputs (``peak_over_base_mib``: activations, gradients, temporaries, allocator
  slack). Each measurement runs in a fresh Python process so one cannot inherit another's peak.
"""
from __future__ import annotations

import copy
import json
import os
import os.path as osp
import resource
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from ..reporting import markdown_table, write_csv

__all__ = ['train_input_size', 'measure_train_step', 'benchmark_train']

FIELDS = ('config', 'device', 'amp', 'patch', 'tokens', 'with_cp', 'batch', 'img_size', 'iters', 'sec_per_iter',
          'images_per_s', 'tokens_per_s', 'peak_mib', 'peak_over_base_mib', 'memory', 'loss')
TABLE_COLS = ('patch', 'tokens', 'with_cp', 'batch', 'sec_per_iter', 'images_per_s', 'tokens_per_s', 'peak_mib',
              'peak_over_base_mib', 'loss')
_MARK = '__BENCHMARK_TRAIN_RESULT__'


def train_input_size(cfg) -> Tuple[int, int]:
    """(H, W) the config trains on: a fixed batch pad, the preprocessor's size, ``crop_size``,
    ``img_size`` or the train pipeline's crop, in that order."""
    pre = cfg.model.get('data_preprocessor') or {}
    for aug in pre.get('batch_augments') or []:
        if aug.get('type') == 'BatchFixedSizePad':
            return tuple(aug['size'])
    for size in (pre.get('size'), cfg.get('crop_size'), cfg.get('img_size')):
        if size:
            return (size, size) if isinstance(size, int) else tuple(size)
    for t in cfg.get('train_pipeline') or []:
        if 'crop_size' in t:
            s = t['crop_size']
            return (s, s) if isinstance(s, int) else tuple(s)
    raise ValueError('cannot tell the training input size from the config: pass img_size (--img-size H W)')


def _rss_mib() -> float:
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2 ** 20


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _build(config: str, device: str, amp: bool, with_cp: bool, cfg_options: Optional[dict]):
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import MODELS, init_default_scope

    from ..engine import amp_optim_wrapper, flexi_modules, walk_backbone_cfgs
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    init_default_scope(cfg.get('default_scope') or 'mmengine')
    for _, bb in walk_backbone_cfgs(cfg.model):
        bb['pretrained'] = None  # random weights: the benchmark needs no checkpoint
    model = MODELS.build(cfg.model)
    model.init_weights()
    for m in flexi_modules(model):
        m.with_cp = with_cp
    model.to(device).train()
    ow_cfg = copy.deepcopy(cfg.optim_wrapper)
    if amp:
        amp_optim_wrapper(ow_cfg, device)
    return cfg, model, build_optim_wrapper(model, ow_cfg)


def _prime_optimizer(optim_wrapper, model) -> None:
    """Create the optimizer's state (Adam moments, ...) now: a step on zero gradients."""
    opt = optim_wrapper.optimizer
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.zeros_like(p)
    opt.step()
    opt.zero_grad(set_to_none=True)


def _sync(device: str) -> None:
    if torch.device(device).type == 'cuda':
        torch.cuda.synchronize(device)


def measure_train_step(config: str, patch: int, iters: int = 1, device: str = 'cpu', amp: bool = False,
                       with_cp: bool = False, batch_size: int = 1, warmup: int = 0,
                       img_size: Optional[Sequence[int]] = None, cfg_options: Optional[dict] = None,
                       seed: int = 0) -> Dict:
    """One measurement in this process (see the module docstring); returns one table row."""
    from ..datasets.synthetic import synthetic_batch
    from ..engine import set_patch_size
    torch.manual_seed(seed)
    cuda = torch.device(device).type == 'cuda'
    cfg, model, ow = _build(config, device, amp, with_cp, cfg_options)
    hw = tuple(img_size) if img_size else train_input_size(cfg)
    if hw[0] % patch or hw[1] % patch:
        raise ValueError(f'patch {patch} does not divide the training input size {hw[0]}x{hw[1]}')
    set_patch_size(model, patch)
    batch = synthetic_batch(model, hw, n=batch_size, seed=seed)
    _prime_optimizer(ow, model)
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device) / 2 ** 20
    else:
        base = _rss_mib()
    loss, t0 = float('nan'), None
    for i in range(warmup + iters):
        if i == warmup:
            _sync(device)
            t0 = time.perf_counter()
        log_vars = model.train_step(copy.deepcopy(batch), ow)
        loss = float(torch.as_tensor(log_vars['loss']).detach())
    _sync(device)
    sec = (time.perf_counter() - t0) / max(iters, 1)
    if cuda:
        peak, memory = torch.cuda.max_memory_allocated(device) / 2 ** 20, 'cuda max_memory_allocated'
    else:
        peak, memory = _peak_rss_mib(), 'cpu peak RSS (fresh process)'
    tokens = (hw[0] // patch) * (hw[1] // patch)
    return dict(config=osp.basename(config), device=device, amp=amp, patch=patch, tokens=tokens, with_cp=with_cp,
                batch=batch_size, img_size=f'{hw[0]}x{hw[1]}', iters=iters, sec_per_iter=round(sec, 4),
                images_per_s=round(batch_size / sec, 3), tokens_per_s=round(batch_size * tokens / sec, 1),
                peak_mib=round(peak, 1), peak_over_base_mib=round(peak - base, 1), memory=memory, loss=round(loss, 4))


def _worker(arg: str) -> None:
    """Entry point of the fresh process: measure, print the row after a marker."""
    row = measure_train_step(**json.loads(arg))
    print(_MARK + json.dumps(row), flush=True)


def _measure_fresh(timeout: Optional[float] = None, **kwargs) -> Dict:
    code = 'import sys; from flexitransfer.benchmark.train import _worker; _worker(sys.argv[1])'
    res = subprocess.run([sys.executable, '-c', code, json.dumps(kwargs)], capture_output=True, text=True,
                         timeout=timeout)
    for line in res.stdout.splitlines():
        if line.startswith(_MARK):
            return json.loads(line[len(_MARK):])
    raise RuntimeError(f'benchmark process failed (exit {res.returncode}) for {kwargs}:\n'
                       f'{res.stdout[-2000:]}\n{res.stderr[-4000:]}')


def benchmark_train(config: str, patches: Sequence[int], iters: int = 1, device: Optional[str] = None,
                    amp: bool = False, with_cp: Sequence[bool] = (False,), batch_size: int = 1, warmup: int = 0,
                    img_size: Optional[Sequence[int]] = None, out: Optional[str] = None, fresh_process: bool = True,
                    cfg_options: Optional[dict] = None, timeout: Optional[float] = None) -> List[Dict]:
    """Measure every (patch, with_cp) pair, each in a fresh process (``fresh_process``); print the
    Markdown table, write ``out`` (CSV; default ``work_dirs/benchmark_train/<config>_<device>.csv``)."""
    device = device or ('cuda' if torch.cuda.is_available() else 'cpu')
    config = osp.abspath(config)
    rows = []
    for p in patches:
        for cp in with_cp:
            kw = dict(config=config, patch=int(p), iters=iters, device=device, amp=amp, with_cp=bool(cp),
                      batch_size=batch_size, warmup=warmup, img_size=list(img_size) if img_size else None,
                      cfg_options=cfg_options)
            row = _measure_fresh(timeout=timeout, **kw) if fresh_process else measure_train_step(**kw)
            rows.append(row)
            print(f"p={row['patch']} with_cp={row['with_cp']}: {row['sec_per_iter']} s/iter, "
                  f"peak {row['peak_mib']} MiB (+{row['peak_over_base_mib']} over base)", flush=True)
    out = out or osp.join('work_dirs', 'benchmark_train',
                          f'{osp.splitext(osp.basename(config))[0]}_{device.replace(":", "")}.csv')
    write_csv(out, rows, FIELDS)
    r0 = rows[0]
    print(f"\n{osp.basename(config)}, {r0['img_size']}, batch {batch_size}, {device}"
          f"{', amp' if amp else ''}, {warmup} warm-up + {iters} timed iteration(s); memory: {r0['memory']}"
          f"{' minus the RSS after building model, optimizer state and inputs' if device == 'cpu' else ''}\n")
    print(markdown_table(rows, TABLE_COLS, formats={c: '{}' for c in TABLE_COLS}))
    print(f'\nCSV: {out}')
    return rows
