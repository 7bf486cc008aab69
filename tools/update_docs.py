"""Re-render the tables the README and the docs pages quote from ``docs/results/``.

    python tools/update_docs.py [--check]

Every ``<!-- quote {...} -->`` block is rewritten from its results CSV (``flexitransfer/docs_quote.py``
says how a block is written), and the index of the results (``docs/results/README.md``) from their pages.
``--check`` changes nothing and exits 1 when a page differs from its rendering (what ``tests/test_docs.py``
checks).
"""
import _bootstrap  # noqa: F401

import argparse
import glob
import os.path as osp

from flexitransfer.docs_quote import render_page, results_index

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def pages():
    return [osp.join(ROOT, 'README.md')] + sorted(glob.glob(osp.join(ROOT, 'docs', '**', '*.md'), recursive=True))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--check', action='store_true', help='only report pages that differ; exit 1 if any')
    a = ap.parse_args()
    stale = []
    for path in pages():
        text = open(path).read()
        new = render_page(text, ROOT)
        if new != text:
            stale.append(osp.relpath(path, ROOT))
            if not a.check:
                open(path, 'w').write(new)
    index = osp.join(ROOT, 'docs', 'results', 'README.md')
    text = open(index).read() if osp.exists(index) else ''
    if results_index(ROOT) != text:
        stale.append(osp.relpath(index, ROOT))
        if not a.check:
            open(index, 'w').write(results_index(ROOT))
    verb = 'differ from their results' if a.check else 'updated'
    print(f'{len(stale)} page(s) {verb}' + (': ' + ', '.join(stale) if stale else ''))
    raise SystemExit(1 if a.check and stale else 0)


if __name__ == '__main__':
    main()
