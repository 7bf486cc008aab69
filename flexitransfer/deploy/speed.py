"""FlexiViT inference speed per runtime and patch size, measured in one process (``tools/benchmark_onnx.py``).

Runtimes (``RUNTIMES``), each a callable on the same batch-1 input:

- ``eager``: the baked FlexiViT in PyTorch (eval, no_grad; attention through the fused SDPA kernel);
- ``compile``: the same module under ``torch.compile`` (inductor; compiled during the warm-up);
- ``ort``: the fused ONNX graph (one ``Attention`` node per block, skip-LayerNorm, bias-GELU) in
  ONNX Runtime, fp32; ``ort-mha``: the same with ``MultiHeadAttention`` nodes;
- ``ort-int8``: the fused graph with dynamic int8 weights (per channel, reduced range, ``QAttention``);
  ``ort-mha-int8``: the MultiHeadAttention graph with int8 q/k/v/proj/MLP weights (attention in fp32);
- ``ort-unfused``: the plain export (no transformer fusions), for reference;
- ``torch-int8``: torch's dynamic int8 (``torch.ao.quantization.quantize_dynamic``, Linear only; deprecated
  in favour of torchao, for comparison);
- ``openvino`` / ``openvino-int8``: the fp32 / int8 ONNX files compiled by OpenVINO (latency hint),
  only if the ``openvino`` package is installed.

Per patch, all runtimes and a square fp32 GEMM (the machine's GEMM rate under the same load) run
interleaved (:func:`flexitransfer.benchmark.timing.interleaved_ms`); then eager runs once more
alone, so the table shows whether sharing the process slowed it (ORT sessions do not spin:
:func:`flexitransfer.deploy.session.make_session`).
"""
from __future__ import annotations

import os.path as osp
import warnings
from typing import Callable, Dict, List, Sequence

import torch

# load_average: imported for tools/benchmark_onnx.py, which prints it
from ..benchmark.timing import count_flops, gemm_fn, gemm_gflops, interleaved_ms, load_average  # noqa: F401
from .export import export_onnx
from .quantize import quantize_int8
from .session import OnnxFunction

RUNTIMES = ('eager', 'compile', 'ort', 'ort-mha', 'ort-int8', 'ort-mha-int8', 'ort-unfused', 'torch-int8', 'openvino',
            'openvino-int8')
DEFAULT_RUNTIMES = ('eager', 'compile', 'ort', 'ort-mha', 'ort-int8', 'ort-mha-int8')
FP32 = ('compile', 'ort', 'ort-mha', 'ort-unfused', 'openvino')
INT8 = ('ort-int8', 'ort-mha-int8', 'torch-int8', 'openvino-int8')


def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401  (is it installed?)
        return True
    except ImportError:
        return False


def openvino_function(path: str, threads: int) -> Callable:
    """An ONNX file compiled by OpenVINO for the CPU (latency hint), as ``fn(numpy) -> outputs``."""
    import openvino as ov
    core = ov.Core()
    # f32 explicitly: OpenVINO's CPU default precision hint is bf16 even on CPUs without bf16 units
    # (max abs diff ~2e-2 vs torch on FlexiViT, measured), i.e. not an fp32 runtime
    compiled = core.compile_model(core.read_model(path), 'CPU', {'PERFORMANCE_HINT': 'LATENCY',
                                                                 'INFERENCE_NUM_THREADS': threads,
                                                                 'INFERENCE_PRECISION_HINT': 'f32'})
    req = compiled.create_infer_request()
    return lambda x: req.infer({0: x}).to_tuple()


def make_runtimes(baked: torch.nn.Module, img: int, names: Sequence[str], tmp: str, threads: int,
                  exporter: str = 'dynamo') -> Dict[str, Callable]:
    """Zero-copy callables ``fn(x)`` (x: a batch-1 torch tensor) for each runtime in ``names``."""
    fns, patch = {}, tuple(baked.patch_size)
    meta = dict(patch_size=list(patch))
    f32, mha, unf, i8 = (osp.join(tmp, f'p{patch[0]}{s}.onnx') for s in ('', '_mha', '_unfused', '_int8'))
    if any(n in names for n in ('ort', 'ort-int8', 'openvino', 'openvino-int8')):
        export_onnx(baked, img, f32, target='backbone', exporter=exporter, meta=meta)
    if any(n in names for n in ('ort-int8', 'openvino-int8')):
        quantize_int8(f32, i8)
    for n in names:
        if n == 'eager':
            fns[n] = baked
        elif n == 'compile':
            fns[n] = torch.compile(baked)
        elif n == 'torch-int8':
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')
                fns[n] = torch.ao.quantization.quantize_dynamic(baked, {torch.nn.Linear}, dtype=torch.qint8)
        elif n in ('ort', 'ort-int8'):
            f = OnnxFunction(f32 if n == 'ort' else i8, threads=threads)
            fns[n] = lambda x, f=f: f.run_numpy(x.numpy())
        elif n in ('ort-mha', 'ort-mha-int8'):
            if not osp.exists(mha):
                export_onnx(baked, img, mha, target='backbone', exporter=exporter, meta=meta,
                            attention_op='MultiHeadAttention')
            src = mha
            if n == 'ort-mha-int8':
                src = mha.replace('.onnx', '_int8.onnx')
                quantize_int8(mha, src)
            f = OnnxFunction(src, threads=threads)
            fns[n] = lambda x, f=f: f.run_numpy(x.numpy())
        elif n == 'ort-unfused':
            export_onnx(baked, img, unf, target='backbone', exporter=exporter, meta=meta, fuse=False)
            f = OnnxFunction(unf, threads=threads)
            fns[n] = lambda x, f=f: f.run_numpy(x.numpy())
        elif n.startswith('openvino'):
            if not openvino_available():
                raise SystemExit(f'runtime {n}: pip install openvino (not in requirements.txt)')
            # OpenVINO reads standard ONNX: the unfused export (com.microsoft ops are ORT's)
            if not osp.exists(unf):
                export_onnx(baked, img, unf, target='backbone', exporter=exporter, meta=meta, fuse=False)
            if n == 'openvino':
                fns[n] = (lambda f: lambda x: f(x.numpy()))(openvino_function(unf, threads))
            else:
                unf8 = osp.join(tmp, f'p{patch[0]}_unfused_int8.onnx')
                quantize_int8(unf, unf8)
                fns[n] = (lambda f: lambda x: f(x.numpy()))(openvino_function(unf8, threads))
        else:
            raise ValueError(f'unknown runtime {n!r}; choose from {RUNTIMES}')
    return fns


