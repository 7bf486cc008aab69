"""Results as a Markdown table, a CSV and a PNG: written once, used by every tool that reports.

Every Markdown results file starts with its :func:`provenance` (command, commit, CPU, threads, date).
CSVs carry no such header: tests and tools read them with a plain ``csv.DictReader``.
"""
from __future__ import annotations

import csv
import datetime
import os
import os.path as osp
import platform
import shlex
import subprocess
import sys
from typing import Callable, Dict, List, Optional, Sequence

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))  # the repository (tools/, configs/, docs/)


def _git(*args: str) -> str:
    try:
        return subprocess.run(['git', *args], cwd=ROOT, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ''


def cpu_name() -> str:
    """The CPU model and its widest vector ISA, e.g. 'AMD EPYC (AVX-512)': results differ by ISA (other kernels)."""
    model, flags = platform.processor() or platform.machine() or 'unknown', ''
    try:
        with open('/proc/cpuinfo') as f:
            lines = f.read().splitlines()
        model = next((ln.split(':', 1)[1].strip() for ln in lines if ln.startswith('model name')), model)
        flags = next((ln for ln in lines if ln.startswith('flags')), '') + ' '
    except OSError:
        return model
    isa = 'AVX-512' if ' avx512f ' in flags else 'AVX2' if ' avx2 ' in flags else 'no AVX2'
    return f'{model} ({isa})'


def _command() -> str:
    """The running program as typed from the repository root: ``python tools/x.py ARGS``."""
    argv = list(sys.argv) or ['python']
    prog = argv[0]
    if prog.endswith('.py') and osp.isfile(prog):
        path = osp.abspath(prog)
        rel = osp.relpath(path, ROOT)
        return shlex.join(['python', path if rel.startswith('..') else rel] + argv[1:])
    return shlex.join([osp.basename(prog)] + argv[1:])


def provenance(command: Optional[str] = None) -> str:
    """One Markdown line saying what produced a results file, where and when.

    Args:
        command: the command shown; default the running program (``sys.argv``, its script path made
            relative to the repository root).

    Returns:
        ``Command: `...` · commit abc1234 [(+ uncommitted changes)] · CPU: <model> · threads: <n> ·
        date: <UTC ISO date>`` (plus ``· GPU: <name>`` when torch sees a CUDA device).
    """
    import torch
    commit = _git('rev-parse', '--short', 'HEAD') or 'unknown'
    if commit != 'unknown' and _git('status', '--porcelain'):
        commit += ' (+ uncommitted changes)'
    parts = [f'Command: `{command if command is not None else _command()}`', f'commit {commit}',
             f'CPU: {cpu_name()}', f'threads: {torch.get_num_threads()}']
    if torch.cuda.is_available():
        parts.append(f'GPU: {torch.cuda.get_device_name()}')
    parts.append(f'date: {datetime.datetime.now(datetime.timezone.utc).date().isoformat()}')
    return ' · '.join(parts)


_provenance = provenance  # write_table's ``provenance`` argument hides the function inside it


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
    """``rows`` (dicts, or sequences in ``cols`` order) as a CSV with a header line (no provenance:
    its readers take the first line as the header)."""
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path, 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in rows:
            w.writerow([r.get(c, '') for c in cols] if isinstance(r, dict) else list(r))
    return path


def write_markdown(path: str, text: str, provenance: bool = True, command: Optional[str] = None) -> str:
    """A Markdown results file: its :func:`provenance` line, a blank line, then ``text``.

    Args:
        path: the file (its folder is made).
        text: the Markdown body.
        provenance: head the file with the provenance line.
        command: the command that line shows (default: the running program).

    Returns:
        ``path``.
    """
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path, 'w') as f:
        f.write((_provenance(command) + '\n\n' if provenance else '') + text.rstrip('\n') + '\n')
    return path


def write_table(out_prefix: str, rows: List[dict], cols: Optional[Sequence[str]] = None,
                formats: Optional[Dict[str, str]] = None, text_before: str = '', text_after: str = '',
                headers: Optional[Dict[str, str]] = None, provenance: bool = True) -> str:
    """``OUT.md`` (the provenance line, optional text around the table) and ``OUT.csv``.

    Args:
        out_prefix: OUT, without the extension.
        rows: the table rows (dicts).
        cols: the columns (default: the first row's keys).
        formats: column -> format spec of its cells (e.g. ``'{:.1f}'``), Markdown only.
        text_before: Markdown before the table.
        text_after: Markdown after it.
        headers: column -> its Markdown header (default the column name).
        provenance: head OUT.md with :func:`provenance`.

    Returns:
        The Markdown of text and table, without the provenance line (what a tool prints).
    """
    cols = list(cols or (rows[0].keys() if rows else []))
    md = '\n\n'.join(t for t in (text_before.strip(), markdown_table(rows, cols, formats, headers),
                                 text_after.strip()) if t)
    write_markdown(out_prefix + '.md', md, provenance)
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


