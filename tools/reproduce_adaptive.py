"""Adaptive compute from one set of FlexiViT weights, measured on real data (scikit-learn digits).

Accuracy against mean tokens and mean latency per image for (a) every uniform patch, (b) the
per-image cascade, (c) mixed patch sizes inside each image zero-shot, (d) mixed patch sizes after a
short fine-tune on random mixed partitions, and (e) the control fine-tune on random uniform patches.
Uses the FlexiViT that ``tools/reproduce_digits.py`` saved under --save-dir (trains it the same way
when absent). With --seg, the same for the tiny segmentation model (mIoU).

    python tools/reproduce_adaptive.py [--ft-epochs 10] [--seg] [--docs]

Writes OUT.md / .csv, OUT.png (the adaptive variants against the uniform Pareto front) and
OUT_uniform.png (the uniform patches) with OUT = --out/digits and --out/seg (default under
work_dirs/reproduce_adaptive; --docs: docs/results/adaptive_digits and docs/results/adaptive_seg).
"""
import _bootstrap  # noqa: F401

import argparse
import os.path as osp

from flexitransfer.experiments.adaptive_common import write_study
from flexitransfer.experiments.adaptive_digits import digits_study


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--save-dir', default='work_dirs/reproduce_digits')
    ap.add_argument('--epochs', type=int, default=100, help='training epochs when no saved FlexiViT exists')
    ap.add_argument('--ft-epochs', type=int, default=10)
    ap.add_argument('--ft-lr', type=float, default=3e-4)
    ap.add_argument('--cascade', type=int, nargs='+', default=[24, 8, 4])
    ap.add_argument('--target-acc', type=float, help='cascade target on each calibration half (default: the best '
                                                     'uniform accuracy there)')
    ap.add_argument('--latency-runs', type=int, default=10)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--out', default='work_dirs/reproduce_adaptive')
    ap.add_argument('--docs', action='store_true', help='write docs/results/adaptive_* instead of under --out')
    ap.add_argument('--seg', action='store_true', help='also the tiny segmentation study (trains it if needed)')
    a = ap.parse_args()
    out_dir = osp.join('docs', 'results') if a.docs else a.out
    prefix = 'adaptive_' if a.docs else ''

    study = digits_study(a.save_dir, a.epochs, a.seed, a.cascade, a.target_acc, a.ft_epochs, a.ft_lr, a.latency_runs)
    text, files = write_study(study, osp.join(out_dir, prefix + 'digits'))
    print(text)
    if a.seg:
        from flexitransfer.experiments.adaptive_seg import seg_study
        text, more = write_study(seg_study(seed=a.seed, latency_runs=a.latency_runs), osp.join(out_dir, prefix + 'seg'))
        print(text)
        files += more
    print('wrote ' + ', '.join(files))


if __name__ == '__main__':
    main()
