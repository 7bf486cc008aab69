"""Tables in the README and the docs pages quoted from the results files, so no number can drift.

A quoted table sits between two HTML comments; the first holds a JSON spec naming the results CSV
(under ``docs/results/``) and how to lay it out, the second ends the block::

    <!-- quote {"csv": "docs/results/benchmark.csv", "where": {"runtime": "torch"},
               "cols": [["patch", "{patch}"], ["mIoU", "{value:.2f}"]]} -->
    | patch | mIoU |
    ...
    <!-- /quote -->

:func:`render_page` rewrites every block from its CSV (``tools/update_docs.py``); the docs test
fails when a page differs from its rendering, i.e. when a number was typed by hand or a results
file changed without the page. Layouts (``"layout"`` in the spec):

- ``rows`` (default): one table row per CSV row (after ``where``), cells from ``cols``
  ``[[header, template], ...]`` (``str.format`` templates over the row's fields), or every column
  when ``cols`` is ``"*"`` or absent (floats formatted by ``fmt``, default ``{:.2f}``);
- ``grouped``: one table row per value of ``group``; the rows of a group sorted by ``sort`` fill
  ``cells`` (a template) left to right; ``labels[group]`` (a list of Markdown cells) come before,
  ``after[group]`` after; ``header`` names every column;
- ``ranges``: one table row per value of ``group``; per ``sort`` value the range (min-max) of
  ``value`` over the CSV rows (one per machine), formatted by ``fmt``, joined by `` / ``; plus
  the range of ``seconds`` and the list of ``machine`` values.
"""
from __future__ import annotations

import csv
import json
import os.path as osp
import re
from typing import Dict, List, Sequence

BLOCK = re.compile(r'(<!-- quote (\{.*?\}) -->\n)(.*?)(<!-- /quote -->)', re.S)


class _Blank(str):
    """An empty CSV cell: formats as '' whatever the format spec ('{x:.1f}' of nothing is nothing)."""

    def __format__(self, spec):
        return ''


def _value(s: str):
    """A CSV cell as int, float or str (an empty one as :class:`_Blank`)."""
    if s == '':
        return _Blank()
    for cast in (int, float):
        try:
            return cast(s)
        except ValueError:
            pass
    return s


def read_rows(path: str, where: Dict[str, object] = None) -> List[dict]:
    """The rows of a results CSV (``#`` lines skipped) whose fields equal ``where``'s values.

    Args:
        path: the CSV file.
        where: column -> value (or list of accepted values), compared as strings.

    Returns:
        The matching rows, fields converted to int / float where they parse.
    """
    with open(path, newline='') as f:
        rows = list(csv.DictReader(line for line in f if not line.startswith('#')))
    out = []
    for r in rows:
        ok = all(str(r.get(k)) in ([str(x) for x in v] if isinstance(v, list) else [str(v)])
                 for k, v in (where or {}).items())
        if ok:
            out.append({k: _value(v) for k, v in r.items()})
    if not out:
        raise ValueError(f'{path}: no row matches {where}')
    return out


def _table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    return '\n'.join(lines + ['| ' + ' | '.join(str(c) for c in r) + ' |' for r in body]) + '\n'


def _groups(rows: List[dict], key: str) -> Dict[object, List[dict]]:
    out: Dict[object, List[dict]] = {}
    for r in rows:
        out.setdefault(r[key], []).append(r)
    return out


def _span(values: Sequence[float], fmt: str) -> str:
    lo, hi = fmt.format(min(values)), fmt.format(max(values))
    return lo if lo == hi else f'{lo}–{hi}'


def render(spec: dict, root: str) -> str:
    """The Markdown table a quote ``spec`` stands for (see the module docstring).

    Args:
        spec: the parsed JSON of the block's opening comment.
        root: the repository root (``spec['csv']`` is relative to it).

    Returns:
        The table, ending with a newline.
    """
    rows = read_rows(osp.join(root, spec['csv']), spec.get('where'))
    layout = spec.get('layout', 'rows')
    if layout == 'rows':
        if spec.get('sort'):
            rows.sort(key=lambda r: [r[k] for k in spec['sort']])
        if spec.get('cols', '*') == '*':  # every column; floats by ``fmt``; headers without a 'dataset/' prefix
            fmt = spec.get('fmt', '{:.2f}')
            return _table([k.split('/')[-1] for k in rows[0]],
                          [[fmt.format(v) if isinstance(v, float) else str(v) for v in r.values()] for r in rows])
        return _table([h for h, _ in spec['cols']], [[t.format(**r) for _, t in spec['cols']] for r in rows])
    groups = _groups(rows, spec['group'])
    order = spec.get('order') or list(groups)
    body = []
    for g in order:
        grp = sorted(groups[g], key=lambda r: r[spec['sort']])
        if layout == 'grouped':
            cells = [spec['cells'].format(**r) for r in grp]
        elif layout == 'ranges':
            by = _groups(grp, spec['sort'])
            cells = [' / '.join(str(k) for k in by), ' / '.join(_span([r['value'] for r in v], spec['fmt'])
                                                                for v in by.values()),
                     _span([r['seconds'] for r in grp if r['seconds'] != ''] or [float('nan')], '{:.0f}') + ' s',
                     ', '.join(sorted({str(r['machine']) for r in grp}))]
        else:
            raise ValueError(f'unknown quote layout {layout!r}: rows, grouped or ranges')
        body.append(list(spec.get('labels', {}).get(str(g), [str(g)])) + cells
                    + list(spec.get('after', {}).get(str(g), [])))
    width = max(len(b) for b in body)
    return _table(spec['header'], [b + [''] * (width - len(b)) for b in body])


def render_page(text: str, root: str) -> str:
    """``text`` with every quote block re-rendered from its results file."""
    def sub(m):
        try:
            spec = json.loads(m.group(2))
        except json.JSONDecodeError as e:
            raise ValueError(f'quote block {m.group(2)[:80]!r}: not JSON ({e})') from None
        return m.group(1) + render(spec, root) + m.group(4)
    return BLOCK.sub(sub, text)


def quoted_sources(text: str) -> List[str]:
    """The results files the quote blocks of ``text`` read."""
    return [json.loads(m.group(2))['csv'] for m in BLOCK.finditer(text)]


def results_index(root: str) -> str:
    """``docs/results/README.md``: one row per results page, with the command and date of its provenance line."""
    import glob
    base = osp.join(root, 'docs', 'results')
    rows = []
    for md in sorted(glob.glob(osp.join(base, '**', '*.md'), recursive=True)):
        name = osp.relpath(md, base)
        if name == 'README.md':
            continue
        first = open(md).readline()
        cmd = re.search(r'Command: (`[^`]+`)', first)
        date = re.search(r'date: ([0-9-]+)', first)
        rows.append([f'[{name}]({name})', cmd.group(1) if cmd else '', date.group(1) if date else ''])
    return ('# Results\n\nEvery table, CSV and figure the README and the docs quote. Each page starts with the '
            'command, commit, CPU, thread count and date that produced it; a CSV or PNG belongs to the page of the '
            'same name (or its folder\'s README.md). This index is written by `python tools/update_docs.py`.\n\n'
            + _table(['page', 'command', 'date'], rows))


def strip_quotes(text: str) -> str:
    """``text`` without its quote blocks (what remains was written by hand)."""
    return BLOCK.sub('', text)
