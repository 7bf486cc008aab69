"""Write tiny datasets in the real on-disk formats (every registered kind, see
flexitransfer/datasets/toy/).

    python tools/make_toy_data.py KIND [--root DIR] [--num-train N] [--num-val N] [--size H W] [--seed S]
    python tools/make_toy_data.py --list
"""
import _bootstrap  # noqa: F401

import argparse

from flexitransfer.datasets.toy import TOY_DATASETS


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('kind', nargs='?', choices=sorted(TOY_DATASETS))
    p.add_argument('--list', action='store_true', help='list the kinds, their formats and defaults')
    p.add_argument('--root', help='output folder (default: the kind\'s, under data/)')
    p.add_argument('--num-train', type=int, help='training images (per class for cls)')
    p.add_argument('--num-val', type=int, help='validation images (per class for cls)')
    p.add_argument('--size', type=int, nargs=2, metavar=('H', 'W'), help='image size')
    p.add_argument('--seed', type=int, default=0)
    a = p.parse_args()
    if a.list or not a.kind:
        for k, t in sorted(TOY_DATASETS.items()):
            doc = (t.fn.__doc__ or '').strip().splitlines()[0]
            print(f'{k:10s} {t.root}  ({t.num_train}/{t.num_val}{" per class" if t.per_class else ""}, '
                  f'{t.size[0]}x{t.size[1]})  {doc}')
        if not a.kind:
            p.exit(0 if a.list else 2, '' if a.list else 'give a KIND (see --list)\n')
        return
    t = TOY_DATASETS[a.kind]
    root = a.root or t.root
    t.fn(root, num_train=a.num_train or t.num_train, num_val=a.num_val or t.num_val,
         size=tuple(a.size) if a.size else t.size, seed=a.seed)
    print(f'wrote {a.kind} toy data to {root}')


if __name__ == '__main__':
    main()
