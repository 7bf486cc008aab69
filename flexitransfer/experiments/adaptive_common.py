"""The adaptive-compute studies' shared parts (``adaptive_digits``, ``adaptive_seg``): a result row, the
detail thresholds of mixed policies, interleaved latency, the token-savings table and the outputs
(Markdown table + CSV through ``flexitransfer.reporting``, two figures of at most six series each).

A row: ``method`` ('(a) uniform', '(b) cascade', '(c) mixed zero-shot', '(d) mixed after mixed FT',
"(d') uniform after mixed FT", '(e) ... (control)'), ``setting``, ``top1`` (the study's metric, %),
``mean_tokens`` (patch tokens per image), ``mflops``, ``latency_ms`` (None: not timed) and ``note``.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
import torch

from ..adaptive import laplacian_detail, vit_flops
from ..benchmark.timing import interleaved_ms
from ..reporting import pareto_front, save_figure, write_table

__all__ = ['ROW_COLS', 'token_row', 'detail_thresholds', 'add_latency', 'pareto_front', 'savings_table',
           'write_rows', 'write_study']

ROW_COLS = ['method', 'setting', 'top1', 'mean_tokens', 'mflops', 'latency_ms', 'note']
_FORMATS = {'top1': '{:.1f}', 'mean_tokens': '{:.1f}', 'mflops': '{:.1f}', 'latency_ms': '{:.2f}'}
_HEADERS = {'mean_tokens': 'mean tokens', 'mflops': 'MFLOPs', 'latency_ms': 'latency ms'}
#: the adaptive variants the second figure draws against the uniform Pareto front
VARIANTS = ('(b) cascade', '(c) mixed zero-shot', '(d) mixed after mixed FT', '(e) mixed after uniform FT (control)')


def token_row(method: str, setting: str, top1: float, tokens, backbone, img_hw: Tuple[int, int],
              num_classes: int = 0, note: str = '') -> dict:
    """A result row from the patch tokens per image.

    Args:
        method (str): the row's method.
        setting (str): its setting.
        top1 (float): the metric (%).
        tokens (float | np.ndarray): patch tokens, one number or one per image.
        backbone (FlexiViT): whose FLOPs are counted (``adaptive.vit_flops``).
        img_hw (tuple[int, int]): the image size.
        num_classes (int): classes of the linear head counted with it (0: none).
        note (str): the row's note.

    Returns:
        dict: the row (``latency_ms`` None).
    """
    t = float(np.mean(tokens))
    fl = float(np.mean([vit_flops(backbone, n, img_hw, num_classes) for n in np.atleast_1d(tokens)])) / 1e6
    return dict(method=method, setting=setting, top1=top1, mean_tokens=t, mflops=fl, latency_ms=None, note=note)


def detail_thresholds(x: torch.Tensor, s: int, qs: Sequence[float]) -> List[float]:
    """Detail-score thresholds of mixed policies: the ``qs`` quantiles of the level-1 and level-2 scores of
    images ``x`` at finest patch ``s`` (``adaptive.laplacian_detail``)."""
    d = laplacian_detail(x, s, 3)
    vals = torch.cat([d[1].flatten(), d[2].flatten()])
    return [float(torch.quantile(vals, q)) for q in qs]


def add_latency(rows: List[dict], fns: Dict[str, Callable[[], None]], runs: int, images: int) -> None:
    """Time ``fns`` (name ``f"{method} {setting}"`` -> a run over ``images`` images at batch 1) interleaved
    in this process (``runs`` rounds; 0: NaN) and set each matching row's ``latency_ms`` per image."""
    ms = interleaved_ms(fns, runs=runs, warmup=1) if runs else {k: float('nan') for k in fns}
    for r in rows:
        k = f"{r['method']} {r['setting']}"
        if k in ms:
            r['latency_ms'] = ms[k] / images


def savings_table(rows: List[dict], tol: float = 1e-3, metric: str = 'top-1') -> str:
    """Against each uniform patch on the uniform Pareto front (no other uniform patch is as accurate with
    fewer tokens): the adaptive row (cascade, mixed zero-shot, mixed after mixed FT) with the fewest mean
    tokens reaching its accuracy, and the most accurate adaptive row within its token count.

    Args:
        rows (list[dict]): the study's rows.
        tol (float): metric differences up to ``tol`` count as equal.
        metric (str): the metric's name in the header.

    Returns:
        str: a Markdown table.
    """
    front = pareto_front([r for r in rows if r['method'] == '(a) uniform'], tol=tol)
    adaptive = [r for r in rows if r['method'].startswith(('(b)', '(c)', '(d)')) and not r['method'].startswith("(d')")]
    out = [f'| uniform (Pareto front) | {metric} | tokens | fewest-token adaptive row reaching its {metric} | '
           f'{metric} | tokens | token saving | best adaptive row within its tokens | {metric} |',
           '|---|---|---|---|---|---|---|---|---|']
    for u in front:
        ok = [r for r in adaptive if r['top1'] >= u['top1'] - tol]
        cheap = [r for r in adaptive if r['mean_tokens'] <= u['mean_tokens'] + tol]
        c = max(cheap, key=lambda r: (r['top1'], -r['mean_tokens'])) if cheap else None
        cell_c = f"{c['method']} {c['setting']} | {c['top1']:.1f}" if c else 'none | '
        if ok:
            b = min(ok, key=lambda r: r['mean_tokens'])
            sv = 1 - b['mean_tokens'] / u['mean_tokens']
            cell_b = (f"{b['method']} {b['setting']} | {b['top1']:.1f} | {b['mean_tokens']:.1f} | "
                      f"{'%.0f%%' % (100 * sv) if sv > tol else 'none'}")
        else:
            cell_b = 'none reaches it | | | none'
        out.append(f"| {u['setting']} | {u['top1']:.1f} | {u['mean_tokens']:.0f} | {cell_b} | {cell_c} |")
    return '\n'.join(out)


