"""Memory preflight: the heaviest training step once, before the first iteration.

Random-patch training draws its patch size per iteration; the smallest patch has the most tokens
and needs the most memory. Drawn late, it ran out of memory hours into a run. ``memory_preflight``
runs one forward + backward at that patch (asked of the run's patch hook) with a batch of the
training set at the configured batch size, adds the optimizer state the first step allocates, and
raises :class:`PreflightMemoryError` naming the patch, the memory needed, what the device has and
the fixes. Nothing of the run changes: weights, buffers, gradients, patch size, train mode and the
random generators are as before (a run with the preflight trains bit-identically to one without).
"""
from __future__ import annotations

import os
import random
from contextlib import contextmanager, nullcontext
from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn as nn

from ..ops import to_2tuple
from .patch_size import get_patch_size, set_patch_size, walk_backbone_cfgs

__all__ = ['PreflightMemoryError', 'device_memory', 'memory_preflight']

GiB = 1024 ** 3


class PreflightMemoryError(ValueError):
    """The heaviest training step does not fit the device (a ``ValueError``: the tools print its message)."""


def device_memory(device) -> Tuple[int, Optional[int]]:
    """The memory the last step needed and what the device offers this process.

    Args:
        device: a ``torch.device`` (or its name).

    Returns:
        tuple: (peak bytes, available bytes or None). CUDA: ``max_memory_allocated`` since the preflight
        reset it, and the free memory plus what this process already holds (``mem_get_info`` +
        ``memory_reserved``). CPU: the process's peak resident set (Linux ``ru_maxrss``) and the
        machine's physical memory.
    """
    device = torch.device(device)
    if device.type == 'cuda':
        free, _ = torch.cuda.mem_get_info(device)
        return torch.cuda.max_memory_allocated(device), free + torch.cuda.memory_reserved(device)
    import resource
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    try:
        total = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
    except (AttributeError, OSError, ValueError):
        total = None
    return peak, total


def _gib(n: Optional[int]) -> str:
    return 'unknown memory' if n is None else f'{n / GiB:.2f} GiB'


def _tag(p) -> str:
    h, w = to_2tuple(p)
    return str(h) if h == w else f'{h}x{w}'


def _heaviest_patch(runner):
    """(patch, hook) of the first hook that knows its most expensive draw; (None, None) without one."""
    for hook in runner.hooks:
        if callable(getattr(hook, 'most_expensive_patch', None)):
            return hook.most_expensive_patch(), hook
    return None, None


def _first_batch(loader):
    """The first ``batch_size`` samples of the training set, collated as the dataloader does (the
    sampler and its workers are not touched)."""
    dataset, n = loader.dataset, loader.batch_size or 1
    if len(dataset) == 0:
        raise ValueError('memory preflight: the training set is empty')
    return loader.collate_fn([dataset[i % len(dataset)] for i in range(n)]), n


def _amp_context(optim_wrapper, device: torch.device):
    """The autocast the run's optim wrapper trains under (its config or the built wrapper)."""
    if isinstance(optim_wrapper, dict):
        kind, dtype = optim_wrapper.get('type', 'OptimWrapper'), optim_wrapper.get('dtype')
    else:
        kind, dtype = type(optim_wrapper), getattr(optim_wrapper, 'cast_dtype', None)
    if 'Amp' not in str(getattr(kind, '__name__', kind)):
        return nullcontext()
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    return torch.autocast(device.type, dtype=dtype or (torch.float16 if device.type == 'cuda' else torch.bfloat16))


def _optimizer_state_bytes(optim_wrapper, module: nn.Module) -> int:
    """What the optimizer allocates at its first step: SGD one buffer per parameter with momentum (none
    without), any other optimizer two (Adam's moments; the conservative guess for the rest)."""
    if isinstance(optim_wrapper, dict):
        ocfg = optim_wrapper.get('optimizer') or {}
        kind, momentum = ocfg.get('type', ''), ocfg.get('momentum', 0)
    else:
        opt = getattr(optim_wrapper, 'optimizer', None)
        kind, momentum = type(opt), getattr(opt, 'defaults', {}).get('momentum', 0)
    kind = getattr(kind, '__name__', str(kind))
    slots = (1 if momentum else 0) if kind == 'SGD' else 2
    return slots * sum(p.numel() * p.element_size() for p in module.parameters() if p.requires_grad)


@contextmanager
def _run_left_untouched(module: nn.Module):
    """Weights' buffers, gradients, patch size, train mode and random generators restored on exit."""
    buffers = {k: b.detach().to('cpu', copy=True) for k, b in module.named_buffers()}
    patch, was_training = get_patch_size(module), module.training
    rng = (random.getstate(), np.random.get_state(), torch.get_rng_state(),
           torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None)
    try:
        yield
    finally:
        for p in module.parameters():
            p.grad = None
        with torch.no_grad():
            for k, b in module.named_buffers():
                b.copy_(buffers[k])
        if patch is not None:
            set_patch_size(module, patch)
        module.train(was_training)
        random.setstate(rng[0])
        np.random.set_state(rng[1])
        torch.set_rng_state(rng[2])
        if rng[3] is not None:
            torch.cuda.set_rng_state_all(rng[3])


