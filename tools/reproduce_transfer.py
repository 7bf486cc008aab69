"""The paper's resource-efficient transfer, small, on real data: scikit-learn's digits.

Pre-train on digits 0-4, then transfer to the unseen digits 5-9 (new zero-initialised head,
all weights fine-tuned), and evaluate every transferred model at every patch size:

* FlexiViT (random patch per pre-training step) fine-tuned at the cheap patch 12
  (4x4 = 16 tokens): the paper's "fine-tune cheap, deploy small";
* the same FlexiViT fine-tuned directly at the small patch 4 (12x12 = 144 tokens);
* a plain ViT pre-trained at a fixed patch (8), fine-tuned at patch 12 (kernel PI-resized);
* no pre-training (random init), fine-tuned at patch 12: what pre-training is worth here.

Same network as tools/reproduce_digits.py (4 layers, 64 dims, 48x48 inputs), batch 64
throughout. Compute is counted as tokens per image x optimizer steps.

    python tools/reproduce_transfer.py [--pre-epochs 100] [--ft-epochs 20] [--out OUT | --docs]
Prints Markdown tables, writes OUT.md / .csv / .png (default work_dirs/reproduce_transfer/; --docs: docs/).
"""
import argparse
import csv
import os
import os.path as osp

import _bootstrap  # noqa: F401
import torch
import torch.nn as nn

from flexitransfer.reporting import markdown_table, patch_axis
from flexitransfer.experiments.digits import IMG, PATCHES, Net, accuracy, load_digits_48, random_patch_fn, train


def subset(data, keep, offset=0):
    x, y = data
    m = keep(y)
    return x[m], y[m] - offset


