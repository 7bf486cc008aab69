"""Why the digits FlexiViT is weak at p = 12 and 16 (``tools/study_dip.py`` is argparse + :func:`run_dip`).

The headline digits FlexiViT (:mod:`.digits`: 48x48 inputs, patches 4 ... 24, stored kernel 24x24, stored
position grid 6x6) scores well at p = 4, 6, 8 and 24 and worse at 12 and 16. Each variant below changes one
thing and keeps everything else (data split, initialisation seed, batch order, augmentation, patch draws,
100 epochs) as in the earlier headline run (store 24), so ``baseline`` at seed 0 is that run's FlexiViT
column; ``store4`` is the digits FlexiViT now (:data:`.digits.FLEXI_STORE`).

The closed-form part (:func:`store_reads`) needs no training: which stored kernel pixels each patch size's
PI-resized kernel reads, and how strongly. Without antialias a bilinear shrink by an integer factor reads
only the two nearest stored pixels per axis, so p = 4, 6, 8 read small, nearly disjoint subsets of a 24x24
store (each has parameters of its own), while p = 12 and 16 read every stored pixel, the same ones p = 24
uses as they are: 12, 16 and 24 share one kernel and compete for it.
"""
from __future__ import annotations

import os
import os.path as osp
from typing import Dict, List, Sequence

import torch

from ..ops import kernel_resize_matrix
from ..reporting import markdown_table, patch_axis, save_figure, write_csv, write_markdown
from .digits import IMG, PATCHES, Net, accuracy, load_digits_48, random_patch_fn, train
from .seeds import kept_runs, mean_ci, run_and_keep

#: the FlexiViT of the earlier headline run, which every variant changes in one thing
OLD_STORE, OLD_GRID = 24, 6

#: name -> (what changes, the Net / training arguments that differ from the headline FlexiViT)
VARIANTS: Dict[str, tuple] = {
    'baseline': ('the earlier headline FlexiViT: store 24, grid 6, PI-resize, uniform p, 100 epochs', {}),
    'pi_aa': ('PI-resize against an antialiased basis (every p reads every stored pixel)',
              {'kernel_resize': 'pi_aa'}),
    'store4': ('stored kernel 4x4 (the smallest patch): every patch size an exact PI up-resize; the new default',
               {'store': 4}),
    'store12': ('stored kernel 12x12 (inside the patch range, as the paper\'s 32 in 8 ... 48)', {'store': 12}),
    'store48': ('stored kernel 48x48 (every patch size a down-resize, sharper)', {'store': 48}),
    'grid12': ('stored position grid 12x12 (the largest grid used) instead of 6x6', {'grid': 12}),
    'p12_16_x2': ('p = 12 and 16 drawn twice as often as the others', {'probs': [1, 1, 1, 2, 2, 1]}),
    'epochs300': ('3x the training steps (300 epochs)', {'epochs': 300}),
    # the control: what one patch size can give on this data when a model is trained for it alone
    'vit12': ('a plain ViT trained at p = 12 only (store 12, grid 4): the dedicated model', {'fixed': 12}),
    'vit16': ('a plain ViT trained at p = 16 only (store 16, grid 3)', {'fixed': 16}),
    'vit24': ('a plain ViT trained at p = 24 only (store 24, grid 2)', {'fixed': 24}),
}


def variant_epochs(variant: str, epochs: int) -> int:
    """The training epochs of ``variant`` when the headline run trains ``epochs``."""
    return epochs * VARIANTS[variant][1].get('epochs', 100) // 100


