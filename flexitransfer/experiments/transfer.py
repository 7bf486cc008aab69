"""The paper's resource-efficient transfer, small (``tools/reproduce_transfer.py`` is argparse +
:func:`run_transfer`): pre-train big, fine-tune briefly at a cheap patch, deploy at a smaller one.

* Pre-training (far larger than the fine-tune, as in the paper): a synthetic alphabet of 200 random
  glyphs rendered on the fly (:mod:`.glyphs`; formula-driven pre-training), ``pre_steps`` steps of 64
  images. A FlexiViT (random patch per step, the digits model of :mod:`.digits`) and a plain ViT/8
  (fixed patch 8), same steps, same images.
* Transfer: the real digits (1300 train / 497 test, 48x48), a new zero-initialised 10-way head, a short
  fine-tune (``ft_epochs``) at the cheap patch 12 (4x4 = 16 tokens) with each recipe of :data:`RECIPES`;
  baselines: the FlexiViT fine-tuned directly at the small patch 4 (12x12 = 144 tokens, 9x the compute),
  the ViT/8 fine-tuned at 12, no pre-training at 12. Every fine-tuned model is tested at every patch.
  Fine-tunes run with several seeds (batch order, augmentation, patch draws) from the one pre-training
  of each model; tables give the mean and a 95 % t-interval.

Compute is counted as tokens per image x optimizer steps.
"""
from __future__ import annotations

import os
import os.path as osp
from typing import Dict, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops import resize_patch_embed
from ..reporting import markdown_table, patch_axis, save_figure, write_csv, write_markdown
from . import digits
from .digits import IMG, PATCHES, Net, accuracy, flexi_net, load_digits_48, random_patch_fn, train
from .glyphs import GlyphStream
from .seeds import kept_runs, mean_ci, pool_map, run_and_keep

#: fine-tuning recipes at the cheap patch. big_vision's flexi transfer configs: SGD with momentum 0.9, no
#: weight decay, gradient clipping at 1, linear warm-up then cosine decay, all weights trained.
RECIPES: Dict[str, dict] = {
    'adamw': dict(opt='adamw', lr=5e-4, about='AdamW 5e-4, weight decay 0.05, one-cycle (the digits training recipe)'),
    'sgd': dict(opt='sgd', lr=0.03, about='SGD momentum 0.9, lr 0.03, no weight decay, warm-up + cosine, clip 1 '
                '(big_vision\'s transfer recipe)'),
    'sgd_linear': dict(opt='sgd', lr=0.1, linear=True, about='sgd, backbone frozen: only the head is trained (lr 0.1)'),
    'sgd_frozen_embed': dict(opt='sgd', lr=0.03, freeze_embed=True,
                             about='sgd, patch and position embeddings frozen'),
    'sgd_bb_0.1': dict(opt='sgd', lr=0.03, backbone_lr=0.1, about='sgd, backbone lr x 0.1'),
    'sgd_band_8_16': dict(opt='sgd', lr=0.03, band=(8, 12, 16),
                          about='sgd, a random patch from {8, 12, 16} per step (a band around 12)'),
    'sgd_band_12_24': dict(opt='sgd', lr=0.03, band=(12, 16, 24),
                           about='sgd, a random patch from {12, 16, 24} per step (12 and cheaper)'),
}
#: the recipe of the fixed-patch baselines (fine-tuning at the small patch, the ViT/8, no pre-training)
BASELINE_RECIPE = 'sgd'
NUM_GLYPHS = 50


