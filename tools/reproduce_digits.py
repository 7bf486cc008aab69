"""Small-scale reproduction of FlexiViT's headline figure on real data that ships with a
package: scikit-learn's handwritten digits (1797 8x8 images), upsampled to 48x48
(what is run and measured: flexitransfer/experiments/digits.py, ``run_digits``).

* plain ViT trained at one patch size (8 -> 6x6 tokens), evaluated at every patch size with
  its kernel PI-resized (the paper's fair baseline) and with plain bilinear resize (naive);
* FlexiViT (same network) trained with a random patch size per step from the same list.

    python tools/reproduce_digits.py [--epochs 100] [--out OUT | --docs] [--save-dir DIR] [--threads 1]

Prints a Markdown table and writes OUT.md (headed by the command, commit, CPU, threads and date),
OUT.csv and OUT.png (default OUT: work_dirs/reproduce_digits/reproduce_digits; --docs:
docs/results/reproduce_digits, the README's). Also saves both trained models under SAVE_DIR (default
work_dirs/reproduce_digits) as ordinary config + checkpoint pairs (a ``FlexiImageClassifier`` on the
digits test images, written there as PNGs), so the other tools take them:
``tools/test.py SAVE_DIR/flexivit.py SAVE_DIR/flexivit.pth``,
``tools/analyze.py SAVE_DIR/flexivit.py SAVE_DIR/flexivit.pth --patch 4 8 12 24``.

One thread by default (``--threads``), whatever the machine: the README's table and the studies built
on this model were measured at one thread, and another thread count sums in another order (other bits).
The model is small enough that more threads barely help.
"""
import _bootstrap  # noqa: F401

import argparse

DOCS_OUT = 'docs/results/reproduce_digits'


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--epochs', type=int, default=100)
    ap.add_argument('--vit-patch', type=int, default=8)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--out', default='work_dirs/reproduce_digits/reproduce_digits', help='OUT.md, OUT.csv, OUT.png')
    ap.add_argument('--docs', action='store_true', help=f'write {DOCS_OUT}.* (the README\'s) instead of OUT')
    ap.add_argument('--save-dir', default='work_dirs/reproduce_digits',
                    help='where the trained models (config + checkpoint) and the test PNGs go')
    ap.add_argument('--flexi-only', action='store_true',
                    help='train only the FlexiViT (the same one as the full run): print its column and save it, '
                         'leave OUT alone')
    ap.add_argument('--threads', type=int, default=1,
                    help="torch's intra-op threads (default 1: the README's numbers; another count, other bits)")
    a = ap.parse_args()
    from flexitransfer.experiments.digits import run_digits
    run_digits(epochs=a.epochs, vit_patch=a.vit_patch, seed=a.seed, out=DOCS_OUT if a.docs else a.out,
               save_dir=a.save_dir, flexi_only=a.flexi_only, threads=a.threads)


if __name__ == '__main__':
    main()