def build(variant: str) -> Net:
    """The FlexiViT of ``variant`` (untrained, initialised from the current torch seed)."""
    kw = VARIANTS[variant][1]
    if 'fixed' in kw:
        return Net(kw['fixed'], IMG // kw['fixed'], kw['fixed'])
    return Net(kw.get('store', OLD_STORE), kw.get('grid', OLD_GRID), 8,
               kernel_resize=kw.get('kernel_resize', 'pi'))


def run_one(variant: str, seed: int, epochs: int = 100) -> dict:
    """Train ``variant`` with ``seed`` (as :func:`.digits.run_digits` trains its FlexiViT) and test it.

    Args:
        variant: a key of :data:`VARIANTS`.
        seed: data split, initialisation, batch order, augmentation and patch draws.
        epochs: training epochs (a variant that sets its own multiplies it by ``its epochs / 100``).

    Returns:
        ``{'variant', 'seed', 'epochs', 'p4': top-1 %, ...}``.
    """
    torch.set_num_threads(1)
    kw = VARIANTS[variant][1]
    epochs = variant_epochs(variant, epochs)
    tr, te = load_digits_48(seed)
    torch.manual_seed(seed)
    patch_fn = (lambda s: kw['fixed']) if 'fixed' in kw else random_patch_fn(seed, PATCHES, kw.get('probs'))
    model = train(build(variant), tr, epochs, patch_fn, seed, f'{variant} seed {seed}')
    return {'variant': variant, 'seed': seed, 'epochs': epochs, **{f'p{p}': accuracy(model, te, p) for p in PATCHES}}


def store_reads(store: int = OLD_STORE, patches: Sequence[int] = PATCHES, mode: str = 'pi') -> List[dict]:
    """Which stored kernel pixels the kernel at each patch size reads (closed form, no training).

    Args:
        store: stored kernel size.
        patches: patch sizes.
        mode: kernel resize mode (:data:`~flexitransfer.ops.KERNEL_RESIZE_MODES`).

    Returns:
        One row per patch: ``read %`` (share of stored pixels with a non-zero weight), ``flat gain``
        (the token of a flat patch relative to the stored kernel's, for a flat stored kernel: 1 means
        the same response at every patch size).
    """
    rows = []
    for p in patches:
        m = kernel_resize_matrix(store, p, mode) if p != store else torch.eye(store * store, dtype=torch.float64)
        rows.append({'patch': p, 'read %': 100.0 * (m.abs() > 1e-9).any(0).double().mean().item(),
                     'flat gain': (m.sum() / (store * store)).item()})
    return rows


def _job(args):
    return run_one(*args)


def run_dip(variants: Sequence[str] = tuple(VARIANTS), seeds: Sequence[int] = (0, 1, 2), epochs: int = 100,
            workers: int = 2, out: str = 'work_dirs/study_dip/digits_dip',
            only_seed0: Sequence[str] = ('epochs300',)) -> str:
    """Train every (variant, seed), keep each result as it comes (``OUT.jsonl``: a killed study resumes
    where it stopped), then write the table of means and 95 % intervals.

    Args:
        variants: keys of :data:`VARIANTS`.
        seeds: seeds of each variant.
        epochs: training epochs of the headline run.
        workers: processes (one torch thread each; 1 runs in this process).
        out: OUT (``.jsonl`` runs, ``.md``, ``.csv``, ``.png``).
        only_seed0: variants run at the first seed only (the long ones).

    Returns:
        The Markdown written.
    """
    torch.set_num_threads(1)  # every run, in this process or a worker, at one thread (the provenance says so)
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f'unknown variant(s) {unknown}; choose from {list(VARIANTS)}')
    os.makedirs(osp.dirname(out) or '.', exist_ok=True)
    done = kept_runs(out + '.jsonl', lambda r: (r['variant'], r['seed']),
                     lambda r: r['epochs'] == variant_epochs(r['variant'], epochs))
    jobs = [(v, s, epochs) for s in seeds for v in variants
            if (v, s) not in done and not (v in only_seed0 and s != seeds[0])]
    jobs.sort(key=lambda j: -variant_epochs(j[0], epochs))  # the long ones first
    print(f'{len(done)} run(s) kept from {out}.jsonl, {len(jobs)} to train on {workers} worker(s)', flush=True)
    run_and_keep(_job, jobs, workers, out + '.jsonl', lambda r: (r['variant'], r['seed']), done,
                 describe=lambda r: f'{r["variant"]} seed {r["seed"]}: '
                                    + ' '.join(f'{p}={r[p]:.1f}' for p in r if p.startswith('p')))
    return write_dip(done, variants, out, epochs)


