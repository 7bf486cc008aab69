"""The paper's resource-efficient transfer, small, on real data: scikit-learn's digits
(what is run and measured: flexitransfer/experiments/transfer.py, ``run_transfer``).

Pre-train on digits 0-4, then transfer to the unseen digits 5-9 (new zero-initialised head,
all weights fine-tuned), and evaluate every transferred model at every patch size: a FlexiViT
fine-tuned at the cheap patch 12 and at the small patch 4, a plain ViT/8 fine-tuned at 12, and
no pre-training fine-tuned at 12. Compute is counted as tokens per image x optimizer steps.

    python tools/reproduce_transfer.py [--pre-epochs 100] [--ft-epochs 20] [--out OUT | --docs]

Prints Markdown tables, writes OUT.md (headed by the command, commit, CPU, threads and date), OUT.csv
and OUT.png (default OUT: work_dirs/reproduce_transfer/transfer_digits; --docs:
docs/results/transfer_digits, the README's).
"""
import _bootstrap  # noqa: F401

import argparse

PATCHES = (4, 6, 8, 12, 16, 24)  # flexitransfer.experiments.digits.PATCHES (not imported: errors answer at once)
DOCS_OUT = 'docs/results/transfer_digits'


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--pre-epochs', type=int, default=100)
    ap.add_argument('--ft-epochs', type=int, default=20)
    ap.add_argument('--ft-lr', type=float, default=5e-4)
    ap.add_argument('--cheap-patch', type=int, default=12)
    ap.add_argument('--small-patch', type=int, default=4)
    ap.add_argument('--vit-patch', type=int, default=8)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--out', default='work_dirs/reproduce_transfer/transfer_digits')
    ap.add_argument('--docs', action='store_true', help=f'{DOCS_OUT}.* (the README\'s), not OUT')
    a = ap.parse_args()
    for p in (a.cheap_patch, a.small_patch, a.vit_patch):
        if p not in PATCHES:
            ap.error(f'patch {p} is not one of the evaluated patch sizes {list(PATCHES)}')
    from flexitransfer.experiments.transfer import run_transfer
    run_transfer(pre_epochs=a.pre_epochs, ft_epochs=a.ft_epochs, ft_lr=a.ft_lr, cheap_patch=a.cheap_patch,
                 small_patch=a.small_patch, vit_patch=a.vit_patch, seed=a.seed, out=DOCS_OUT if a.docs else a.out)


if __name__ == '__main__':
    main()
