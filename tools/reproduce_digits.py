"""Small-scale reproduction of FlexiViT's headline figure on real data that ships with a
package: scikit-learn's handwritten digits (1797 8x8 images), upsampled to 48x48.

* plain ViT trained at one patch size (8 -> 6x6 tokens), evaluated at every patch size with
  its kernel PI-resized (the paper's fair baseline) and with plain bilinear resize (naive);
* FlexiViT (same network) trained with a random patch size per step from the same list.

    python tools/reproduce_digits.py [--epochs 100] [--out docs/reproduce_digits]

Prints a Markdown table and writes OUT.md, OUT.csv and OUT.png.
"""
import argparse
import csv
import os
import os.path as osp

import _bootstrap  # noqa: F401
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from flexitransfer.models.backbones import FlexiViT

PATCHES = [4, 6, 8, 12, 16, 24]  # grids 12, 8, 6, 4, 3, 2 on 48x48
IMG = 48


class Net(nn.Module):
    def __init__(self, base_patch, base_grid, patch, kernel_resize='pi'):
        super().__init__()
        self.backbone = FlexiViT(arch=dict(embed_dims=64, num_layers=4, num_heads=4), in_channels=1,
                                 patch_size=patch, base_patch_size=base_patch, base_pos_grid=base_grid,
                                 kernel_resize=kernel_resize, out_type='cls_token')
        self.backbone.init_weights()
        self.head = nn.Linear(64, 10)

    def forward(self, x, p=None):
        return self.head(self.backbone(x, p)[0])


def load_digits_48(seed):
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 8.0 - 1.0  # [0, 16] -> [-1, 1]
    x = F.interpolate(x, size=(IMG, IMG), mode='bilinear', align_corners=False)
    y = torch.tensor(d.target)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    x, y = x[perm], y[perm]
    return (x[:1300], y[:1300]), (x[1300:], y[1300:])


def augment(x, g):
    """Random translation by up to 4 pixels (pad with background)."""
    dx, dy = torch.randint(-4, 5, (2,), generator=g).tolist()
    x = F.pad(x, (4, 4, 4, 4), value=-1.0)
    return x[..., 4 + dy:4 + dy + IMG, 4 + dx:4 + dx + IMG]


def train(model, data, epochs, patch_fn, seed, desc):
    (x, y), g = data, torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    steps = epochs * (len(y) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=steps, pct_start=0.1)
    model.train()
    step = 0
    for _ in tqdm(range(epochs), desc=desc, leave=False):
        perm = torch.randperm(len(y), generator=g)
        for i in range(0, len(y) - 63, 64):
            idx = perm[i:i + 64]
            loss = F.cross_entropy(model(augment(x[idx], g), patch_fn(step)), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
    return model.eval()


@torch.no_grad()
def accuracy(model, data, p):
    x, y = data
    return (model(x, p).argmax(-1) == y).float().mean().item() * 100


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--epochs', type=int, default=100)
    ap.add_argument('--vit-patch', type=int, default=8)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--out', default='docs/reproduce_digits')
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    tr, te = load_digits_48(a.seed)
    rng = np.random.default_rng(a.seed)
    draws = rng.choice(PATCHES, size=10 ** 6)

    vit = train(Net(a.vit_patch, IMG // a.vit_patch, a.vit_patch), tr, a.epochs, lambda s: a.vit_patch, a.seed,
                f'ViT/{a.vit_patch}')
    vit_bilinear = Net(a.vit_patch, IMG // a.vit_patch, a.vit_patch, kernel_resize='bilinear').eval()
    vit_bilinear.load_state_dict(vit.state_dict())
    torch.manual_seed(a.seed)
    flexi = train(Net(24, 6, 8), tr, a.epochs, lambda s: int(draws[s]), a.seed, 'FlexiViT')

    rows = [{'patch': p, 'tokens': (IMG // p) ** 2,
             f'ViT/{a.vit_patch} + PI-resize': accuracy(vit, te, p),
             f'ViT/{a.vit_patch} + bilinear': accuracy(vit_bilinear, te, p),
             'FlexiViT': accuracy(flexi, te, p)} for p in PATCHES]
    keys = list(rows[0])
    table = ['| ' + ' | '.join(keys) + ' |', '|' + '---|' * len(keys)]
    table += ['| ' + ' | '.join(f'{r[k]:.1f}' if isinstance(r[k], float) else str(r[k]) for k in keys) + ' |'
              for r in rows]
    text = (f'sklearn digits upsampled to {IMG}x{IMG}, {len(tr[1])} train / {len(te[1])} test images, '
            f'{a.epochs} epochs, 4-layer ViT (64 dims); test top-1 (%)\n\n' + '\n'.join(table))
    print(text)
    os.makedirs(osp.dirname(a.out) or '.', exist_ok=True)
    open(a.out + '.md', 'w').write(text + '\n')
    with open(a.out + '.csv', 'w', newline='') as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    fig, ax = plt.subplots(figsize=(6, 4))
    for k, style in zip(keys[2:], ('o-', 's--', '^-')):
        ax.plot([r['patch'] for r in rows], [r[k] for r in rows], style, label=k)
    ax.axvline(a.vit_patch, color='grey', lw=0.8, ls=':')
    ax.set_xscale('log')
    ax.set_xticks(PATCHES, [str(p) for p in PATCHES])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel('patch size at evaluation (48x48 input)')
    ax.set_ylabel('test top-1 (%)')
    ax.set_title('One model for all patch sizes (digits)')
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(a.out + '.png', dpi=120)
    print(f'wrote {a.out}.md, .csv, .png')


if __name__ == '__main__':
    main()