def pareto_front(rows: Sequence[dict], cost: str = 'mean_tokens', value: str = 'top1',
                 tol: float = 0.0) -> List[dict]:
    """The rows no other row beats: none as good (within ``tol``) at a strictly lower cost; sorted by cost.

    Args:
        rows (Sequence[dict]): result rows.
        cost (str): the cost key.
        value (str): the metric key (higher is better).
        tol (float): metric differences up to ``tol`` count as equal.

    Returns:
        list[dict]: the front, cheapest first.
    """
    front = [u for u in rows if not any(v[value] >= u[value] - tol and v[cost] < u[cost] for v in rows)]
    return sorted(front, key=lambda r: r[cost])


def patch_axis(ax, patches: Sequence[int], label: str) -> None:
    """An x axis of patch sizes: log scale, one tick per patch size, no minor tick labels."""
    import matplotlib.ticker
    ax.set_xscale('log')
    ax.set_xticks(list(patches), [str(p) for p in patches])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel(label)


# ----------------------------------------------------------------------------- readable PNGs of tiny images
#: the smallest side a drawn image gets (toy images are 48-120 px: labels would not fit)
MIN_SIDE = 480


def display_scale(width: int, height: int, min_side: int = MIN_SIDE) -> int:
    """The integer (nearest-neighbour) factor that brings the smaller side to at least ``min_side``."""
    return max(1, -(-min_side // max(1, min(width, height))))


def font(size: int = 14):
    """PIL's bundled scalable font at ``size`` px (the bitmap default is 11 px and has no sizes)."""
    from PIL import ImageFont
    return ImageFont.load_default(size=size)


def draw_labels(draw, labels, img_size, fnt, pad: int = 2):
    """Draw ``labels`` [(text, (x0, y0, x1, y1) box, colour)] as filled tags: above the box if there is room,
    else inside its top; moved inside the image and down past tags already drawn, so none overlap or clip."""
    W, H = img_size
    placed = []
    for text, (x0, y0, x1, y1), colour in labels:
        left, t, r, b = fnt.getbbox(text)
        w, h = r - left + 2 * pad, b - t + 2 * pad
        x = min(max(0, x0), max(0, W - w))
        y = y0 - h if y0 - h >= 0 else y0
        for _ in range(len(placed) + 1):
            hit = [p for p in placed if x < p[2] and p[0] < x + w and y < p[3] and p[1] < y + h]
            if not hit:
                break
            y = max(p[3] for p in hit)
        y = min(max(0, y), max(0, H - h))
        placed.append((x, y, x + w, y + h))
        draw.rectangle([x, y, x + w - 1, y + h - 1], fill=colour)
        lum = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
        draw.text((x + pad - left, y + pad - t), text, fill=(0, 0, 0) if lum > 140 else (255, 255, 255), font=fnt)


def add_legend(img, entries, fnt, title: Optional[str] = None):
    """``img`` (PIL) with a legend column on its right: a colour swatch and a name per entry [(name, rgb)]."""
    from PIL import Image, ImageDraw
    line = max([fnt.getbbox(n)[3] for n, _ in entries] + [12]) + 8
    rows = ([title] if title else []) + list(entries)
    width = max([fnt.getlength(n) for n, _ in entries] + ([fnt.getlength(title)] if title else [0])) + line + 24
    out = Image.new('RGB', (img.width + int(width), max(img.height, line * len(rows) + 12)), (255, 255, 255))
    out.paste(img, (0, 0))
    d = ImageDraw.Draw(out)
    y, x = 8, img.width + 10
    if title:
        d.text((x, y), title, fill=(0, 0, 0), font=fnt)
        y += line
    for name, rgb in entries:
        d.rectangle([x, y + 2, x + line - 8, y + line - 6], fill=tuple(int(c) for c in rgb), outline=(0, 0, 0))
        d.text((x + line, y + 1), name, fill=(0, 0, 0), font=fnt)
        y += line
    return out