def write_dip(done: dict, variants: Sequence[str], out: str, epochs: int) -> str:
    """The study's tables (means with 95 % t-intervals over seeds, the closed-form store reads), CSV, plot."""
    rows = []
    for v in variants:
        runs = [r for (name, _), r in sorted(done.items()) if name == v]
        if not runs:
            continue
        row = {'variant': v, 'seeds': len(runs)}
        for p in PATCHES:
            m, ci = mean_ci([r[f'p{p}'] for r in runs])
            row[f'p{p}'], row[f'p{p} ±'] = m, ci
        cis = [row[f'p{p} ±'] for p in PATCHES]
        row['± max'] = max(cis) if len(runs) > 1 else ''
        for p in PATCHES:
            row[f'p{p} ±'] = row[f'p{p} ±'] if len(runs) > 1 else ''
        row['dip'] = '' if 'fixed' in VARIANTS[v][1] else min(row['p12'], row['p16']) - row['p8']
        row['what changes'] = VARIANTS[v][0]
        rows.append(row)
    cols = ['variant', 'seeds'] + [f'p{p}' for p in PATCHES] + ['dip', 'what changes']
    def cell(r, p):
        if VARIANTS[r['variant']][1].get('fixed', p) != p:  # a dedicated ViT: only its own patch
            return ''
        return f"{r[f'p{p}']:.1f} ± {r[f'p{p} ±']:.1f}" if r['seeds'] > 1 else f"{r[f'p{p}']:.1f}"
    show = [{**r, **{f'p{p}': cell(r, p) for p in PATCHES}} for r in rows]
    reads = {mode: store_reads(mode=mode) for mode in ('pi', 'pi_aa')}
    read_rows = [{'patch': p, **{f'{k} ({mode})': reads[mode][i][k] for mode in reads for k in
                                 ('read %', 'flat gain')}} for i, p in enumerate(PATCHES)]
    text = (f'sklearn digits at {IMG}x{IMG}, FlexiViT (4 layers, 64 dims) trained {epochs} epochs at a random '
            f'patch in {PATCHES} per step; test top-1 (%), mean ± 95 % interval over seeds (t); dip = '
            'min(p12, p16) - p8 (negative: a dip). One change per variant:\n\n'
            + markdown_table(show, cols, {'dip': '{:+.1f}'})
            + f'\n\nStored kernel pixels read by the kernel at each patch (store {OLD_STORE}x{OLD_STORE}; '
              'closed form, no training; flat gain: token of a flat patch relative to the store\'s, for a flat '
              'stored kernel):\n\n'
            + markdown_table(read_rows, formats={k: '{:.0f}' if '%' in k else '{:.3f}' for k in read_rows[0]
                                                 if k != 'patch'}))
    write_markdown(out + '.md', text)
    write_csv(out + '.csv', rows, ['variant', 'seeds'] + [c for p in PATCHES for c in (f'p{p}', f'p{p} ±')]
              + ['± max', 'dip', 'what changes'])

    def draw(fig, axes):
        ax = axes[0][0]
        for r in rows:
            ys = [r[f'p{p}'] for p in PATCHES]
            err = [0 if r['seeds'] < 2 else r[f'p{p} ±'] for p in PATCHES]
            if 'fixed' in VARIANTS[r['variant']][1]:  # a dedicated ViT: only its own patch counts
                p = VARIANTS[r['variant']][1]['fixed']
                ax.errorbar([p], [r[f'p{p}']], yerr=[err[PATCHES.index(p)]], fmt='k*', ms=11, capsize=2,
                            label='ViT trained at that p only' if p == 12 else None)
                continue
            ax.errorbar(PATCHES, ys, yerr=err, marker='o', ms=4, capsize=2,
                        lw=2.5 if r['variant'] == 'baseline' else 1.2, label=f"{r['variant']} (n={r['seeds']})")
        patch_axis(ax, PATCHES, 'patch size at evaluation (48x48 input)')
        ax.set_ylabel('test top-1 (%)')
        ax.set_title('The p = 12 / 16 dip: one change at a time')
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    save_figure(draw, out + '.png', size=(7, 4.6), dpi=120)
    print(text)
    print(f'wrote {out}.md, .csv, .png')
    return text
