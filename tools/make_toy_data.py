"""Write tiny datasets in the real on-disk formats.

    python tools/make_toy_data.py seg [--root data/toy_ade/ADEChallengeData2016] [--num-train 96] [--num-val 24]
    python tools/make_toy_data.py cls [--root data/toy_cls] [--num-train 96] [--num-val 24]   (per class)
    python tools/make_toy_data.py captions [--root data/toy_coco] [--num-train 96] [--num-val 24]
"""
import argparse

import _bootstrap  # noqa: F401
from flexitransfer.datasets import make_ade20k_like, make_coco_captions_like, make_imagefolder_like

DEFAULT_SIZES = {'seg': (120, 120), 'cls': (60, 60), 'captions': (60, 60)}
DEFAULT_ROOTS = {'seg': 'data/toy_ade/ADEChallengeData2016', 'cls': 'data/toy_cls', 'captions': 'data/toy_coco'}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('kind', choices=sorted(DEFAULT_ROOTS))
    p.add_argument('--root')
    p.add_argument('--num-train', type=int, help='seg/captions: images; cls: per class (96, 400, 96)')
    p.add_argument('--num-val', type=int, help='(24, 60, 24)')
    p.add_argument('--size', type=int, nargs=2, metavar=('H', 'W'), help='image size (seg 120x120, cls 60x60)')
    p.add_argument('--seed', type=int, default=0)
    a = p.parse_args()
    root = a.root or DEFAULT_ROOTS[a.kind]
    size = tuple(a.size) if a.size else DEFAULT_SIZES[a.kind]
    n_train = a.num_train or {'captions': 400}.get(a.kind, 96)
    n_val = a.num_val or {'captions': 60}.get(a.kind, 24)
    if a.kind == 'seg':
        make_ade20k_like(root, n_train, n_val, size, a.seed)
    elif a.kind == 'cls':  # counts per class; 60x60 images
        make_imagefolder_like(root, n_train, n_val, size, seed=a.seed)
    elif a.kind == 'captions':  # counts are images; 5 captions each
        make_coco_captions_like(root, n_train, n_val, size, seed=a.seed)
    print(f'wrote {a.kind} toy data to {root}')


if __name__ == '__main__':
    main()