def write_study(study: dict, out_prefix: str) -> Tuple[str, List[str]]:
    """A study's outputs (``write_rows`` of its ``rows``, ``title``, ``metric``, with its ``text`` before the
    table and its ``savings`` after it).

    Args:
        study (dict): what ``adaptive_digits.digits_study`` or ``adaptive_seg.seg_study`` returns.
        out_prefix (str): OUT (e.g. ``docs/results/adaptive_digits``).

    Returns:
        tuple[str, list[str]]: the Markdown written (without its provenance line) and the files.
    """
    return write_rows(study['rows'], out_prefix, study['title'], study['metric'], study['text'], study['savings'])


def write_rows(rows: List[dict], out_prefix: str, title: str, metric: str = 'top-1 (%)', text_before: str = '',
               text_after: str = '') -> Tuple[str, List[str]]:
    """The study's outputs: ``OUT.md`` (text, the rows' table, text) and ``OUT.csv`` (``reporting.write_table``),
    ``OUT.png`` (the adaptive variants against the uniform Pareto front) and ``OUT_uniform.png`` (the uniform
    patches and their Pareto front).

    Args:
        rows (list[dict]): the rows (``ROW_COLS``).
        out_prefix (str): OUT.
        title (str): the figures' title.
        metric (str): the metric's column header and axis label.
        text_before (str): Markdown before the table.
        text_after (str): Markdown after it.

    Returns:
        tuple[str, list[str]]: the Markdown (what a tool prints) and the files written.
    """
    md = write_table(out_prefix, rows, ROW_COLS, _FORMATS, text_before, text_after, dict(_HEADERS, top1=metric))
    save_figure(lambda fig, axes: draw_variants(axes[0, 0], rows, title, metric), out_prefix + '.png',
                size=(6.4, 4.6), dpi=120)
    save_figure(lambda fig, axes: draw_uniform(axes[0, 0], rows, title, metric), out_prefix + '_uniform.png',
                size=(6.4, 4.6), dpi=120)
    return md, [out_prefix + e for e in ('.md', '.csv', '.png', '_uniform.png')]


def draw_uniform(ax, rows: List[dict], title: str, metric: str) -> None:
    """Metric against mean tokens at every uniform patch (points labelled by patch) and their Pareto front."""
    uni = sorted([r for r in rows if r['method'] == '(a) uniform'], key=lambda r: r['mean_tokens'])
    ax.plot([r['mean_tokens'] for r in uni], [r['top1'] for r in uni], 'o', ms=6, label='uniform patch')
    for r in uni:
        ax.annotate(r['setting'], (r['mean_tokens'], r['top1']), fontsize=8, xytext=(4, -10),
                    textcoords='offset points')
    front = pareto_front(uni)
    ax.plot([r['mean_tokens'] for r in front], [r['top1'] for r in front], '-', lw=1.5,
            label='Pareto front (fewest tokens for its accuracy)')
    _axes(ax, f'{title}: uniform patches', metric)


def draw_variants(ax, rows: List[dict], title: str, metric: str) -> None:
    """The Pareto front of each adaptive variant's settings against the uniform patches' front (and the
    calibrated cascade): at most six series."""
    front = pareto_front([r for r in rows if r['method'] == '(a) uniform'])
    ax.plot([r['mean_tokens'] for r in front], [r['top1'] for r in front], 'k--', lw=1.5, marker='o', ms=4,
            label='uniform patches (Pareto front)')
    for i, name in enumerate(VARIANTS):  # a fixed colour and marker per variant, in every study
        f = pareto_front([r for r in rows if r['method'] == name])
        if f:
            ax.plot([r['mean_tokens'] for r in f], [r['top1'] for r in f], marker='s^vD'[i], ms=5, lw=1.2,
                    color=f'C{i}', ls=':' if 'control' in name else '-', label=name)
    cal = [r for r in rows if r['method'] == '(b) cascade' and 'calibrated' in r['setting']]
    if cal:
        ax.plot([r['mean_tokens'] for r in cal], [r['top1'] for r in cal], '*', ms=13, color='k', alpha=0.6,
                label='cascade, calibrated thresholds')
    _axes(ax, f'{title}: adaptive variants (Pareto fronts)', metric)


def _axes(ax, title: str, metric: str) -> None:
    ax.set_xscale('log')
    ax.set_xlabel('mean patch tokens per image')
    ax.set_ylabel(metric)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
