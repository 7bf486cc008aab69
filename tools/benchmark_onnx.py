"""Eager PyTorch vs ONNX Runtime (fp32, dynamic int8) for FlexiViT, per patch size, in one process.

    python tools/benchmark_onnx.py [--arch base] [--img 240] [--patch 8 16 30 48] [--runs 10]
                                   [--threads N] [--gemm 1024] [--out FILE.md]

For each patch the backbone is baked (kernel and position grid stored at that patch), exported
to ONNX (torch.onnx.export, dynamo) and quantised (ONNX Runtime's dynamic int8, linear layers);
torch's own dynamic int8 (``quantize_dynamic``, Linear only) is measured alongside. Batch 1,
eval + no_grad, median of --runs rounds in which every contestant runs once (alternating order),
and in the same rounds a square fp32 GEMM (--gemm n: n x n by n x n, torch) measures the
machine's fp32 GEMM rate under the same load. Printed: ms per runtime, ratios to eager, and the
fraction of the GEMM rate that fp32 inference reaches (FLOPs from torch's FlopCounterMode).
Goals on a 2-core AVX2 CPU: ONNX Runtime >= 1.15x eager at every patch and >= 90 % of the GEMM
rate at p <= 16; int8 >= 1.5x eager.
"""
import argparse
import os
import tempfile
import warnings

import _bootstrap  # noqa: F401
import torch
import torch.nn as nn

from flexitransfer.deploy import OnnxFunction, export_onnx, max_abs_diff, quantize_int8
from flexitransfer.benchmark.timing import count_flops, gemm_fn, gemm_gflops, interleaved_ms
from flexitransfer.models.backbones import FlexiViT


def load() -> str:
    try:
        return '/'.join(f'{v:.1f}' for v in os.getloadavg())
    except OSError:
        return 'n/a'


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--arch', default='base')
    p.add_argument('--img', type=int, default=240)
    p.add_argument('--patch', type=int, nargs='+', default=[8, 16, 30, 48])
    p.add_argument('--runs', type=int, default=10)
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--threads', type=int, default=torch.get_num_threads())
    p.add_argument('--gemm', type=int, default=1024, help='side of the square fp32 GEMM that measures the rate')
    p.add_argument('--exporter', choices=['dynamo', 'torchscript'], default='dynamo')
    p.add_argument('--out', help='also write the table here (Markdown)')
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = FlexiViT(arch=a.arch).eval()
    model.init_weights()
    x = torch.randn(1, 3, a.img, a.img)
    gemm = gemm_fn(a.gemm)
    tmp = tempfile.mkdtemp(prefix='bench_onnx_')
    head = (f'FlexiViT-{a.arch}, {a.img}x{a.img}, batch 1, {a.threads} threads (torch and ONNX Runtime), '
            f'median of {a.runs} interleaved rounds, eval + no_grad; load average at start {load()}')
    print(head + '\n', flush=True)
    cols = ('| patch | tokens | GFLOPs | eager ms | ORT ms | ORT x | ORT int8 ms | int8 x | torch int8 ms | '
            'torch int8 x | GEMM GFLOP/s | eager % GEMM | ORT % GEMM | max abs diff ORT |')
    lines = [cols, '|' + '---|' * cols.count(' | ') + '---|']
    print('\n'.join(lines), flush=True)
    res = []
    for ps in a.patch:
        baked = model.baked(ps, a.img).eval()
        f32, i8 = os.path.join(tmp, f'p{ps}.onnx'), os.path.join(tmp, f'p{ps}_int8.onnx')
        export_onnx(baked, a.img, f32, target='backbone', exporter=a.exporter, meta=dict(patch_size=[ps, ps]))
        quantize_int8(f32, i8)
        ort, ort8 = OnnxFunction(f32, threads=a.threads), OnnxFunction(i8, threads=a.threads)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # torch.ao.quantization points users to torchao (not in the pins)
            tq = torch.ao.quantization.quantize_dynamic(baked, {nn.Linear}, dtype=torch.qint8)
        xn = x.numpy()
        with torch.no_grad():
            diff = max_abs_diff(baked(x), ort(x))
            flops = count_flops(lambda: baked(x))
            ms = interleaved_ms({'eager': lambda: baked(x), 'ort': lambda: ort.run_numpy(xn),
                                 'ort8': lambda: ort8.run_numpy(xn), 'tq': lambda: tq(x), 'gemm': gemm},
                                a.runs, a.warmup)
        rate = gemm_gflops(ms['gemm'], a.gemm)
        frac = lambda t: flops / (t * 1e-3) / 1e9 / rate  # noqa: E731
        r = dict(patch=ps, tokens=(a.img // ps) ** 2, gflops=flops / 1e9, rate=rate, diff=diff, **ms)
        res.append(r)
        line = (f"| {ps} | {r['tokens']} | {r['gflops']:.2f} | {ms['eager']:.1f} | {ms['ort']:.1f} | "
                f"{ms['eager'] / ms['ort']:.2f} | {ms['ort8']:.1f} | {ms['eager'] / ms['ort8']:.2f} | {ms['tq']:.1f} | "
                f"{ms['eager'] / ms['tq']:.2f} | {rate:.0f} | {100 * frac(ms['eager']):.0f} | "
                f"{100 * frac(ms['ort']):.0f} | {diff:.1e} |")
        lines.append(line)
        print(line, flush=True)
    ort_ok = all(r['eager'] / r['ort'] >= 1.15 for r in res)
    small = [r for r in res if r['patch'] <= 16]
    gemm_ok = all(r['gflops'] / (r['ort'] * 1e-3) / r['rate'] >= 0.9 for r in small)
    int8 = min(r['eager'] / min(r['ort8'], r['tq']) for r in res)
    best8 = 'ONNX Runtime' if sum(r['ort8'] for r in res) <= sum(r['tq'] for r in res) else 'torch'
    summary = [
        f'\nload average at end {load()}',
        f"ONNX Runtime >= 1.15x eager at every patch: {'met' if ort_ok else 'NOT met'} "
        f"(min {min(r['eager'] / r['ort'] for r in res):.2f}x)",
        f"ONNX Runtime >= 90 % of the GEMM rate at p <= 16: {('met' if gemm_ok else 'NOT met') if small else 'n/a'} ("
        + ', '.join(f"p{r['patch']} {100 * r['gflops'] / (r['ort'] * 1e-3) / r['rate']:.0f} %" for r in small) + ')',
        f"int8 >= 1.5x eager (best int8 per patch): {'met' if int8 >= 1.5 else 'NOT met'} (min {int8:.2f}x); "
        f'faster int8 overall: {best8}',
    ]
    print('\n'.join(summary))
    if a.out:
        with open(a.out, 'w') as f:
            f.write(head + '\n\n' + '\n'.join(lines) + '\n' + '\n'.join(summary) + '\n')
        print(f'wrote {a.out}')


if __name__ == '__main__':
    main()
