"""flexitransfer.reporting: every Markdown results file is headed by its provenance (command, commit,
CPU, threads, date) and keeps its table readable; the CSV beside it stays a plain CSV."""
import csv
import re

import torch

from flexitransfer.reporting import markdown_table, provenance, write_markdown, write_table

LINE = re.compile(r'^Command: `(?P<command>[^`]+)`'
                  r' · commit (?P<commit>[0-9a-f]{7,}( \(\+ uncommitted changes\))?|unknown)'
                  r' · CPU: (?P<cpu>[^·]+) · threads: (?P<threads>\d+)( · GPU: [^·]+)?'
                  r' · date: (?P<date>\d{4}-\d\d-\d\d)$')


def test_provenance_names_command_commit_cpu_threads_and_date():
    m = LINE.match(provenance('python tools/reproduce_digits.py --docs'))
    assert m, provenance('python tools/reproduce_digits.py --docs')
    assert m['command'] == 'python tools/reproduce_digits.py --docs' and m['cpu'].strip()
    assert int(m['threads']) == torch.get_num_threads()
    assert LINE.match(provenance()), provenance()  # default: the running program


def test_write_table_heads_the_markdown_and_leaves_the_csv_plain(tmp_path):
    rows = [{'patch': 8, 'top1': 97.123}, {'patch': 16, 'top1': 91.5}]
    out = str(tmp_path / 'sub' / 'res')
    md = write_table(out, rows, formats={'top1': '{:.1f}'}, text_before='digits, test top-1 (%)')
    head, blank, *body = open(out + '.md').read().splitlines()
    assert LINE.match(head) and blank == ''
    assert '\n'.join(body) == md  # what the tool prints follows the header unchanged
    table = [ln for ln in body if ln.startswith('|')]
    assert table == markdown_table(rows, formats={'top1': '{:.1f}'}).splitlines()
    assert [ln.split('|')[1:3] for ln in table[2:]] == [[' 8 ', ' 97.1 '], [' 16 ', ' 91.5 ']]
    assert list(csv.DictReader(open(out + '.csv'))) == [{'patch': '8', 'top1': '97.123'},
                                                         {'patch': '16', 'top1': '91.5'}]
    write_table(out, rows, provenance=False)
    assert open(out + '.md').read().startswith('| patch | top1 |')
    write_markdown(out + '.md', 'text\n', command='python tools/x.py --docs')
    assert LINE.match(open(out + '.md').readline().rstrip('\n'))['command'] == 'python tools/x.py --docs'
