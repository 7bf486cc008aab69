"""FlexiViT inference speed per runtime and patch size, in one interleaved run (flexitransfer.deploy.speed).

    python tools/benchmark_onnx.py [--arch base] [--img 240] [--patch 8 16 30 48] [--runs 20]
                                   [--runtime eager compile ort ort-mha ort-int8 ort-mha-int8 ...]
                                   [--threads N] [--gemm 1024]
                                   [--out FILE.md]
    python tools/benchmark_onnx.py --quick     # smoke run: tiny model, 96 px, p 8 16 48, 3 rounds

For each patch the backbone is baked (kernel and position grid stored at that patch), exported to
ONNX with ONNX Runtime's transformer fusions (one Attention node per block, skip-LayerNorm,
bias-GELU) and quantised (dynamic int8, per-channel, reduced range; attention as QAttention).
Runtimes: eager (PyTorch), compile (torch.compile), ort (fused fp32, Attention nodes), ort-mha
(MultiHeadAttention nodes, flash-attention CPU kernel for long sequences), ort-int8 (QAttention),
ort-mha-int8, ort-unfused (plain export), torch-int8 (torch's dynamic int8), openvino /
openvino-int8 (if the openvino package is installed; f32 precision hint, latency hint). Batch 1, eval
+ no_grad; median of --runs rounds in which every runtime and a square fp32 GEMM (the machine's
GEMM rate under the same load) run once, alternating order; then eager once more alone (does
sharing the process slow torch?). Each cell: ms (ratio to eager, % of the GEMM rate). Printed at
the end: the load average (trust timings below 1.5) and the goals as met / NOT met: the best fp32
runtime >= 90 % of the GEMM rate at p <= 16 incl. p = 8 and >= 1.3x eager at every patch; the best
int8 >= 2x eager at every patch. torch and ONNX Runtime use the same --threads; ONNX Runtime's
threads do not spin between calls.
"""
import _bootstrap  # noqa: F401

import argparse
import tempfile

import torch

from flexitransfer.deploy.speed import DEFAULT_RUNTIMES, RUNTIMES, compare, goals, header, load_average
from flexitransfer.models.backbones import FlexiViT


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--arch', default='base')
    p.add_argument('--img', type=int, default=240)
    p.add_argument('--patch', type=int, nargs='+', default=[8, 16, 30, 48])
    p.add_argument('--runtime', nargs='+', choices=RUNTIMES, default=list(DEFAULT_RUNTIMES),
                   help=f'runtimes to compare (default: {" ".join(DEFAULT_RUNTIMES)}); eager is always measured')
    p.add_argument('--runs', type=int, default=20)
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--threads', type=int, default=torch.get_num_threads())
    p.add_argument('--gemm', type=int, default=1024, help='side of the square fp32 GEMM that measures the rate')
    p.add_argument('--exporter', choices=['dynamo', 'torchscript'], default='dynamo')
    p.add_argument('--quick', action='store_true', help='smoke run: tiny 2-block model, 96 px, 3 rounds')
    p.add_argument('--out', help='also write the table here (Markdown)')
    a = p.parse_args()
    arch = a.arch
    if a.quick:
        arch = dict(embed_dims=64, num_layers=2, num_heads=4)
        a.img, a.patch, a.runs, a.warmup, a.gemm = 96, [8, 16, 48], 3, 1, 256
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = FlexiViT(arch=arch).eval()
    model.init_weights()
    name = f'FlexiViT-{arch}' if isinstance(arch, str) else 'FlexiViT (quick: 64 dims, 2 blocks)'
    runtimes = list(dict.fromkeys(['eager', *a.runtime]))
    head = (f'{name}, {a.img}x{a.img}, batch 1, {a.threads} threads (torch and ONNX Runtime), median of {a.runs} '
            f'interleaved rounds, eval + no_grad; load average at start {load_average()}')
    print(head + '\n\n' + header(runtimes), flush=True)
    rows = compare(model, a.patch, a.img, runtimes, a.runs, a.warmup, a.gemm, a.threads,
                   tempfile.mkdtemp(prefix='bench_onnx_'), a.exporter, echo=lambda s: print(s, flush=True))
    summary = [f'\nload average at end {load_average()} (1/5/15 min; timings are clean below 1.5)'] + goals(rows)
    print('\n'.join(summary))
    if a.out:
        from flexitransfer.deploy.speed import format_row
        with open(a.out, 'w') as f:
            f.write(head + '\n\n' + header(runtimes) + '\n' + '\n'.join(format_row(r, runtimes) for r in rows)
                    + '\n' + '\n'.join(summary) + '\n')
        print(f'wrote {a.out}')


if __name__ == '__main__':
    main()
