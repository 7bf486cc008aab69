"""Results as a Markdown table, a CSV and a PNG: written once, used by every tool that reports."""
from __future__ import annotations

import csv
import os
import os.path as osp
from typing import Callable, Dict, List, Optional, Sequence


def fmt_value(v, spec: Optional[str] = None) -> str:
    """A cell: ``spec`` (e.g. '{:.2f}') when given, floats with two decimals, anything else as str."""
    if spec is not None and v is not None and v != '':
        return spec.format(v)
    if isinstance(v, float):
        return f'{v:.2f}'
    return '' if v is None else str(v)


def markdown_table(rows: Sequence[dict], cols: Optional[Sequence[str]] = None,
                   formats: Optional[Dict[str, str]] = None, headers: Optional[Dict[str, str]] = None) -> str:
    """A Markdown table of ``rows`` (dicts) over ``cols`` (default: the first row's keys)."""
    cols = list(cols or (rows[0].keys() if rows else []))
    formats, headers = formats or {}, headers or {}
    lines = ['| ' + ' | '.join(headers.get(c, c) for c in cols) + ' |', '|' + '---|' * len(cols)]
    lines += ['| ' + ' | '.join(fmt_value(r.get(c), formats.get(c)) for c in cols) + ' |' for r in rows]
    return '\n'.join(lines)


def write_csv(path: str, rows: Sequence, cols: Sequence[str]) -> str:
    """``rows`` (dicts, or sequences in ``cols`` order) as a CSV with a header line."""
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path, 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in rows:
            w.writerow([r.get(c, '') for c in cols] if isinstance(r, dict) else list(r))
    return path


def write_table(out_prefix: str, rows: List[dict], cols: Optional[Sequence[str]] = None,
                formats: Optional[Dict[str, str]] = None, text_before: str = '', text_after: str = '',
                headers: Optional[Dict[str, str]] = None) -> str:
    """``OUT.md`` (optional text around the table) and ``OUT.csv``; returns the Markdown."""
    cols = list(cols or (rows[0].keys() if rows else []))
    md = '\n\n'.join(t for t in (text_before.strip(), markdown_table(rows, cols, formats, headers),
                                 text_after.strip()) if t)
    os.makedirs(osp.dirname(osp.abspath(out_prefix)), exist_ok=True)
    with open(out_prefix + '.md', 'w') as f:
        f.write(md + '\n')
    write_csv(out_prefix + '.csv', rows, cols)
    return md


def save_figure(draw: Callable, path: str, nrows: int = 1, ncols: int = 1, size=(5.0, 3.8), dpi: int = 130,
                **subplot_kw) -> str:
    """A PNG drawn by ``draw(fig, axes)`` (axes: a 2-d array), laid out without clipped labels."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False,
                             **subplot_kw)
    try:
        draw(fig, axes)
        fig.tight_layout()
        os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
        fig.savefig(path, dpi=dpi, bbox_inches='tight')
    finally:
        plt.close(fig)
    return path


def patch_axis(ax, patches: Sequence[int], label: str) -> None:
    """An x axis of patch sizes: log scale, one tick per patch size, no minor tick labels."""
    import matplotlib.ticker
    ax.set_xscale('log')
    ax.set_xticks(list(patches), [str(p) for p in patches])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel(label)
