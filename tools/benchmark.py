"""Speed/accuracy benchmark across tasks and patch sizes (the engine: flexitransfer.benchmark.tasks).

    python tools/benchmark.py --model seg CONFIG CKPT --model cls CONFIG CKPT [--patch P ...]
                              [--runtime torch onnxruntime onnxruntime-int8] [--compile] [--runs 10]
                              [--throughput-batch 8] [--budget-ms T] [--out work_dirs/benchmark]
    python tools/benchmark.py --preset tiny      # the README's tables (trains missing tiny checkpoints)

For every model, runtime and patch size: the task metric (the config's test set, multi-patch
loop; for ONNX runtimes the exported graph inside the task model, flexitransfer.deploy.predictors),
GFLOPs (torch's FlopCounterMode, one image), parameters, latency (batch 1) and throughput
(--throughput-batch images) on the current device (warm-up, then the median of --runs), and
peak memory (CUDA: max allocated; CPU: growth of the process's peak RSS, measured in a fresh
process per model with patch sizes in increasing token order). Runtimes: ``torch`` (fp32),
``torch-bf16`` / ``torch-fp16`` (autocast; only where the device computes that dtype natively:
added by default on CUDA, never offered on a CPU without bf16 units, where it is several times
slower than fp32), ``onnxruntime`` (the model baked at each patch, exported, fp32) and
``onnxruntime-int8`` (the same graph with dynamic int8 weights), ``torch-compile`` (--compile:
torch.compile of the model baked at each patch; metric as torch's). Per patch the runtimes
are timed interleaved in one process. Writes OUT.md, OUT.csv and OUT.png (metric vs latency,
one curve per runtime, per task). --budget-ms T picks, per task, the (patch, runtime) pair
with the best metric whose latency meets T on this device.

Progress: a line per model, patch, runtime and metric pass. The load average is printed first; on a
busy machine (1-minute load + the benchmark's threads > CPUs) a warning goes to the terminal and
OUT.md, since load slows runtimes by different factors and so can change the budget picks. Each
model's process gets its own temporary folder (work dir, ONNX files, workers' files), removed after.
"""
import _bootstrap  # noqa: F401

import argparse

from flexitransfer.benchmark.tasks import RUNTIMES, run


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--model', nargs=3, action='append', metavar=('NAME', 'CONFIG', 'CKPT'), default=[])
    ap.add_argument('--preset', choices=['tiny'])
    ap.add_argument('--patch', type=int, nargs='+')
    ap.add_argument('--runs', type=int, default=10)
    ap.add_argument('--throughput-batch', type=int, default=8)
    ap.add_argument('--budget-ms', type=float)
    ap.add_argument('--out', default='work_dirs/benchmark',
                    help='OUT.md, OUT.csv, OUT.png (docs/benchmark: the README\'s)')
    ap.add_argument('--data-root', help='override the test set\'s data_root (all models)')
    ap.add_argument('--runtime', nargs='+', choices=RUNTIMES,
                    help='runtimes to compare (default: torch, plus bf16/fp16 autocast on CUDA); ONNX runtimes export '
                         'the model baked at each patch and run it in ONNX Runtime (CPU)')
    ap.add_argument('--compile', action='store_true',
                    help='add the torch-compile runtime (torch.compile of the model baked at each patch; torch\'s '
                         'metric, its own latency)')
    ap.add_argument('--exporter', choices=['dynamo', 'torchscript'], default='dynamo',
                    help='torch.onnx.export(dynamo=True) or the TorchScript-based exporter, for ONNX runtimes')
    a = ap.parse_args()
    if not a.model and not a.preset:
        ap.error('give --model NAME CONFIG CKPT (repeatable) or --preset tiny')
    runtimes = a.runtime
    if a.compile:
        runtimes = list(dict.fromkeys([*(runtimes or ['torch']), 'torch-compile']))
    run(a.model, a.patch, a.runs, a.throughput_batch, a.budget_ms, a.out, a.data_root, runtimes, a.exporter, a.preset)


if __name__ == '__main__':
    main()
