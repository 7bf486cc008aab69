"""The open-vocabulary experiment at toy scale: held-out classes found from their text query
(what is run and measured: flexitransfer/experiments/openvocab.py and the README's section).

    python tools/reproduce_openvocab.py [--experiments composite colour] [--seeds 0 1]
                                        [--patch 12 16 24] [--out OUT | --docs]

Prints a Markdown table and writes OUT.md, OUT.csv and OUT.png (AP x 100; mean over seeds, min-max).
"""
import argparse

import _bootstrap  # noqa: F401

from flexitransfer.experiments.openvocab import EXPERIMENTS, RUNS, run_openvocab


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--experiments', nargs='+', default=list(EXPERIMENTS), choices=list(EXPERIMENTS))
    ap.add_argument('--runs', nargs='+', default=list(RUNS), choices=list(RUNS))
    ap.add_argument('--seeds', nargs='+', type=int, default=[0, 1])
    ap.add_argument('--patch', nargs='+', type=int, default=[12, 16, 24])
    ap.add_argument('--work-dir', default='work_dirs/openvocab')
    ap.add_argument('--out', default='work_dirs/openvocab/openvocab',
                    help='OUT.md, OUT.csv, OUT.png')
    ap.add_argument('--docs', action='store_true', help='write docs/openvocab.* (the README\'s) instead of OUT')
    a = ap.parse_args()
    a.out = 'docs/openvocab' if a.docs else a.out
    run_openvocab(a)


if __name__ == '__main__':
    main()
