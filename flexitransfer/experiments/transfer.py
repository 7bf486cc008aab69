"""The paper's resource-efficient transfer, small, on real data: scikit-learn's digits
(``tools/reproduce_transfer.py`` is argparse + :func:`run_transfer`).

Pre-train on digits 0-4, then transfer to the unseen digits 5-9 (new zero-initialised head,
all weights fine-tuned), and evaluate every transferred model at every patch size:

* FlexiViT (random patch per pre-training step) fine-tuned at the cheap patch 12
  (4x4 = 16 tokens): the paper's "fine-tune cheap, deploy small";
* the same FlexiViT fine-tuned directly at the small patch 4 (12x12 = 144 tokens);
* a plain ViT pre-trained at a fixed patch (8), fine-tuned at patch 12 (kernel PI-resized);
* no pre-training (random init), fine-tuned at patch 12: what pre-training is worth here.

Same network as :mod:`.digits` (4 layers, 64 dims, 48x48 inputs), batch 64 throughout. Compute is
counted as tokens per image x optimizer steps.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..reporting import markdown_table, patch_axis, save_figure, write_csv, write_markdown
from .digits import FLEXI_STORE, IMG, PATCHES, Net, accuracy, float_formats, load_digits_48, random_patch_fn, train

CSV_COLS = ['stage', 'model', 'fine-tune patch', 'steps', 'tokens x steps', 'compute vs FT at small p'] + \
    [f'p{p}' for p in PATCHES]


def _subset(data, keep, offset=0):
    x, y = data
    m = keep(y)
    return x[m], y[m] - offset


def _tokens(p):
    return (IMG // p) ** 2


def _steps(data, epochs):
    """Optimizer steps of ``epochs`` over ``data`` at batch 64 (as :func:`.digits.train`)."""
    return epochs * (len(data[1]) // 64)


def _new_head(model, num_classes):
    model.head = nn.Linear(model.head.in_features, num_classes)
    nn.init.zeros_(model.head.weight)
    nn.init.zeros_(model.head.bias)
    return model


def run_transfer(pre_epochs: int = 100, ft_epochs: int = 20, ft_lr: float = 5e-4, cheap_patch: int = 12,
                 small_patch: int = 4, vit_patch: int = 8, seed: int = 0,
                 out: str = 'work_dirs/reproduce_transfer/transfer_digits') -> str:
    """Pre-train on digits 0-4, fine-tune on 5-9, evaluate at every patch size.

    Prints the two tables; writes ``OUT.md`` (with its provenance), ``OUT.csv`` and ``OUT.png`` (paths as
    given, relative to the working directory).

    Args:
        pre_epochs: pre-training epochs (FlexiViT and ViT).
        ft_epochs: fine-tuning epochs of every transferred model.
        ft_lr: fine-tuning peak learning rate.
        cheap_patch: the cheap fine-tuning patch size.
        small_patch: the small (expensive) fine-tuning patch size the cheap one is compared with.
        vit_patch: the plain ViT's pre-training patch size.
        seed: data split and pre-training (fine-tuning uses ``seed + 1``).
        out: OUT, without the extension.

    Returns:
        The Markdown printed (both tables with their descriptions).

    Raises:
        ValueError: a patch size that is not one of the evaluated ones (``PATCHES``).
    """
    for p in (cheap_patch, small_patch, vit_patch):
        if p not in PATCHES:
            raise ValueError(f'patch {p} is not one of the evaluated patch sizes {PATCHES}')
    tr, te = load_digits_48(seed)
    pre_tr, pre_te = _subset(tr, lambda y: y < 5), _subset(te, lambda y: y < 5)
    ft_tr, ft_te = _subset(tr, lambda y: y >= 5, 5), _subset(te, lambda y: y >= 5, 5)
    patch_of_step = random_patch_fn(seed)

    # ---- pre-training on digits 0-4
    vit_store = (vit_patch, IMG // vit_patch)  # stored kernel size, position grid
    torch.manual_seed(seed)
    flexi = train(Net(*FLEXI_STORE, 8), pre_tr, pre_epochs, patch_of_step, seed, 'pre-train FlexiViT')
    torch.manual_seed(seed)
    vit = train(Net(*vit_store, vit_patch), pre_tr, pre_epochs, lambda s: vit_patch, seed,
                f'pre-train ViT/{vit_patch}')
    n_pre = _steps(pre_tr, pre_epochs)
    pre_rows = [
        {'model': 'FlexiViT (random p)', 'steps': n_pre,
         'tokens x steps': int(sum(_tokens(patch_of_step(s)) for s in range(n_pre))),
         **{f'p{p}': accuracy(flexi, pre_te, p) for p in PATCHES}},
        {'model': f'ViT/{vit_patch}', 'steps': n_pre, 'tokens x steps': _tokens(vit_patch) * n_pre,
         **{f'p{p}': accuracy(vit, pre_te, p) for p in PATCHES}},
    ]

    # ---- transfer to digits 5-9: pre-trained backbone (any patch store), new zero-init head
    backbones = {'FlexiViT': flexi.backbone.state_dict(), f'ViT/{vit_patch}': vit.backbone.state_dict()}

    def transfer(pre, store, patch):
        torch.manual_seed(seed + 1)
        model = _new_head(Net(*store, patch), 5)
        if pre in backbones:
            model.backbone.load_state_dict(backbones[pre])
        model = train(model, ft_tr, ft_epochs, lambda s: patch, seed + 1, f'fine-tune {pre} @ p{patch}', lr=ft_lr)
        n = _steps(ft_tr, ft_epochs)
        return {'pre-training': pre, 'fine-tune patch': patch, 'steps': n, 'tokens x steps': _tokens(patch) * n,
                'compute vs FT at small p': None, **{f'p{p}': accuracy(model, ft_te, p) for p in PATCHES}}

    rows = [transfer('FlexiViT', FLEXI_STORE, cheap_patch), transfer('FlexiViT', FLEXI_STORE, small_patch),
            transfer(f'ViT/{vit_patch}', vit_store, cheap_patch),
            transfer('none (random init)', FLEXI_STORE, cheap_patch)]
    ref = rows[1]['tokens x steps']
    for r in rows:
        r['compute vs FT at small p'] = f"{r['tokens x steps'] / ref:.3f}"

    text = (f'sklearn digits at {IMG}x{IMG}; pre-training on digits 0-4 ({len(pre_tr[1])} train images, '
            f'{pre_epochs} epochs = {n_pre} steps), test top-1 (%) on held-out 0-4 ({len(pre_te[1])} images):\n\n'
            + markdown_table(pre_rows, formats=float_formats(pre_rows))
            + f'\n\nTransfer to digits 5-9 ({len(ft_tr[1])} train images, {ft_epochs} epochs = '
              f'{_steps(ft_tr, ft_epochs)} steps, new head, lr {ft_lr}), test top-1 (%) on held-out 5-9 '
              f'({len(ft_te[1])} images) at each evaluation patch:\n\n'
            + markdown_table(rows, formats=float_formats(rows)))
    print(text)
    write_markdown(out + '.md', text)
    write_csv(out + '.csv', [{**r, 'stage': 'pre-train 0-4', 'fine-tune patch': ''} for r in pre_rows]
              + [{**r, 'stage': 'transfer 5-9', 'model': r['pre-training']} for r in rows], CSV_COLS)
    save_figure(lambda fig, axes: _draw(axes[0][0], rows), out + '.png', size=(6.4, 4.2), dpi=120)
    print(f'wrote {out}.md, .csv, .png')
    return text


def _draw(ax, rows):
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