def _fixes(runner, patch, hook, batch: int) -> str:
    cfg = runner.cfg
    backbone = next(iter(walk_backbone_cfgs(cfg.get('model') or {})), None)
    if backbone is not None and not backbone[1].get('with_cp'):
        fixes = [f'activation checkpointing (--cfg-options model.{".".join(map(str, backbone[0]))}.with_cp=True)']
    else:
        fixes = ['activation checkpointing (with_cp=True on the backbone)'] if backbone is None else []
    if batch > 1:
        fixes.append(f'a smaller batch (train_dataloader.batch_size={batch // 2})')
    sizes = list(getattr(hook, 'patch_sizes', None) or [])
    if patch is not None and len(sizes) > 1:
        idx = next((i for i, h in enumerate(cfg.get('custom_hooks') or [])
                    if isinstance(h, dict) and h.get('type') == type(hook).__name__), None)
        rest = str([p for p in sizes if p != patch]).replace(' ', '')
        key = f'custom_hooks.{idx}.patch_sizes' if idx is not None else f'{type(hook).__name__}.patch_sizes'
        probs = ' and its probs entry' if getattr(hook, 'probs', None) is not None else ''
        fixes.append(f'dropping patch {_tag(patch)} from the draw ({key}={rest}{probs})')
    return '; '.join(fixes)


def memory_preflight(runner, enabled: Optional[bool] = None) -> Optional[str]:
    """One training step at the heaviest draw, before the first iteration; fail if it does not fit.

    The patch is the one the run's patch hook reports as its most expensive draw
    (``RandomPatchSizeHook.most_expensive_patch``: the smallest patch), or the model's own without
    such a hook; the batch is the first ``train_dataloader.batch_size`` samples of the training set
    (for the fixed-crop pipelines of the configs, the training input size). Needed memory = the
    forward + backward peak (:func:`device_memory`) + the optimizer state of the first step.

    Args:
        runner: a built mmengine ``Runner`` (model on its device, training dataloader configured).
        enabled: True / False force it on / off; None (default): on when the model is on CUDA.

    Returns:
        str | None: one line (patch, batch, memory needed and available), or None when skipped.

    Raises:
        PreflightMemoryError: the step ran out of memory, or needs more than the device has; the
            message names the patch, both amounts and the fixes.
    """
    module = getattr(runner.model, 'module', runner.model)
    device = next(module.parameters()).device
    if not (device.type == 'cuda' if enabled is None else enabled):
        return None
    patch, hook = _heaviest_patch(runner)
    loader = runner.train_dataloader  # builds the training loop if nothing has yet (as training would)
    peak, shape, ran_out = None, '', False
    with _run_left_untouched(module):  # the pipeline's random transforms draw too
        batch, n = _first_batch(loader)
        if patch is not None:
            set_patch_size(module, patch)
        patch = get_patch_size(module) if patch is None else patch
        module.train()
        if device.type == 'cuda':
            torch.cuda.reset_peak_memory_stats(device)
        try:
            with _amp_context(runner.optim_wrapper, device):
                data = module.data_preprocessor(batch, True)
                losses = module._run_forward(data, mode='loss')
            loss, _ = module.parse_losses(losses)
            loss.backward()
            inputs = data.get('inputs') if isinstance(data, dict) else None
            shape = f' at {inputs.shape[-2]}x{inputs.shape[-1]}' if isinstance(inputs, torch.Tensor) else ''
        except torch.cuda.OutOfMemoryError:
            ran_out = True
        del batch
        data = losses = loss = inputs = None
        peak, available = device_memory(device)
    if device.type == 'cuda':
        torch.cuda.empty_cache()
    state = _optimizer_state_bytes(runner.optim_wrapper, module)
    needed = peak + state
    what = (f'patch {_tag(patch)} (the smallest {type(hook).__name__} draws)' if hook is not None else
            f'patch {_tag(patch)} (the model\'s)' if patch is not None else 'the model')
    step = f'{what}, batch {n}{shape}'
    if ran_out or (available is not None and needed > available):
        need = f'more than {_gib(peak)} (it ran out of memory)' if ran_out else \
            f'{_gib(needed)} (forward + backward {_gib(peak)}, optimizer state {_gib(state)})'
        raise PreflightMemoryError(f'memory preflight: one training step at {step} needs {need} but {device} has '
                                   f'{_gib(available)}; fixes: {_fixes(runner, patch, hook, n)}; '
                                   f'--no-preflight skips this check')
    return (f'memory preflight: {step}: {_gib(needed)} of the {_gib(available)} {device} has (forward + backward '
            f'{_gib(peak)}, optimizer state {_gib(state)})')
