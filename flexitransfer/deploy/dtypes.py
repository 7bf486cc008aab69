"""Which reduced-precision autocast dtypes a device runs natively (and so may be offered).

bf16 autocast on a CPU without bf16 instructions (avx512_bf16 / AMX) is emulated and several
times *slower* than fp32 (measured: about 6x for FlexiViT-B on an AVX2 CPU), so it is never
offered there; likewise fp16 on CPUs without avx512_fp16 / AMX-FP16.
"""
from __future__ import annotations

import functools
from typing import List, Union

import torch

AUTOCAST_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}


@functools.lru_cache(maxsize=None)
def cpu_flags() -> frozenset:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty where unknown, i.e. nothing is assumed)."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('flags'):
                    return frozenset(line.split(':', 1)[1].split())
    except OSError:
        pass
    return frozenset()


def autocast_dtypes(device: Union[str, torch.device]) -> List[str]:
    """Names ('bf16', 'fp16') of the autocast dtypes ``device`` computes natively, fastest-first.

    Args:
        device (str | torch.device): 'cpu', 'cuda', ...

    Returns:
        list[str]: the names (keys of ``AUTOCAST_DTYPES``); empty where none runs natively.
    """
    device = torch.device(device)
    if device.type == 'cuda':
        out = ['bf16'] if torch.cuda.is_bf16_supported() else []
        return out + ['fp16']
    if device.type == 'cpu':
        flags = cpu_flags()
        out = []
        if flags & {'avx512_bf16', 'amx_bf16'}:
            out.append('bf16')
        if flags & {'avx512_fp16', 'amx_fp16'}:
            out.append('fp16')
        return out
    return []


def check_autocast(dtype: str, device: Union[str, torch.device]) -> torch.dtype:
    """The torch dtype for ``dtype`` if ``device`` runs it natively, else a clear error.

    Args:
        dtype (str): 'bf16' or 'fp16'.
        device (str | torch.device): where the model runs.

    Returns:
        torch.dtype: ``torch.bfloat16`` or ``torch.float16``.

    Raises:
        ValueError: an unknown name, or a dtype ``device`` would only emulate.
    """
    if dtype not in AUTOCAST_DTYPES:
        raise ValueError(f'unknown autocast dtype {dtype!r}; choose one of {sorted(AUTOCAST_DTYPES)}')
    ok = autocast_dtypes(device)
    if dtype not in ok:
        raise ValueError(f'{dtype} autocast is not offered on {torch.device(device)}: it has no {dtype} units, so it '
                         f'would be emulated and slower than fp32 (offered here: {ok or "none"}); use fp32 '
                         f'(runtime torch) or onnxruntime-int8 instead')
    return AUTOCAST_DTYPES[dtype]