def first_output(out):
    while isinstance(out, (tuple, list)):
        out = out[0]
    return torch.as_tensor(out)


def compare(model, patches: Sequence[int], img: int, runtimes: Sequence[str], runs: int, warmup: int,
            gemm: int, threads: int, tmp: str, exporter: str = 'dynamo', echo=print) -> List[dict]:
    """One row per patch: ms per runtime (interleaved, with the GEMM), eager alone, FLOPs, GEMM rate,
    max abs diff of each runtime's first output to eager."""
    runtimes = list(dict.fromkeys(['eager', *runtimes]))
    x = torch.randn(1, 3, img, img, generator=torch.Generator().manual_seed(0))
    gemm_call = gemm_fn(gemm)
    rows = []
    for ps in patches:
        baked = model.bake(ps, img).eval()
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            fns = make_runtimes(baked, img, runtimes, tmp, threads, exporter)
        with torch.no_grad():
            ref = first_output(baked(x))
            diffs = {}
            for n, f in fns.items():  # also the warm-up that compiles
                diffs[n] = (first_output(f(x)).float() - ref).abs().max().item()
            flops = count_flops(lambda: baked(x))
            calls = {n: (lambda f=f: f(x)) for n, f in fns.items()}
            ms = interleaved_ms({**calls, 'gemm': gemm_call}, runs, warmup)
            alone = interleaved_ms({'eager': calls['eager']}, runs, warmup)['eager']
        rate = gemm_gflops(ms.pop('gemm'), gemm)
        row = dict(patch=ps, tokens=(img // ps) ** 2, gflops=flops / 1e9, rate=rate, ms=ms, diff=diffs,
                   eager_alone=alone)
        rows.append(row)
        echo(format_row(row, runtimes))
    return rows


def pct_gemm(row, name) -> float:
    return 100 * row['gflops'] / (row['ms'][name] * 1e-3) / row['rate']


def header(runtimes: Sequence[str]) -> str:
    cols = ['patch', 'tokens', 'GFLOPs', 'GEMM GFLOP/s'] + [f'{n} ms (x eager, % GEMM)' for n in runtimes] + \
        ['eager alone ms', 'max abs diff vs eager']
    return '| ' + ' | '.join(cols) + ' |\n|' + '---|' * len(cols)


def format_row(row, runtimes: Sequence[str]) -> str:
    ms, e = row['ms'], row['ms']['eager']
    cells = [str(row['patch']), str(row['tokens']), f"{row['gflops']:.2f}", f"{row['rate']:.0f}"]
    cells += [f"{ms[n]:.1f} ({e / ms[n]:.2f}x, {pct_gemm(row, n):.0f} %)" for n in runtimes]
    cells += [f"{row['eager_alone']:.1f} ({row['eager_alone'] / e:.2f} of mixed)",
              ', '.join(f'{n} {d:.1e}' for n, d in row['diff'].items() if n != 'eager')]
    return '| ' + ' | '.join(cells) + ' |'


def goals(rows: List[dict]) -> List[str]:
    """The issue's goals as met / NOT met on these rows."""
    out = []

    def best(row, group):
        names = [n for n in row['ms'] if n in group]
        return min(names, key=lambda n: row['ms'][n]) if names else None
    fp = [(r, best(r, FP32)) for r in rows if best(r, FP32)]
    small = [(r, b) for r, b in fp if r['patch'] <= 16]
    if small:
        ok = all(pct_gemm(r, b) >= 90 for r, b in small) and any(r['patch'] == 8 for r, _ in small)
        out.append(f"best fp32 >= 90 % of the GEMM rate at p <= 16 (incl. p = 8): {'met' if ok else 'NOT met'} ("
                   + ', '.join(f"p{r['patch']} {b} {pct_gemm(r, b):.0f} %" for r, b in small) + ')')
    if fp:
        ok = all(r['ms']['eager'] / r['ms'][b] >= 1.3 for r, b in fp)
        out.append(f"best fp32 >= 1.3x eager at every patch: {'met' if ok else 'NOT met'} ("
                   + ', '.join(f"p{r['patch']} {b} {r['ms']['eager'] / r['ms'][b]:.2f}x" for r, b in fp) + ')')
    q = [(r, best(r, INT8)) for r in rows if best(r, INT8)]
    if q:
        ok = all(r['ms']['eager'] / r['ms'][b] >= 2 for r, b in q)
        out.append(f"best int8 >= 2x eager at every patch: {'met' if ok else 'NOT met'} ("
                   + ', '.join(f"p{r['patch']} {b} {r['ms']['eager'] / r['ms'][b]:.2f}x" for r, b in q) + ')')
    worst = max(abs(r['eager_alone'] / r['ms']['eager'] - 1) for r in rows)
    out.append(f'eager alone vs eager in the mixed rounds: within {100 * worst:.0f} % at every patch '
               f'(sessions share the process without slowing torch if this is small)')
    return out