def _tokens(p):
    return (IMG // p) ** 2


def pretrain(kind: str, steps: int, seed: int = 0, cache: Optional[str] = None) -> Net:
    """Pre-train on glyphs: the FlexiViT (``kind='flexi'``, random patch per step, cross-entropy), the ViT/8
    (``'vit8'``), or the FlexiViT distilled from that ViT/8 (``'flexi_distill'``, the paper's FlexiViT
    recipe: initialised from the teacher, its kernel PI-resized to the store; at a random patch per step it
    matches the teacher's class distribution at p = 8 on the same images, KL divergence, no labels).

    AdamW 1e-3, weight decay 0.05, one-cycle, batch 64 (the digits recipe). With ``cache``, the trained
    model is kept as ``cache/pre_<kind>[_store<S>]_s<seed>_<steps>.pth`` and loaded from there.
    """
    tag = f'_store{digits.FLEXI_STORE[0]}' if kind != 'vit8' else ''
    path = osp.join(cache, f'pre_{kind}{tag}_s{seed}_{steps}.pth') if cache else None
    torch.manual_seed(seed)
    model = Net(8, IMG // 8, 8) if kind == 'vit8' else flexi_net(8)
    model.head = nn.Linear(64, NUM_GLYPHS)
    if path and osp.isfile(path):
        model.load_state_dict(torch.load(path, map_location='cpu', weights_only=True))
        return model.eval()
    teacher = None
    if kind == 'flexi_distill':
        teacher = pretrain('vit8', steps, seed, cache)
        sd = dict(teacher.state_dict())
        sd['backbone.patch_embed.weight'] = resize_patch_embed(
            sd['backbone.patch_embed.weight'].double(), digits.FLEXI_STORE[0], 'pi').float()
        model.load_state_dict(sd)
    from tqdm import tqdm
    stream, patch_of = GlyphStream(NUM_GLYPHS, IMG, seed), random_patch_fn(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=steps, pct_start=0.1)
    model.train()
    for step in tqdm(range(steps), desc=f'pre-train {kind}', mininterval=10):
        x, y = stream.batch(step)
        out = model(x, 8 if kind == 'vit8' else patch_of(step))
        if teacher is None:
            loss = F.cross_entropy(out, y)
        else:
            with torch.no_grad():
                target = F.log_softmax(teacher(x, 8), -1)
            loss = F.kl_div(F.log_softmax(out, -1), target, log_target=True, reduction='batchmean')
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    if path:
        os.makedirs(cache, exist_ok=True)
        torch.save(model.state_dict(), path)
    return model.eval()


@torch.no_grad()
def glyph_accuracy(model: Net, seed: int = 0, batches: int = 8) -> Dict[str, float]:
    """Top-1 (%) on held-out glyph batches (steps the pre-training never draws) at every patch."""
    stream = GlyphStream(NUM_GLYPHS, IMG, seed)
    data = [stream.batch(10 ** 8 + i, 64) for i in range(batches)]
    return {f'p{p}': sum((model(x, p).argmax(-1) == y).sum().item() for x, y in data) / (64 * batches) * 100
            for p in PATCHES}


def finetune(model: Net, data, epochs: int, patch: int, recipe: str, seed: int) -> Net:
    """Fine-tune ``model`` (new head already in place) on ``data`` at ``patch`` with ``RECIPES[recipe]``.

    The digits loop (:func:`.digits.train`: batch 64, translation augmentation) with the recipe's
    optimizer. SGD recipes: momentum 0.9, no weight decay, 10 % linear warm-up then cosine, gradient norm
    clipped at 1.
    """
    r = RECIPES[recipe]
    frozen = ('patch_embed', 'pos_embed') if r.get('freeze_embed') else ()
    head, body = [], []
    for name, prm in model.named_parameters():
        if any(f in name for f in frozen) or (r.get('linear') and not name.startswith('head.')):
            prm.requires_grad_(False)
        elif prm.requires_grad:
            (head if name.startswith('head.') else body).append(prm)
    groups = [{'params': head, 'lr': r['lr']}] + ([{'params': body, 'lr': r['lr'] * r.get('backbone_lr', 1.0)}]
                                                  if body else [])

    def optimizer(steps):
        if r['opt'] == 'adamw':
            opt = torch.optim.AdamW(groups, lr=r['lr'], weight_decay=0.05)
            return opt, torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[gr['lr'] for gr in groups],
                                                            total_steps=steps, pct_start=max(0.1, 2 / steps))
        opt = torch.optim.SGD(groups, lr=r['lr'], momentum=0.9)
        warm = max(1, steps // 10)
        return opt, torch.optim.lr_scheduler.SequentialLR(opt, [
            torch.optim.lr_scheduler.LinearLR(opt, 1e-3, 1.0, warm),
            torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps - warm)], [warm])

    band = r.get('band')
    patch_of = random_patch_fn(seed, band) if band else (lambda s: patch)
    return train(model, data, epochs, patch_of, seed, f'fine-tune {recipe} @ p{patch}', optimizer=optimizer,
                 clip=1.0 if r['opt'] == 'sgd' else None)


def _mean_tokens(recipe: str, patch: int, seed: int, steps: int) -> float:
    band = RECIPES[recipe].get('band')
    if not band:
        return float(_tokens(patch))
    draw = random_patch_fn(seed, band)
    return sum(_tokens(draw(s)) for s in range(steps)) / steps


def _ft_job(args):
    pre, recipe, patch, seed, ft_epochs, pre_steps, cache = args
    torch.set_num_threads(1)
    tr, te = load_digits_48(0)
    if pre == 'none':
        torch.manual_seed(seed)
        model = flexi_net(patch)
    else:
        model = pretrain(pre, pre_steps, 0, cache)
    model.head = nn.Linear(64, 10)
    nn.init.zeros_(model.head.weight)
    nn.init.zeros_(model.head.bias)
    model = finetune(model, tr, ft_epochs, patch, recipe, seed)
    steps = ft_epochs * (len(tr[1]) // 64)
    return {'pre-training': pre, 'recipe': recipe, 'fine-tune patch': patch, 'seed': seed, 'steps': steps,
            'tokens x steps': _mean_tokens(recipe, patch, seed, steps) * steps,
            **{f'p{p}': accuracy(model, te, p) for p in PATCHES}}


@torch.no_grad()
def feature_agreement(model: Net, x: torch.Tensor, ref: int) -> Dict[str, float]:
    """Mean cosine similarity of each image's final class-token features at every patch with those at
    ``ref``: 1 when the backbone says the same thing at every patch size, whatever the head."""
    feats = {p: F.normalize(model.backbone(x, p)[0], dim=-1) for p in PATCHES}
    return {f'p{p}': (feats[p] * feats[ref]).sum(-1).mean().item() for p in PATCHES}


def _pre_job(args):
    kind, steps, cache = args
    torch.set_num_threads(1)
    model = pretrain(kind, steps, 0, cache)
    _, (x, _) = load_digits_48(0)
    glyphs = GlyphStream(NUM_GLYPHS, IMG, 0).batch(10 ** 8 + 100, 512)[0]
    return {'kind': kind, **glyph_accuracy(model),
            **{f'agree {k}': v for k, v in feature_agreement(model, x, 12).items()},
            **{f'agree glyphs {k}': v for k, v in feature_agreement(model, glyphs, 12).items()}}


PRE_NAMES = {'flexi': 'FlexiViT (random p)', 'flexi_distill': 'FlexiViT distilled from ViT/8', 'vit8': 'ViT/8',
             'none': 'none (random init)'}


def run_transfer(pre_steps: int = 3000, ft_epochs: int = 10, cheap_patch: int = 12, small_patch: int = 4,
                 seeds: Sequence[int] = (0, 1, 2), recipes: Sequence[str] = tuple(RECIPES), workers: int = 2,
                 out: str = 'work_dirs/reproduce_transfer/transfer_digits',
                 cache: str = 'work_dirs/reproduce_transfer/cache') -> str:
    """Pre-train on glyphs, fine-tune on digits at the cheap patch (each recipe) and at the small one,
    test every fine-tuned model at every patch.

    Pre-trained models are kept under ``cache``; each fine-tune's result is appended to
    ``OUT.jsonl`` as it comes (a killed run resumes where it stopped). Writes ``OUT.md`` (with its
    provenance), ``OUT.csv``, ``OUT.png``.

    Args:
        pre_steps: pre-training steps (batch 64) of the FlexiViT and of the ViT/8.
        ft_epochs: fine-tuning epochs over the 1300 digits (20 steps each).
        cheap_patch: the cheap fine-tuning patch.
        small_patch: the small (expensive) fine-tuning patch it is compared with.
        seeds: fine-tuning seeds.
        recipes: keys of :data:`RECIPES` tried at the cheap patch (the baselines use :data:`BASELINE_RECIPE`).
        workers: processes (one torch thread each).
        out: OUT, without the extension.
        cache: where the pre-trained models are kept (and found again).

    Returns:
        The Markdown written.

    Raises:
        ValueError: a patch size that is not one of the evaluated ones, or an unknown recipe.
    """
    torch.set_num_threads(1)  # every run, in this process or a worker, at one thread (the provenance says so)
    for p in (cheap_patch, small_patch):
        if p not in PATCHES:
            raise ValueError(f'patch {p} is not one of the evaluated patch sizes {PATCHES}')
    if [r for r in recipes if r not in RECIPES] or BASELINE_RECIPE not in recipes:
        raise ValueError(f'recipes must be among {list(RECIPES)} and include {BASELINE_RECIPE!r}; got {list(recipes)}')
    os.makedirs(cache, exist_ok=True)
    pre_rows = [_pre_job(('vit8', pre_steps, cache))]  # first: it is the distilled FlexiViT's teacher
    pre_rows += list(pool_map(_pre_job, [(k, pre_steps, cache) for k in ('flexi', 'flexi_distill')], workers))
    pre_rows.sort(key=lambda r: list(PRE_NAMES).index(r['kind']))

    key = lambda r: (r['pre-training'], r['recipe'], r['fine-tune patch'], r['seed'])
    done = kept_runs(out + '.jsonl', key, lambda r: r.get('pre_steps') == pre_steps and r['steps'] == ft_epochs * 20)
    plan = ([(pre, r, cheap_patch) for pre in ('flexi', 'flexi_distill') for r in recipes]
            + [('flexi', BASELINE_RECIPE, small_patch),
            ('vit8', BASELINE_RECIPE, cheap_patch), ('none', BASELINE_RECIPE, cheap_patch)])
    jobs = [(pre, rec, p, s, ft_epochs, pre_steps, cache) for s in seeds for pre, rec, p in plan
            if (pre, rec, p, s) not in done]
    print(f'{len(done)} fine-tune(s) kept from {out}.jsonl, {len(jobs)} to run', flush=True)
    run_and_keep(_ft_job, jobs, workers, out + '.jsonl', key, done, extra={'pre_steps': pre_steps},
                 describe=lambda r: (f'{r["pre-training"]} {r["recipe"]} @p{r["fine-tune patch"]} seed {r["seed"]}: '
                                     + ' '.join(f'{p}={r[f"p{p}"]:.1f}' for p in PATCHES)))
    rows = summarize(done, plan, seeds, small_patch)
    return write_transfer(pre_rows, rows, pre_steps, ft_epochs, cheap_patch, small_patch, out)


def summarize(done: dict, plan, seeds, small_patch: int) -> list:
    """One row per (pre-training, recipe, fine-tune patch): mean and 95 % interval at every patch, the
    best patch smaller than the fine-tuning one, and compute relative to fine-tuning at ``small_patch``."""
    rows = []
    for pre, rec, patch in plan:
        runs = [done[(pre, rec, patch, s)] for s in seeds if (pre, rec, patch, s) in done]
        if not runs:
            continue
        row = {'pre-training': PRE_NAMES[pre], 'recipe': rec, 'fine-tune patch': patch, 'seeds': len(runs),
               'steps': runs[0]['steps'], 'tokens x steps': sum(r['tokens x steps'] for r in runs) / len(runs)}
        for p in PATCHES:
            row[f'p{p}'], row[f'p{p} ±'] = mean_ci([r[f'p{p}'] for r in runs])
        smaller = [p for p in PATCHES if p < patch]
        if smaller:
            best = max(smaller, key=lambda p: row[f'p{p}'])
            row['best smaller p'] = best
            row['gain at best smaller p'] = row[f'p{best}'] - row[f'p{patch}']
            row['gain ±'] = mean_ci([r[f'p{best}'] - r[f'p{patch}'] for r in runs])[1]
        rows.append(row)
    ref = next((r['tokens x steps'] for r in rows if r['fine-tune patch'] == small_patch), None)
    for r in rows:
        r['compute vs FT at small p'] = r['tokens x steps'] / ref if ref else float('nan')
    return rows


def write_transfer(pre_rows, rows, pre_steps, ft_epochs, cheap_patch, small_patch, out) -> str:
    """Tables, CSV and plot of :func:`run_transfer`."""
    pre_show = [{'model': PRE_NAMES[r['kind']], 'steps': pre_steps, **{f'p{p}': r[f'p{p}'] for p in PATCHES}}
                for r in pre_rows]
    show = []
    for r in rows:
        cell = lambda p: f"{r[f'p{p}']:.1f} ± {r[f'p{p} ±']:.1f}" if r['seeds'] > 1 else f"{r[f'p{p}']:.1f}"
        show.append({'pre-training': r['pre-training'], 'recipe': r['recipe'], 'FT patch': r['fine-tune patch'],
                     'compute': f"{r['compute vs FT at small p']:.2f}", **{f'p{p}': cell(p) for p in PATCHES},
                     'best smaller p: gain': (f"p{r['best smaller p']}: {r['gain at best smaller p']:+.1f} ± "
                                              f"{r['gain ±']:.1f}" if 'best smaller p' in r else '')})
    about = '\n'.join(f'- `{k}`: {v["about"]}' for k, v in RECIPES.items())
    text = (f'Pre-training: {NUM_GLYPHS} synthetic glyph classes rendered on the fly at {IMG}x{IMG}, {pre_steps} '
            f'steps of 64 images; held-out glyph top-1 (%) at each patch:\n\n'
            + markdown_table(pre_show, formats={f'p{p}': '{:.1f}' for p in PATCHES})
            + '\n\nHow alike the pre-trained backbones see an image at each patch: mean cosine similarity of the final '
              'class-token features with those at p12, on 512 held-out glyphs and on the 497 digits test images '
              '(before any fine-tuning):\n\n'
            + markdown_table([{'model': PRE_NAMES[r['kind']], 'images': images,
                               **{f'p{p}': r[f'agree {key}p{p}'] for p in PATCHES}}
                              for r in pre_rows for images, key in (('glyphs', 'glyphs '), ('digits', ''))],
                             formats={f'p{p}': '{:.3f}' for p in PATCHES})
            + f'\n\nTransfer to the real digits (1300 train / 497 test images, new zero-initialised head, '
              f'{ft_epochs} epochs = {ft_epochs * 20} steps); test top-1 (%) at each evaluation patch, mean ± 95 % '
              f'interval over fine-tuning seeds; compute = tokens x steps relative to fine-tuning at p{small_patch}; '
              f'last column: the best patch below the fine-tuning one and its gain over the fine-tuning patch '
              f'(paired over seeds). Recipes:\n\n{about}\n\n'
            + markdown_table(show))
    print(text)
    write_markdown(out + '.md', text)
    cols = ['pre-training', 'recipe', 'fine-tune patch', 'seeds', 'steps', 'tokens x steps',
            'compute vs FT at small p'] + [c for p in PATCHES for c in (f'p{p}', f'p{p} ±')] + \
        ['best smaller p', 'gain at best smaller p', 'gain ±']
    write_csv(out + '.csv', [{'pre-training': r['model'], 'recipe': 'pre-training (glyphs)', 'steps': pre_steps,
                              **{f'p{p}': r[f'p{p}'] for p in PATCHES}} for r in pre_show]
              + [{'pre-training': PRE_NAMES[r['kind']], 'recipe': f'feature agreement with p12 ({images})',
                  **{f'p{p}': r[f'agree {key}p{p}'] for p in PATCHES}}
                 for r in pre_rows for images, key in (('glyphs', 'glyphs '), ('digits', ''))] + rows, cols)
    save_figure(lambda fig, axes: _draw(axes[0][0], rows, cheap_patch, small_patch), out + '.png',
                size=(7.2, 4.6), dpi=120)
    print(f'wrote {out}.md, .csv, .png')
    return text


def _draw(ax, rows, cheap_patch, small_patch):
    for r in rows:
        main = r['recipe'] == BASELINE_RECIPE
        # the fixed-patch baseline recipe of every pre-training and the band (the rest: the table)
        if r['recipe'] not in (BASELINE_RECIPE, 'sgd_band_8_16') or r['pre-training'] == PRE_NAMES['none']:
            continue
        ys = [r[f'p{p}'] for p in PATCHES]
        err = [0 if r['seeds'] < 2 else r[f'p{p} ±'] for p in PATCHES]
        label = (f"{r['pre-training']}, {r['recipe']} @ p{r['fine-tune patch']} "
                 f"(compute {r['compute vs FT at small p']:.2f})")
        line = ax.errorbar(PATCHES, ys, yerr=err, marker='o', ms=4, capsize=2, lw=2.2 if main else 1.0,
                           ls='-' if main else ':', label=label)
        ax.plot([r['fine-tune patch']], [r[f"p{r['fine-tune patch']}"]], '*', ms=13, alpha=0.5,
                color=line[0].get_color())
    patch_axis(ax, PATCHES, 'patch size at evaluation (48x48 input); ★ = fine-tuning patch')
    ax.set_ylabel('digits test top-1 (%)')
    ax.set_title(f'Pre-train on glyphs, fine-tune on digits at p{cheap_patch} (or p{small_patch}), test at every patch')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6.5)
