"""Seconds-long smoke runs of the study tools (the studies themselves run for tens of minutes and stay out
of CI): every stage runs, results are written with their provenance and resume from OUT.jsonl, and the
numbers they write are the numbers the runs returned."""
import csv
import json

from conftest import run_tool


def test_study_dip_runs_resumes_and_writes(tmp_path):
    out = str(tmp_path / 'dip')
    args = ('tools/study_dip.py', '--variants', 'baseline', 'vit24', '--seeds', '0', '--epochs', '1',
            '--workers', '1', '--out', out)
    run_tool(*args)
    runs = [json.loads(line) for line in open(out + '.jsonl')]
    assert sorted(r['variant'] for r in runs) == ['baseline', 'vit24']
    rows = {r['variant']: r for r in csv.DictReader(open(out + '.csv'))}
    for r in runs:
        assert abs(float(rows[r['variant']]['p24']) - r['p24']) < 1e-9
    assert open(out + '.md').readline().startswith('Command: `python tools/study_dip.py')
    run_tool(*args)  # everything kept: nothing trained again, the same file
    assert [json.loads(line) for line in open(out + '.jsonl')] == runs


def test_reproduce_transfer_runs_every_stage(tmp_path):
    out = str(tmp_path / 'transfer')
    run_tool('tools/reproduce_transfer.py', '--pre-steps', '4', '--ft-epochs', '1', '--seeds', '0',
             '--recipes', 'sgd', 'sgd_band_8_16', '--workers', '1', '--out', out, '--cache', str(tmp_path / 'cache'))
    runs = [json.loads(line) for line in open(out + '.jsonl')]
    assert {(r['pre-training'], r['recipe'], r['fine-tune patch']) for r in runs} == {
        ('flexi', 'sgd', 12), ('flexi', 'sgd_band_8_16', 12), ('flexi_distill', 'sgd', 12),
        ('flexi_distill', 'sgd_band_8_16', 12), ('flexi', 'sgd', 4), ('vit8', 'sgd', 12), ('none', 'sgd', 12)}
    small = next(r for r in runs if r['fine-tune patch'] == 4)
    cheap = next(r for r in runs if (r['pre-training'], r['recipe'], r['fine-tune patch']) == ('flexi', 'sgd', 12))
    assert cheap['tokens x steps'] * 9 == small['tokens x steps']  # 16 vs 144 tokens, same steps
    rows = list(csv.DictReader(open(out + '.csv')))
    assert [r['recipe'] for r in rows[:3]] == ['pre-training (glyphs)'] * 3
    assert open(out + '.md').readline().startswith('Command: `python tools/reproduce_transfer.py')
