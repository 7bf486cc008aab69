"""Why the digits FlexiViT dips at p = 12 and 16: one controlled change per variant, several seeds
(what is run: flexitransfer/experiments/digits_dip.py, ``run_dip``).

    python tools/study_dip.py [--variants baseline pi_aa ...] [--seeds 0 1 2] [--workers 2] [--out OUT | --docs]

Each (variant, seed) trains a digits FlexiViT for 100 epochs (about 3 minutes on one core); results are
appended to OUT.jsonl as they come, so a killed study resumes where it stopped. Writes OUT.md (with its
provenance), OUT.csv, OUT.png (default OUT work_dirs/study_dip/digits_dip; --docs: docs/results/digits_dip).
"""
import _bootstrap  # noqa: F401

import argparse

DOCS_OUT = 'docs/results/digits_dip'


def main():
    from flexitransfer.experiments.digits_dip import VARIANTS, run_dip
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--variants', nargs='+', default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    ap.add_argument('--epochs', type=int, default=100, help='training epochs of the headline run')
    ap.add_argument('--workers', type=int, default=2, help='processes, one torch thread each')
    ap.add_argument('--out', default='work_dirs/study_dip/digits_dip')
    ap.add_argument('--docs', action='store_true', help=f'write {DOCS_OUT}.* instead of OUT')
    a = ap.parse_args()
    run_dip(a.variants, a.seeds, a.epochs, a.workers, DOCS_OUT if a.docs else a.out)


if __name__ == '__main__':
    main()
