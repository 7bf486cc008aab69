"""Small-scale reproduction of FlexiViT's headline figure on real data that ships with a
package: scikit-learn's handwritten digits (1797 8x8 images), upsampled to 48x48.

* plain ViT trained at one patch size (8 -> 6x6 tokens), evaluated at every patch size with
  its kernel PI-resized (the paper's fair baseline) and with plain bilinear resize (naive);
* FlexiViT (same network) trained with a random patch size per step from the same list.

    python tools/reproduce_digits.py [--epochs 100] [--out docs/reproduce_digits] [--save-dir DIR]

Prints a Markdown table and writes OUT.md, OUT.csv and OUT.png. Also saves both trained models
under SAVE_DIR (default work_dirs/reproduce_digits) as ordinary config + checkpoint pairs
(a ``FlexiImageClassifier`` on the digits test images, written there as PNGs), so the other
tools take them: ``tools/test.py SAVE_DIR/flexivit.py SAVE_DIR/flexivit.pth``,
``tools/analyze.py SAVE_DIR/flexivit.py SAVE_DIR/flexivit.pth --patch 4 8 12 24``.
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


def train(model, data, epochs, patch_fn, seed, desc, lr=1e-3):
    (x, y), g = data, torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    steps = epochs * (len(y) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
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


CONFIG_TEMPLATE = """# Written by tools/reproduce_digits.py: its {name} as a FlexiImageClassifier on the digits
# test images (PNGs under {root}/test/<digit>/; pixel = round((x + 1) * 127.5) of the model input x).
default_scope = 'mmengine'
custom_imports = dict(imports=['flexitransfer'], allow_failed_imports=False)
img_size = {img}
model = dict(
    type='FlexiImageClassifier', num_classes=10, pool='tok', head_zero_init=False,
    data_preprocessor=dict(type='ImgDataPreprocessor', mean=[127.5], std=[127.5]),
    backbone=dict(type='FlexiViT', arch=dict(embed_dims=64, num_layers=4, num_heads=4), in_channels=1,
                  patch_size={patch}, base_patch_size={base_patch}, base_pos_grid={base_grid}, kernel_resize='pi'))
test_pipeline = [dict(type='LoadImageFromFile', color_type='grayscale'), dict(type='PackClsInputs')]
test_dataloader = dict(batch_size=128, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=False),
                       dataset=dict(type='ImageFolderDataset', data_root={root!r}, data_prefix='test',
                                    pipeline=test_pipeline))
test_evaluator = dict(type='ClsAccuracy', topk=(1,))
test_cfg = dict(type='MultiPatchTestLoop', patch_sizes={patches})
"""


def save_test_images(data, root):
    """The test set as 8-bit PNGs, ``root/test/<digit>/<index>.png`` (ImageFolderDataset layout)."""
    import cv2
    x, y = data
    pix = ((x[:, 0] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    for i, (img, label) in enumerate(zip(pix, y.tolist())):
        d = osp.join(root, 'test', str(label))
        os.makedirs(d, exist_ok=True)
        cv2.imwrite(osp.join(d, f'{i:04d}.png'), img)


def save_model(model, root, name, patch):
    """``root/name.pth`` (state dict with backbone.* / head.*) and ``root/name.py`` (its config)."""
    bb = model.backbone
    torch.save({'state_dict': model.state_dict(), 'meta': {'source': 'tools/reproduce_digits.py'}},
               osp.join(root, name + '.pth'))
    with open(osp.join(root, name + '.py'), 'w') as f:
        f.write(CONFIG_TEMPLATE.format(name=name, root=osp.abspath(root), img=IMG, patch=patch,
                                       base_patch=bb.base_patch_size[0], base_grid=bb.base_pos_grid[0],
                                       patches=PATCHES))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--epochs', type=int, default=100)
    ap.add_argument('--vit-patch', type=int, default=8)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--out', default='docs/reproduce_digits')
    ap.add_argument('--save-dir', default='work_dirs/reproduce_digits',
                    help='where the trained models (config + checkpoint) and the test PNGs go')
    ap.add_argument('--flexi-only', action='store_true',
                    help='train only the FlexiViT (the same one as the full run): print its column and save it, '
                         'leave OUT alone')
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    tr, te = load_digits_48(a.seed)
    rng = np.random.default_rng(a.seed)
    draws = rng.choice(PATCHES, size=10 ** 6)

    models = {}
    if not a.flexi_only:
        vit = train(Net(a.vit_patch, IMG // a.vit_patch, a.vit_patch), tr, a.epochs, lambda s: a.vit_patch, a.seed,
                    f'ViT/{a.vit_patch}')
        vit_bilinear = Net(a.vit_patch, IMG // a.vit_patch, a.vit_patch, kernel_resize='bilinear').eval()
        vit_bilinear.load_state_dict(vit.state_dict())
        models.update({f'ViT/{a.vit_patch} + PI-resize': vit, f'ViT/{a.vit_patch} + bilinear': vit_bilinear})
    torch.manual_seed(a.seed)
    flexi = train(Net(24, 6, 8), tr, a.epochs, lambda s: int(draws[s]), a.seed, 'FlexiViT')
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