def tokens(p):
    return (IMG // p) ** 2


def new_head(model, num_classes):
    model.head = nn.Linear(model.head.in_features, num_classes)
    nn.init.zeros_(model.head.weight)
    nn.init.zeros_(model.head.bias)
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--pre-epochs', type=int, default=100)
    ap.add_argument('--ft-epochs', type=int, default=20)
    ap.add_argument('--ft-lr', type=float, default=5e-4)
    ap.add_argument('--cheap-patch', type=int, default=12)
    ap.add_argument('--small-patch', type=int, default=4)
    ap.add_argument('--vit-patch', type=int, default=8)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--out', default='work_dirs/reproduce_transfer/transfer_digits')
    ap.add_argument('--docs', action='store_true', help='docs/transfer_digits.* (the README\'s), not OUT')
    a = ap.parse_args()
    a.out = 'docs/transfer_digits' if a.docs else a.out
    for p in (a.cheap_patch, a.small_patch, a.vit_patch):
        if p not in PATCHES:
            ap.error(f'patch {p} is not one of the evaluated patch sizes {PATCHES}')
    tr, te = load_digits_48(a.seed)
    pre_tr, pre_te = subset(tr, lambda y: y < 5), subset(te, lambda y: y < 5)
    ft_tr, ft_te = subset(tr, lambda y: y >= 5, 5), subset(te, lambda y: y >= 5, 5)
    patch_of_step = random_patch_fn(a.seed)
    steps = lambda data, epochs: epochs * (len(data[1]) // 64)  # noqa: E731  (as reproduce_digits.train)

    # ---- pre-training on digits 0-4
    flexi_store, vit_store = (24, 6), (a.vit_patch, IMG // a.vit_patch)  # stored kernel size, position grid
    torch.manual_seed(a.seed)
    flexi = train(Net(*flexi_store, 8), pre_tr, a.pre_epochs, patch_of_step, a.seed, 'pre-train FlexiViT')
    torch.manual_seed(a.seed)
    vit = train(Net(*vit_store, a.vit_patch), pre_tr, a.pre_epochs, lambda s: a.vit_patch,
                a.seed, f'pre-train ViT/{a.vit_patch}')
    n_pre = steps(pre_tr, a.pre_epochs)
    pre_rows = [
        {'model': 'FlexiViT (random p)', 'steps': n_pre,
         'tokens x steps': int(sum(tokens(patch_of_step(s)) for s in range(n_pre))),
         **{f'p{p}': accuracy(flexi, pre_te, p) for p in PATCHES}},
        {'model': f'ViT/{a.vit_patch}', 'steps': n_pre, 'tokens x steps': tokens(a.vit_patch) * n_pre,
         **{f'p{p}': accuracy(vit, pre_te, p) for p in PATCHES}},
    ]

    # ---- transfer to digits 5-9: pre-trained backbone (any patch store), new zero-init head
    backbones = {'FlexiViT': flexi.backbone.state_dict(), f'ViT/{a.vit_patch}': vit.backbone.state_dict()}

    def transfer(pre, store, patch):
        torch.manual_seed(a.seed + 1)
        model = new_head(Net(*store, patch), 5)
        if pre in backbones:
            model.backbone.load_state_dict(backbones[pre])
        model = train(model, ft_tr, a.ft_epochs, lambda s: patch, a.seed + 1, f'fine-tune {pre} @ p{patch}',
                      lr=a.ft_lr)
        n = steps(ft_tr, a.ft_epochs)
        return {'pre-training': pre, 'fine-tune patch': patch, 'steps': n, 'tokens x steps': tokens(patch) * n,
                'compute vs FT at small p': None, **{f'p{p}': accuracy(model, ft_te, p) for p in PATCHES}}

    rows = [transfer('FlexiViT', flexi_store, a.cheap_patch), transfer('FlexiViT', flexi_store, a.small_patch),
            transfer(f'ViT/{a.vit_patch}', vit_store, a.cheap_patch),
            transfer('none (random init)', flexi_store, a.cheap_patch)]
    ref = rows[1]['tokens x steps']
    for r in rows:
        r['compute vs FT at small p'] = f"{r['tokens x steps'] / ref:.3f}"

    def md(rs):
        return markdown_table(rs, formats={k: '{:.1f}' for k in rs[0] if isinstance(rs[0][k], float)})

    text = (f'sklearn digits at {IMG}x{IMG}; pre-training on digits 0-4 ({len(pre_tr[1])} train images, '
            f'{a.pre_epochs} epochs = {n_pre} steps), test top-1 (%) on held-out 0-4 ({len(pre_te[1])} images):\n\n'
            + md(pre_rows)
            + f'\n\nTransfer to digits 5-9 ({len(ft_tr[1])} train images, {a.ft_epochs} epochs = '
              f'{steps(ft_tr, a.ft_epochs)} steps, new head, lr {a.ft_lr}), test top-1 (%) on held-out 5-9 '
              f'({len(ft_te[1])} images) at each evaluation patch:\n\n' + md(rows))
    print(text)
    os.makedirs(osp.dirname(a.out) or '.', exist_ok=True)
    open(a.out + '.md', 'w').write(text + '\n')
    with open(a.out + '.csv', 'w', newline='') as f:
        keys = ['stage', 'model', 'fine-tune patch', 'steps', 'tokens x steps', 'compute vs FT at small p'] + \
            [f'p{p}' for p in PATCHES]
        w = csv.DictWriter(f, fieldnames=keys, extrasaction='ignore')
        w.writeheader()
        for r in pre_rows:
            w.writerow({**r, 'stage': 'pre-train 0-4', 'fine-tune patch': ''})
        for r in rows:
            w.writerow({**r, 'stage': 'transfer 5-9', 'model': r['pre-training']})

    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for r, style in zip(rows, ('o-', '^-', 's--', 'x:')):
        label = (f"{r['pre-training']} → FT @ p{r['fine-tune patch']} "
                 f"({r['tokens x steps'] / 1e3:.1f}k tok·steps)")
        line, = ax.plot(PATCHES, [r[f'p{p}'] for p in PATCHES], style, label=label)
        ax.plot([r['fine-tune patch']], [r[f"p{r['fine-tune patch']}"]], '*', ms=14, color=line.get_color(),
                alpha=0.5)
    patch_axis(ax, PATCHES, 'patch size at evaluation (48x48 input); ★ = fine-tuning patch')
    ax.set_ylabel('top-1 on digits 5-9 (%)')
    ax.set_title('Transfer 0-4 → 5-9: fine-tune cheap, evaluate at every patch')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7.5)
    fig.tight_layout()
    fig.savefig(a.out + '.png', dpi=120)
    print(f'wrote {a.out}.md, .csv, .png')


if __name__ == '__main__':
    main()
