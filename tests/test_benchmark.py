"""The cross-task benchmark (flexitransfer.benchmark.tasks behind tools/benchmark.py): progress while it
measures, a warning when the machine is busy, one budget-pick block, nothing left in the temporary folder."""
import json
import os
import os.path as osp
import subprocess
import tempfile

import pytest
import torch
from conftest import ROOT

SEG = 'configs/seg/tiny_seg_flexi.py'


@pytest.fixture
def own_tmp(tmp_path, monkeypatch):
    """tempfile's folder (and the children's TMPDIR) redirected to an empty folder of this test."""
    tmp = tmp_path / 'tmp'
    tmp.mkdir()
    monkeypatch.setattr(tempfile, 'tempdir', str(tmp))
    monkeypatch.setenv('TMPDIR', str(tmp))
    return tmp


def test_measure_one_shows_progress_and_leaves_no_temporary_files(tmp_path, own_tmp, seg_toy_data, monkeypatch,
                                                                   capsys):
    from flexitransfer.apis import init_model
    from flexitransfer.benchmark.tasks import measure_one
    monkeypatch.chdir(ROOT)
    ckpt = str(tmp_path / 'seg.pth')
    torch.save({'state_dict': init_model(SEG).state_dict(), 'meta': {}}, ckpt)
    rows = measure_one('seg', SEG, ckpt, [24], runs=1, tp_batch=1, data_root=seg_toy_data,
                       runtimes=['torch', 'onnxruntime'], exporter='torchscript')
    assert [(r['runtime'], r['patch']) for r in rows] == [('torch', 24), ('onnxruntime', 24)]
    out = capsys.readouterr().out
    for line in ('[benchmark] seg: patch 24 (1/1): onnxruntime: export + warm-up',
                 '[benchmark] seg: patch 24 (1/1): timing torch, onnxruntime (1 rounds)',
                 '[benchmark] seg: metric of torch on the test set at patches [24]',
                 '[benchmark] seg: metric of onnxruntime on the test set at patch 24'):
        assert line in out, out
    # the runner's work dir, the ONNX files and the dataloader workers' folders (pymp-*) are gone; '.ses' is
    # ONNX Runtime's one telemetry file per temporary folder, rewritten, not one more per run
    assert sorted(set(os.listdir(own_tmp)) - {'.ses'}) == [], os.listdir(own_tmp)


def _fake_child(rows_per_model):
    """``subprocess.run`` standing in for the measuring process: rows out, and litter in its TMPDIR."""
    real = subprocess.run

    def run(cmd, *args, env=None, **kwargs):
        if cmd[1:3] != ['-m', 'flexitransfer.benchmark.tasks']:
            return real(cmd, *args, env=env, **kwargs)  # e.g. reporting's git look-up
        tmp = (env or os.environ).get('TMPDIR', tempfile.gettempdir())
        os.makedirs(osp.join(tmp, 'pymp-litter'), exist_ok=True)
        with open(cmd[-1], 'w') as f:
            json.dump(rows_per_model[json.loads(cmd[-2])['name']], f)
    return run


def _row(task, patch, value, latency):
    return dict(task=task, runtime='torch', patch=patch, tokens=(96 // patch) ** 2, metric='mIoU', value=value,
                gflops=0.1, params_m=1.0, latency_ms=latency, throughput=100.0, peak_mem_mib=10.0, device='cpu')


@pytest.mark.parametrize('load', [0.0, 9.0])
def test_run_cleans_up_warns_on_load_and_picks_once(tmp_path, own_tmp, monkeypatch, capsys, load):
    from flexitransfer.benchmark import tasks
    rows = {'seg': [_row('seg', 8, 90.0, 5.0), _row('seg', 24, 70.0, 1.0)],
            'cls': [_row('cls', 12, 99.0, 2.0)]}
    monkeypatch.setattr(tasks.subprocess, 'run', _fake_child(rows))
    monkeypatch.setattr(os, 'getloadavg', lambda: (load, load, load))
    monkeypatch.setattr(os, 'cpu_count', lambda: 2)
    ckpt = tmp_path / 'x.pth'
    ckpt.write_bytes(b'')
    out = str(tmp_path / 'out' / 'bench')
    tasks.run([('seg', SEG, str(ckpt)), ('cls', SEG, str(ckpt))], budget_ms=3, out=out)
    said = capsys.readouterr().out
    assert said.count('Best (patch, runtime) per task within 3 ms') == 1, said
    assert '[benchmark] seg (model 1/2)' in said and '[benchmark] cls (model 2/2)' in said
    assert '- seg: patch 24 (mIoU 70.00, 1.00 ms, torch)' in said
    busy = 'WARNING: the machine is busy (load average 9.00/9.00/9.00 with 2 CPUs'
    assert (busy in said) == (load > 0) and (busy in open(out + '.md').read()) == (load > 0), said
    assert os.listdir(own_tmp) == []  # each child's TMPDIR is removed with what it left there
