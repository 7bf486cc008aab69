"""Write tiny datasets in the real on-disk formats.

    python tools/make_toy_data.py seg [--root data/toy_ade/ADEChallengeData2016] [--num-train 96] [--num-val 24]
"""
import argparse

import _bootstrap  # noqa: F401
from flexitransfer.datasets import make_ade20k_like

DEFAULT_ROOTS = {'seg': 'data/toy_ade/ADEChallengeData2016'}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('kind', choices=sorted(DEFAULT_ROOTS))
    p.add_argument('--root')
    p.add_argument('--num-train', type=int, default=96)
    p.add_argument('--num-val', type=int, default=24)
    p.add_argument('--size', type=int, nargs=2, default=(120, 120), metavar=('H', 'W'))
    p.add_argument('--seed', type=int, default=0)
    a = p.parse_args()
    root = a.root or DEFAULT_ROOTS[a.kind]
    if a.kind == 'seg':
        make_ade20k_like(root, a.num_train, a.num_val, tuple(a.size), a.seed)
    print(f'wrote {a.kind} toy data to {root}')


if __name__ == '__main__':
    main()
