"""Adaptive compute from one set of FlexiViT weights, measured on real data (scikit-learn digits).

Accuracy against mean tokens and mean latency per image for (a) every uniform patch, (b) the
per-image cascade, (c) mixed patch sizes inside each image zero-shot, (d) mixed patch sizes after a
short fine-tune on random mixed partitions, and (e) the control fine-tune on random uniform patches.
Uses the FlexiViT that ``tools/reproduce_digits.py`` saved under --save-dir (trains it the same way
when absent). With --seg, the same for the tiny segmentation model (mIoU).

    python tools/reproduce_adaptive.py [--ft-epochs 10] [--seg] [--docs]

Writes OUT.md / .csv / .png (default work_dirs/reproduce_adaptive/digits; --docs: docs/adaptive_digits).
"""
import argparse
import os.path as osp

import _bootstrap  # noqa: F401

from flexitransfer.experiments.adaptive import digits_study, rows_table, savings_table, write_rows


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
    ap.add_argument('--docs', action='store_true', help='write docs/adaptive_* instead of under --out')
    ap.add_argument('--seg', action='store_true', help='also the tiny segmentation study (trains it if needed)')
    a = ap.parse_args()
    out_dir = 'docs' if a.docs else a.out
    prefix = 'adaptive_' if a.docs else ''

    st = digits_study(a.save_dir, a.epochs, a.seed, a.cascade, a.target_acc, a.ft_epochs, a.ft_lr, a.latency_runs)
    text = (f"sklearn digits at 48x48, the digits FlexiViT (4 layers, 64 dims); every row on the {st['n_test']} test "
            f"images (one image = {100 / st['n_test']:.2f} points); the cascade's thresholds are cross-fitted (calibrated on "
            f"one half of the test images, applied to the other, and vice versa); fine-tunes: {st['ft_steps']} steps "
            f"from the same weights. Tokens = patch tokens per image "
            f"(the cascade: summed over the stages an image ran); MFLOPs counted analytically; latency = median "
            f"batch-1 ms per image, all rows interleaved in one process.\n\n" + rows_table(st['rows'])
            + '\n\nToken savings at equal accuracy:\n\n' + savings_table(st['rows']))
    print(text)
    files = write_rows(st['rows'], osp.join(out_dir, prefix + 'digits'), 'Adaptive compute on digits (one FlexiViT)',
                       text=text)
    if a.seg:
        from flexitransfer.experiments.adaptive import seg_study
        sst = seg_study(seed=a.seed, latency_runs=a.latency_runs)
        print(sst['text'])
        files += write_rows(sst['rows'], osp.join(out_dir, prefix + 'seg'), 'Mixed patches, tiny segmentation',
                            metric='mIoU (%)', text=sst['text'])
    print('wrote ' + ', '.join(files))


if __name__ == '__main__':
    main()
