"""Open vocabulary at toy scale: does a class held out of detection training get found from its name?

OWL-ViT's protocol, small: the detector starts from the tiny LiT (image + text towers trained on
toy captions that name every class), trains its boxes with one class held out (its boxes removed,
its images kept, its name never a training query), and is evaluated on that class from its text
query. Two experiments (one config each):

* ``composite`` (configs/det/tiny_owl_openvocab.py): 12 colour+shape classes, 'yellow triangle'
  held out; its words are seen in other classes ("yellow circle", "red triangle");
* ``colour`` (configs/det/tiny_owl_openvocab_colour.py): 4 colour classes, 'yellow' held out: a
  novel attribute, no seen class shares it.

Each is trained three ways: ``lit`` (the result: LiT init, class held out), ``scratch`` (the
control: same data, no LiT: is LiT what helps?) and ``lit_all`` (the upper bound: LiT init, the
class's boxes kept). Every run is evaluated at several patch sizes on the held-out class, with
all classes queried ("all", the standard protocol) and with its name alone ("alone"), against
the chance level of the same boxes with permuted scores, and with the share of its boxes that
some prediction of the image localises (IoU >= 0.5, whatever the score: do the boxes exist at
all, apart from whether the query ranks them); the seen classes' mean AP is shown beside it.
The LiT checkpoint is trained first if it is missing; a run whose final checkpoint exists is
only evaluated.

    python tools/reproduce_openvocab.py [--experiments composite colour] [--seeds 0 1]
                                        [--patch 12 16 24] [--out docs/openvocab]

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
                    help='OUT.md, OUT.csv, OUT.png (--out docs/openvocab regenerates the README\'s)')
    run_openvocab(ap.parse_args())


if __name__ == '__main__':
    main()
