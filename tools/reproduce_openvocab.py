"""The open-vocabulary experiment at toy scale: held-out classes found from their text query
(what is run and measured: flexitransfer/experiments/openvocab.py, ``run_openvocab``, and the README's section).

    python tools/reproduce_openvocab.py [--experiments composite colour] [--seeds 0 1]
                                        [--patch 12 16 24] [--out OUT | --docs]

Prints a Markdown table and writes OUT.md (headed by the command, commit, CPU, threads and date),
OUT.csv and OUT.png (AP x 100; mean over seeds, min-max). OUT is relative to the repository root
(default work_dirs/openvocab/openvocab; --docs: docs/results/openvocab, the README's).
"""
import _bootstrap  # noqa: F401

import argparse
import sys

from flexitransfer.experiments.openvocab import EXPERIMENTS, RUNS, StepFailed, run_openvocab

DOCS_OUT = 'docs/results/openvocab'


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--experiments', nargs='+', default=list(EXPERIMENTS), choices=list(EXPERIMENTS))
    ap.add_argument('--runs', nargs='+', default=list(RUNS), choices=list(RUNS))
    ap.add_argument('--seeds', nargs='+', type=int, default=[0, 1])
    ap.add_argument('--patch', nargs='+', type=int, default=[12, 16, 24])
    ap.add_argument('--work-dir', default='work_dirs/openvocab')
    ap.add_argument('--out', default='work_dirs/openvocab/openvocab',
                    help='OUT.md, OUT.csv, OUT.png')
    ap.add_argument('--docs', action='store_true', help=f'write {DOCS_OUT}.* (the README\'s) instead of OUT')
    a = ap.parse_args()
    try:
        run_openvocab(experiments=a.experiments, runs=a.runs, seeds=a.seeds, patch=a.patch, work_dir=a.work_dir,
                      out=DOCS_OUT if a.docs else a.out)
    except StepFailed as e:  # a training subprocess: its command, exit status and log tail, not a traceback
        sys.exit(f'reproduce_openvocab.py: error: {e}')


if __name__ == '__main__':
    main()
