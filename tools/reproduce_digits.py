"""Small-scale reproduction of FlexiViT's headline figure on real data that ships with a
package: scikit-learn's handwritten digits (1797 8x8 images), upsampled to 48x48.

* plain ViT trained at one patch size (8 -> 6x6 tokens), evaluated at every patch size with
  its kernel PI-resized (the paper's fair baseline) and with plain bilinear resize (naive);
* FlexiViT (same network) trained with a random patch size per step from the same list.

    python tools/reproduce_digits.py [--epochs 100] [--out OUT | --docs] [--save-dir DIR] [--threads 1]

Prints a Markdown table and writes OUT.md, OUT.csv and OUT.png (default OUT: work_dirs/reproduce_digits/
reproduce_digits; --docs: docs/reproduce_digits, the README's). Also saves both trained models
under SAVE_DIR (default work_dirs/reproduce_digits) as ordinary config + checkpoint pairs
(a ``FlexiImageClassifier`` on the digits test images, written there as PNGs), so the other
tools take them: ``tools/test.py SAVE_DIR/flexivit.py SAVE_DIR/flexivit.pth``,
``tools/analyze.py SAVE_DIR/flexivit.py SAVE_DIR/flexivit.pth --patch 4 8 12 24``.

One thread by default (``--threads``), whatever the machine: the README's table and the studies built
on this model were measured at one thread, and another thread count sums in another order (other bits).
The model is small enough that more threads barely help.
"""
import argparse
import csv
import os
import os.path as osp

import _bootstrap  # noqa: F401
import torch

from flexitransfer.reporting import patch_axis
from flexitransfer.experiments.digits import (IMG, PATCHES, Net, accuracy, flexi_net, load_digits_48,
                                              random_patch_fn, save_model, save_test_images, train)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--epochs', type=int, default=100)
    ap.add_argument('--vit-patch', type=int, default=8)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--out', default='work_dirs/reproduce_digits/reproduce_digits', help='OUT.md, OUT.csv, OUT.png')
    ap.add_argument('--docs', action='store_true', help='write docs/reproduce_digits.* (the README\'s) instead of OUT')
    ap.add_argument('--save-dir', default='work_dirs/reproduce_digits',
                    help='where the trained models (config + checkpoint) and the test PNGs go')
    ap.add_argument('--flexi-only', action='store_true',
                    help='train only the FlexiViT (the same one as the full run): print its column and save it, '
                         'leave OUT alone')
    ap.add_argument('--threads', type=int, default=1,
                    help="torch's intra-op threads (default 1: the README's numbers; another count, other bits)")
    a = ap.parse_args()
    a.out = 'docs/reproduce_digits' if a.docs else a.out
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    tr, te = load_digits_48(a.seed)

    models = {}
    if not a.flexi_only:
        vit = train(Net(a.vit_patch, IMG // a.vit_patch, a.vit_patch), tr, a.epochs, lambda s: a.vit_patch, a.seed,
                    f'ViT/{a.vit_patch}')
        vit_bilinear = Net(a.vit_patch, IMG // a.vit_patch, a.vit_patch, kernel_resize='bilinear').eval()
        vit_bilinear.load_state_dict(vit.state_dict())
        models.update({f'ViT/{a.vit_patch} + PI-resize': vit, f'ViT/{a.vit_patch} + bilinear': vit_bilinear})
    torch.manual_seed(a.seed)
    flexi = train(flexi_net(8), tr, a.epochs, random_patch_fn(a.seed), a.seed, 'FlexiViT')
    models['FlexiViT'] = flexi

    rows = [{'patch': p, 'tokens': (IMG // p) ** 2, **{k: accuracy(m, te, p) for k, m in models.items()}}
            for p in PATCHES]
    keys = list(rows[0])
    table = ['| ' + ' | '.join(keys) + ' |', '|' + '---|' * len(keys)]
    table += ['| ' + ' | '.join(f'{r[k]:.1f}' if isinstance(r[k], float) else str(r[k]) for k in keys) + ' |'
              for r in rows]
    text = (f'sklearn digits upsampled to {IMG}x{IMG}, {len(tr[1])} train / {len(te[1])} test images, '
            f'{a.epochs} epochs, 4-layer ViT (64 dims); test top-1 (%)\n\n' + '\n'.join(table))
    print(text)
    os.makedirs(a.save_dir, exist_ok=True)
    save_test_images(te, a.save_dir)
    save_model(flexi, a.save_dir, 'flexivit', 8)
    if not a.flexi_only:
        save_model(vit, a.save_dir, f'vit_p{a.vit_patch}', a.vit_patch)
    print(f'saved the trained model(s) as config + checkpoint and the test images under {a.save_dir}')
    if a.flexi_only:
        return
    os.makedirs(osp.dirname(a.out) or '.', exist_ok=True)
    open(a.out + '.md', 'w').write(text + '\n')
    with open(a.out + '.csv', 'w', newline='') as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for k, style in zip(keys[2:], ('o-', 's--', '^-')):
        ax.plot([r['patch'] for r in rows], [r[k] for r in rows], style, label=k)
    ax.axvline(a.vit_patch, color='grey', lw=0.8, ls=':')
    patch_axis(ax, PATCHES, 'patch size at evaluation (48x48 input)')
    ax.set_ylabel('test top-1 (%)')
    ax.set_title('One model for all patch sizes (digits)')
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(a.out + '.png', dpi=120)
    print(f'wrote {a.out}.md, .csv, .png')


if __name__ == '__main__':
    main()
