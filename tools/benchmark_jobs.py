"""Trainings side by side: each job's seconds per iteration alone and beside others, per thread setting.

    python tools/benchmark_jobs.py [CONFIG] [--settings before default 1-thread] [--jobs 1 2]
                                   [--spin 1000 100000] [--iters 60] [--out work_dirs/benchmark_jobs/jobs]

Runs ``tools/train.py CONFIG`` (default: the tiny Segmenter on toy data it generates if missing)
once alone and ``k`` times at once for each setting of the OpenMP thread variables, and writes
a Markdown table, a CSV and a bar chart (see ``flexitransfer/benchmark/jobs.py``). Run it on an
otherwise idle machine: other jobs are exactly what it measures. ``--spin N ...`` adds the settings
``spin-N`` (GOMP_SPINCOUNT=N, threads as by default): how the default spin count was chosen.
"""
import _bootstrap  # noqa: F401

import argparse
import os.path as osp

from flexitransfer.benchmark.jobs import SETTINGS, WORK_ROOT, benchmark_jobs

SEG = 'configs/seg/tiny_seg_flexi.py'


def main():
    p = argparse.ArgumentParser(description='Trainings side by side vs alone, per thread setting')
    p.add_argument('config', nargs='?', default=SEG)
    p.add_argument('--settings', nargs='+', default=list(SETTINGS), help=f'any of {list(SETTINGS)}')
    p.add_argument('--jobs', type=int, nargs='+', default=[1, 2], help='job counts (1 = alone, measured first)')
    p.add_argument('--spin', type=int, nargs='+', default=[], help='also GOMP_SPINCOUNT=N for each N (spin-N)')
    p.add_argument('--iters', type=int, default=60, help='training iterations per job (logged every 10)')
    p.add_argument('--out', default='work_dirs/benchmark_jobs/jobs', help='OUT.md, OUT.csv, OUT.png')
    a = p.parse_args()
    if 1 not in a.jobs:
        p.error('--jobs must include 1 (the alone baseline)')
    opts = []
    if a.config == SEG:
        from flexitransfer.datasets import make_ade20k_like
        root = osp.join(WORK_ROOT, 'data', 'ADEChallengeData2016')
        if not osp.isdir(root):
            make_ade20k_like(root, num_train=96, num_val=8)
        opts = [f'{d}.dataset.data_root={root}' for d in ('train_dataloader', 'val_dataloader', 'test_dataloader')]
    spins = {f'spin-{n}': {'GOMP_SPINCOUNT': str(n)} for n in a.spin}
    benchmark_jobs(a.config, a.settings + list(spins), sorted(a.jobs), a.iters, a.out, opts, extra_settings=spins)


if __name__ == '__main__':
    main()
