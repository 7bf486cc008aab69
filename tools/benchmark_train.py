"""Training throughput (images/s, tokens/s) and peak memory per patch size, for any config.

    python tools/benchmark_train.py CONFIG --patch 8 16 30 --iters N [--warmup W] [--amp]
                                    [--device cuda|cpu] [--with-cp] [--batch-size B] [--img-size H W]
                                    [--out work_dirs/benchmark_train/NAME.csv] [--cfg-options k=v ...]

Random weights (FlexiViT ``pretrained=None``), a synthetic batch at the config's training input
size, ``model.train_step`` (forward, loss, backward, optimizer step) ``W`` untimed + ``N`` timed
times, each (patch, with_cp) in a fresh process. ``--with-cp`` measures every patch twice, without
and with activation checkpointing in the FlexiViT blocks. Memory: CUDA ``max_memory_allocated``; on
a CPU the peak RSS, and the peak minus the RSS after building model, optimizer state and inputs.
Prints a Markdown table, writes a CSV (see ``flexitransfer/benchmark/train.py``).
"""
import _bootstrap  # noqa: F401

import argparse

from mmengine.config import DictAction

from flexitransfer.benchmark.train import benchmark_train


def main():
    p = argparse.ArgumentParser(description='Training throughput and peak memory per patch size')
    p.add_argument('config')
    p.add_argument('--patch', type=int, nargs='+', required=True, help='patch sizes to measure')
    p.add_argument('--iters', type=int, default=1, help='timed training iterations per measurement')
    p.add_argument('--warmup', type=int, default=0, help='untimed iterations before them')
    p.add_argument('--amp', action='store_true', help='mixed precision (fp16 on CUDA, bf16 on a CPU)')
    p.add_argument('--device', default=None, help='cuda | cpu | cuda:N (default: cuda if available)')
    p.add_argument('--with-cp', action='store_true',
                   help='measure each patch without and with activation checkpointing')
    p.add_argument('--batch-size', type=int, default=1)
    p.add_argument('--img-size', type=int, nargs=2, metavar=('H', 'W'), help='default: the config\'s training size')
    p.add_argument('--out', help='CSV path (default: work_dirs/benchmark_train/<config>_<device>.csv)')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config entries, key=value')
    a = p.parse_args()
    benchmark_train(a.config, a.patch, iters=a.iters, device=a.device, amp=a.amp,
                    with_cp=(False, True) if a.with_cp else (False,), batch_size=a.batch_size, warmup=a.warmup,
                    img_size=a.img_size, out=a.out, cfg_options=a.cfg_options)


if __name__ == '__main__':
    main()
