"""Mixed-precision training on every device: fp16 on CUDA, bf16 where fp16 autocast is unavailable.

mmengine 0.10.7's ``AmpOptimWrapper`` asserts a GPU / NPU / MLU / MUSA in its constructor (it
cannot be built on a CPU-only machine), and its ``autocast`` accepts only bf16 on a CPU.
``tools/train.py --amp`` therefore uses, via ``amp_optim_wrapper``:

* on CUDA (and the other accelerators mmengine knows): mmengine's ``AmpOptimWrapper`` unchanged,
  ``dtype='float16'`` with a dynamic loss scale (a config may set ``dtype='bfloat16'``);
* on a CPU: ``CPUAmpOptimWrapper`` below: mmengine's ``AmpOptimWrapper`` with bf16 CPU autocast
  and no loss scaling (bf16 has fp32's exponent range, so gradients do not underflow; the scaler is
  torch's CPU ``GradScaler``, disabled). bf16 is emulated, i.e. slower than fp32, on CPUs without
  bf16 units (avx512_bf16 / AMX): on such a CPU it serves to check the mixed-precision path.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Optional, Union

import torch
import torch.nn as nn
from mmengine.device import is_cuda_available, is_mlu_available, is_musa_available, is_npu_available
from mmengine.logging import print_log
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS

__all__ = ['CPUAmpOptimWrapper', 'accelerator_available', 'amp_optim_wrapper']


def accelerator_available() -> bool:
    """True where mmengine's own ``AmpOptimWrapper`` can be built."""
    return is_cuda_available() or is_npu_available() or is_mlu_available() or is_musa_available()


@OPTIM_WRAPPERS.register_module()
class CPUAmpOptimWrapper(AmpOptimWrapper):
    """mmengine's ``AmpOptimWrapper`` for a model on the CPU: bf16 autocast, no loss scaling.

    ``loss_scale`` is accepted (so an AMP config needs no edit) and ignored; ``dtype`` must be
    bf16 (the default), the one dtype mmengine autocasts on a CPU.
    """

    def __init__(self, loss_scale: Union[str, float, dict] = 'dynamic',
                 dtype: Union[str, torch.dtype, None] = 'bfloat16', use_fsdp: bool = False, **kwargs):
        OptimWrapper.__init__(self, **kwargs)  # mmengine's __init__ asserts an accelerator
        dtype = getattr(torch, dtype) if isinstance(dtype, str) else (dtype or torch.bfloat16)
        if dtype != torch.bfloat16:
            raise ValueError(f'CPU autocast runs bf16 only (mmengine), got dtype={dtype}; use dtype="bfloat16"')
        self.cast_dtype = dtype
        self._scale_update_param = None
        self.loss_scaler = torch.amp.GradScaler('cpu', enabled=False)  # bf16: nothing to scale
        print_log('mixed precision on the CPU: bf16 autocast, no loss scaling (emulated and slower than '
                  'fp32 on CPUs without bf16 units)', logger='current', level=logging.WARNING)

    @contextmanager
    def optim_context(self, model: nn.Module):
        from mmengine.runner.amp import autocast
        with OptimWrapper.optim_context(self, model), autocast(device_type='cpu', dtype=self.cast_dtype):
            yield


def amp_optim_wrapper(optim_wrapper: dict, device: Optional[str] = None) -> dict:
    """``optim_wrapper`` (a config dict, changed in place and returned) switched to mixed precision.

    ``device``: where the model trains ('cuda', 'cpu', ...); default: an accelerator if mmengine
    sees one, else the CPU. An ``OptimWrapper`` (or an AMP one) becomes ``AmpOptimWrapper`` with
    ``dtype='float16'`` and ``loss_scale='dynamic'`` on an accelerator (values the config sets are
    kept), and ``CPUAmpOptimWrapper`` (bf16) on a CPU.
    """
    on_accel = accelerator_available() if device is None else torch.device(device).type != 'cpu'
    kind = optim_wrapper.get('type', 'OptimWrapper')
    if kind not in ('OptimWrapper', 'AmpOptimWrapper', 'CPUAmpOptimWrapper'):
        raise ValueError(f'--amp: do not know how to make {kind!r} mixed precision; '
                         f'set an AMP optim_wrapper in the config instead')
    if on_accel:
        optim_wrapper['type'] = 'AmpOptimWrapper'
        optim_wrapper.setdefault('dtype', 'float16')
        optim_wrapper.setdefault('loss_scale', 'dynamic')
    else:
        optim_wrapper['type'] = 'CPUAmpOptimWrapper'
        optim_wrapper['dtype'] = 'bfloat16'
    return optim_wrapper
