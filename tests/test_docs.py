"""The docs cannot drift: quoted tables equal their results files, links resolve, results say where they
came from, and numbers are not typed into tables by hand."""
import functools
import glob
import os.path as osp
import re

import pytest

from flexitransfer.docs_quote import BLOCK, quoted_sources, render_page, results_index, strip_quotes

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
PAGES = [osp.join(ROOT, 'README.md')] + sorted(glob.glob(osp.join(ROOT, 'docs', '**', '*.md'), recursive=True))
RESULTS = osp.join(ROOT, 'docs', 'results')
#: pages whose tables may hold numbers typed by hand: the results themselves and the historical changelog
HAND_NUMBERS_OK = (RESULTS + osp.sep, osp.join(ROOT, 'docs', 'notes', 'changelog.md'))
PROVENANCE = re.compile(r'^Command: `.+` · commit [0-9a-f]{7,}.* · CPU: .+ · threads: .+ · date: \d{4}-\d{2}-\d{2}')
LINK = re.compile(r'!?\[[^\]]*\]\(([^)\s]+)\)')
DECIMAL = re.compile(r'(?<![\w.])\d+\.\d+(?![\w.])')


def rel(path):
    return osp.relpath(path, ROOT)


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r'[^\w\- ]', '', heading.strip().lower().replace('`', ''))
    return text.replace(' ', '-')


@functools.lru_cache(maxsize=None)
def anchors(path: str):
    seen, out = {}, set()
    in_code = False
    for line in open(path).read().splitlines():
        if line.startswith('```'):
            in_code = not in_code
        m = re.match(r'^#{1,6} (.*)', line)
        if m and not in_code:
            s = slug(m.group(1))
            out.add(s if s not in seen else f'{s}-{seen[s]}')
            seen[s] = seen.get(s, 0) + 1
    return frozenset(out)


def broken_links(path: str, text: str):
    """The relative links of ``text`` (a page at ``path``) whose file or heading does not exist."""
    bad = []
    body = re.sub(r'```.*?```', '', text, flags=re.S)
    for target in LINK.findall(body):
        if re.match(r'^[a-z]+:', target):
            continue
        file, _, anchor = target.partition('#')
        dest = osp.normpath(osp.join(osp.dirname(path), file)) if file else path
        if not osp.exists(dest):
            bad.append(f'{target} (no such file)')
        elif anchor and dest.endswith('.md') and anchor not in anchors(dest):
            bad.append(f'{target} (no heading #{anchor} in {rel(dest)})')
    return bad


def hand_typed_numbers(text: str):
    """Table cells outside quote blocks holding a decimal number (code spans and versions excepted)."""
    out = []
    for line in strip_quotes(text).splitlines():
        if line.startswith('|') and not re.match(r'^\|[-| :]+\|$', line):
            for cell in line.strip('|').split('|'):
                plain = re.sub(r'`[^`]*`', '', cell)
                if DECIMAL.search(plain):
                    out.append(cell.strip())
    return out


def test_readme_is_short():
    n = len(open(osp.join(ROOT, 'README.md')).read().splitlines())
    assert n <= 300, f'README.md has {n} lines; guides and results go under docs/'


@pytest.mark.parametrize('path', PAGES, ids=rel)
def test_quoted_tables_equal_their_results(path):
    text = open(path).read()
    assert render_page(text, ROOT) == text, (
        f'{rel(path)}: a quoted table differs from its results file; run python tools/update_docs.py '
        f'(or fix the number by regenerating the results, never by hand)')


def test_a_hand_edited_number_is_caught():
    text = open(osp.join(ROOT, 'README.md')).read()
    block = next(BLOCK.finditer(text))
    table = block.group(3)
    edited = table.replace(re.search(r'\d+\.\d', table).group(0), '12.3', 1)
    assert edited != table
    page = text.replace(table, edited)
    assert render_page(page, ROOT) != page
    assert render_page(page, ROOT) == text


def test_every_quote_reads_a_results_file():
    for path in PAGES:
        for src in quoted_sources(open(path).read()):
            assert src.startswith('docs/results/') and osp.isfile(osp.join(ROOT, src)), f'{rel(path)}: {src}'


@pytest.mark.parametrize('path', [p for p in PAGES if not p.startswith(HAND_NUMBERS_OK)], ids=rel)
def test_no_number_typed_into_a_table(path):
    found = hand_typed_numbers(open(path).read())
    assert not found, (f'{rel(path)}: table cells with numbers not quoted from docs/results/: {found[:5]}; '
                       f'put them in a results file and quote it (flexitransfer/docs_quote.py)')


def test_hand_typed_number_check_can_fail():
    assert hand_typed_numbers('| p | mIoU |\n|---|---|\n| 8 | 92.6 |\n') == ['92.6']
    assert hand_typed_numbers('| pin |\n|---|\n| `torch 2.12.1` |\n') == []


@pytest.mark.parametrize('path', PAGES, ids=rel)
def test_relative_links_resolve(path):
    bad = broken_links(path, open(path).read())
    assert not bad, f'{rel(path)}: broken links {bad}'


def test_link_check_can_fail():
    page = osp.join(ROOT, 'docs', 'get_started.md')
    assert broken_links(page, '[x](results/nope.md) [y](../README.md#no-such-heading) [z](../README.md#set-up)') \
        == ['results/nope.md (no such file)', '../README.md#no-such-heading (no heading #no-such-heading in README.md)']


def test_results_say_where_they_came_from():
    mds = [m for m in glob.glob(osp.join(RESULTS, '**', '*.md'), recursive=True) if m != osp.join(RESULTS, 'README.md')]
    assert mds
    for md in mds:
        first = open(md).readline()
        assert PROVENANCE.match(first), f'{rel(md)} must start with its provenance line, not {first[:80]!r}'
    stems = {osp.splitext(m)[0] for m in mds}
    for f in glob.glob(osp.join(RESULTS, '**', '*.*'), recursive=True):
        stem, folder = osp.splitext(f)[0], osp.dirname(f)
        covered = (stem in stems or osp.join(folder, 'README') in stems or f == osp.join(RESULTS, 'README.md')
                   or any(stem.startswith(s + '_') for s in stems))
        assert covered, f'{rel(f)} has no results page (a .md of the same name, or the folder README.md)'


def test_results_index_is_current():
    with open(osp.join(RESULTS, 'README.md')) as f:
        assert f.read() == results_index(ROOT), 'docs/results/README.md is stale: run python tools/update_docs.py'
