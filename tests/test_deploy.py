import os.path as osp
import re
import subprocess
import sys

import pytest
import torch
from conftest import ROOT
from mmengine.config import Config

import flexitransfer.models.backbones.flexivit as fv


@pytest.fixture(scope='module')
def tiny_seg_ckpt(trained_seg):
    return trained_seg[0]  # the session's tiny Segmenter (conftest), trained once


@pytest.mark.parametrize('patch', ['8', '24'])
def test_resize_deploy_equals_flexible_and_exports_timm(tmp_path, tiny_seg_ckpt, patch):
    out = str(tmp_path / 'deploy')
    res = subprocess.run([sys.executable, 'tools/resize_deploy.py', 'configs/seg/tiny_seg_flexi.py', tiny_seg_ckpt,
                          '--patch', patch, '--out', out, '--export-timm'], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    m = re.search(r'task output ([0-9.e+-]+), backbone ([0-9.e+-]+)', res.stdout)
    assert float(m.group(1)) < 1e-4 and float(m.group(2)) < 1e-4
    assert 'ratio deployed/flexible' in res.stdout
    assert re.search(r'max abs diff of tokens vs deployed: ([0-9.e+-]+)', res.stdout)
    p = int(patch)
    cfg = Config.fromfile(osp.join(out, f'tiny_seg_flexi_p{patch}.py'))
    bb = cfg.model.backbone
    assert bb.base_patch_size == [p, p] and bb.base_pos_grid == [120 // p] * 2 and bb.patch_size == [p, p]
    assert not any(h['type'] == 'RandomPatchSizeHook' for h in cfg.custom_hooks)
    assert cfg.test_cfg.patch_sizes == [p]
    sd = torch.load(osp.join(out, f'tiny_seg_flexi_p{patch}.pth'))['state_dict']
    assert sd['backbone.patch_embed.weight'].shape[-2:] == (p, p)


def test_deployed_backbone_does_no_resize_work(monkeypatch):
    import flexitransfer.ops.resize as rz
    model = fv.FlexiViT(arch=dict(embed_dims=32, num_layers=1, num_heads=2)).eval()
    baked = model.bake(12, (96, 120))
    calls = []
    real = rz._on
    monkeypatch.setattr(rz, '_on', lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    x = torch.randn(1, 3, 96, 120)
    baked(x)  # autograd on: no cache involved, and still no resize matrix is touched
    assert calls == []
    model.train()(x, 12)  # the flexible model under autograd does fetch them (test can fail)
    assert len(calls) == 2


@pytest.fixture(scope='module')
def random_seg_ckpt(tmp_path_factory):
    """The tiny Segmenter with seeded random weights (no training: these tests check the workflow, not a model)."""
    from conftest import randomize
    from mmengine.registry import MODELS, init_default_scope
    cfg = Config.fromfile(osp.join(ROOT, 'configs/seg/tiny_seg_flexi.py'))
    init_default_scope(cfg.default_scope)
    path = str(tmp_path_factory.mktemp('deploy_seg') / 'seg.pth')
    torch.save({'state_dict': randomize(MODELS.build(cfg.model), 3).state_dict(), 'meta': {}}, path)
    return path


def test_bake_checkpoint_returns_what_it_wrote_and_raises_on_a_failed_check(tmp_path, random_seg_ckpt):
    from flexitransfer.deploy import BakeResult, VerificationError, bake_checkpoint
    config = osp.join(ROOT, 'configs/seg/tiny_seg_flexi.py')
    res = bake_checkpoint(config, random_seg_ckpt, 12, out_dir=str(tmp_path), runs=1)
    assert isinstance(res, BakeResult) and res.config == str(tmp_path / 'tiny_seg_flexi_p12.py')
    assert res.max_abs_diff < 1e-4 and res.backbone_max_abs_diff < 1e-4 and res.speed_ratio > 0
    assert res.onnx is None and res.timm_checkpoint is None and res.metrics is None
    meta = torch.load(res.checkpoint)['meta']
    assert meta['baked_patch'] == 12 and 'deployed_patch' not in meta and meta['img_size'] == [120, 120]
    with pytest.raises(VerificationError, match=r'^verification failed: max abs diff \S+ > tol -1') as e:
        bake_checkpoint(config, random_seg_ckpt, [12], out_dir=str(tmp_path / 'strict'), tol=-1, runs=1)
    assert osp.isfile(e.value.result.checkpoint)  # written and measured before the verdict
    with pytest.raises(ValueError, match='cannot tell the deployment image size'):
        bake_checkpoint(config, random_seg_ckpt, 12, cfg_options={'model.data_preprocessor.size': None})


def test_old_names_fail_naming_the_new_ones():
    import flexitransfer.deploy as deploy
    with pytest.raises(AttributeError, match=r'FlexiViT.baked was renamed: use FlexiViT.bake\(patch_size, img_size\)'):
        fv.FlexiViT(arch=dict(embed_dims=32, num_layers=1, num_heads=2)).baked(12, 96)
    with pytest.raises(TypeError, match='deploy.evaluate was renamed: use flexitransfer.deploy.evaluate_onnx'):
        deploy.evaluate('config.py', 'model.pth')
    assert not hasattr(deploy, 'build_runner')


def test_benchmark_table_csv_plot_and_budget(tmp_path, tiny_seg_ckpt, seg_toy_data):
    import csv
    out = str(tmp_path / 'bench')
    res = subprocess.run([sys.executable, 'tools/benchmark.py', '--model', 'seg', 'configs/seg/tiny_seg_flexi.py',
                          tiny_seg_ckpt, '--patch', '8', '24', '--runs', '3', '--budget-ms', '10000', '--out', out,
                          '--data-root', seg_toy_data], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = list(csv.DictReader(open(out + '.csv')))
    assert [(r['task'], r['patch'], r['tokens']) for r in rows] == [('seg', '8', '225'), ('seg', '24', '25')]
    g = {r['patch']: float(r['gflops']) for r in rows}
    assert g['8'] > 4 * g['24'] > 0  # ~9x the tokens; resize work is not counted
    best = max(rows, key=lambda r: float(r['value']))
    assert f"- seg: patch {best['patch']} (mIoU" in open(out + '.md').read()
    assert osp.getsize(out + '.png') > 5000
