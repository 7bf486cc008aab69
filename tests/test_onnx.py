"""ONNX export, ONNX Runtime inside the task model, int8 quantisation, runtime-aware benchmark."""
import csv
import os.path as osp
import re
import subprocess
import sys

import onnx
import pytest
import torch
import torch.nn as nn
from conftest import ROOT, randomize
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope
from mmengine.structures import BaseDataElement

import flexitransfer.deploy.dtypes as dtypes
from flexitransfer.deploy import (
    bake_model,
    check_autocast,
    check_onnx,
    export_onnx,
    install_onnx,
    max_abs_diff,
    quantize_int8,
    read_meta,
)
from flexitransfer.deploy.export import export_module, flatten, unflatten
from flexitransfer.engine import flexi_modules, set_patch_size

TINY = {'seg': ('configs/seg/tiny_seg_flexi.py', 120), 'cls': ('configs/cls/tiny_cls_flexi.py', 60),
        'lit': ('configs/retrieval/tiny_lit_flexi.py', 60)}


def tiny_model(task, seed=0, **overrides):
    """The tiny config's model with seeded random weights everywhere (a zero-init head would hide bugs)."""
    cfg = Config.fromfile(osp.join(ROOT, TINY[task][0]))
    cfg.model.update(overrides)
    init_default_scope(cfg.get('default_scope', 'mmengine'))
    return randomize(MODELS.build(cfg.model), seed).eval()


def baked_at(model, patch, img):
    set_patch_size(model, patch)
    return bake_model(model, patch, img).eval()


def inputs_for(img, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(3, 3, img, img, generator=g), torch.randn(1, 3, img, img, generator=g)]


def graph_kernel_shapes(path):
    m = onnx.load(path)
    conv_w = {n.input[1] for n in m.graph.node if n.op_type == 'Conv'}
    return [tuple(t.dims) for t in m.graph.initializer if t.name in conv_w]


def test_nesting_round_trip():
    a, b, c = torch.zeros(1), torch.ones(2), torch.full((3,), 2.)
    out = (a, [b, {'x': c}])
    leaves, spec = flatten(out)
    assert leaves == [a, b, c]
    back = unflatten(leaves, spec)
    assert isinstance(back, tuple) and isinstance(back[1], list) and back[1][1]['x'] is c and back[0] is a
    with pytest.raises(ValueError, match='more outputs'):
        unflatten(leaves + [a], spec)


# (task, patch, exporter, model overrides): two patch sizes each, each exporter once per task; LiT once with the
# locked image tower of the real configs
CASES = [('seg', 8, 'dynamo', {}), ('seg', 24, 'torchscript', {}), ('cls', 6, 'torchscript', {}),
         ('cls', 12, 'dynamo', {}), ('lit', 6, 'dynamo', dict(lock_image=True)), ('lit', 12, 'torchscript', {})]


@pytest.mark.parametrize('task,patch,exporter,overrides', CASES, ids=[f'{t}-p{p}-{e}' for t, p, e, _ in CASES])
def test_onnx_equals_pytorch_and_predicts_the_same(tmp_path, task, patch, exporter, overrides):
    img = TINY[task][1]
    flexible = tiny_model(task, **overrides)
    baked = baked_at(flexible, patch, img)
    path = str(tmp_path / 'm.onnx')
    meta = export_onnx(baked, img, path, exporter=exporter, meta=dict(patch_size=[patch, patch]))
    assert meta['target'] == 'tensor' and meta['img_size'] == [img, img] and meta['patch_size'] == [patch, patch]
    # the p x p kernel is a constant of the graph: nothing is resized at run time
    assert graph_kernel_shapes(path)[0][-2:] == (patch, patch)
    xs = inputs_for(img)
    diff = check_onnx(path, flexible, xs)  # against the flexible model at that patch (batch 3 and 1)
    print(f'{task} p{patch} ({exporter}): fused {meta.get("fused_ops")}; max abs diff ONNX Runtime vs PyTorch '
          f'{diff:.3g}')
    assert diff < 1e-4
    blocks = sum(len(m.blocks) for m in flexi_modules(baked))
    assert meta['fused_ops']['Attention'] == blocks  # one fused attention node per block (deploy speed)

    # the runtime layer: predictions through the task's own predict code, graph in place of the network
    x = xs[0]
    if task == 'seg':
        from mmseg.structures import SegDataSample
        samples = lambda: [SegDataSample(metainfo=dict(img_shape=(img, img), ori_shape=(img, img),
                                                       pad_shape=(img, img))) for _ in range(len(x))]
        key = lambda s: s.seg_logits.data
    elif task == 'cls':
        samples = lambda: None
        key = lambda s: s.pred_score
    else:
        captions = [['a red circle', 'a blue square above a green circle'], ['a yellow star'], ['nothing']]
        samples = lambda: [BaseDataElement(captions=c) for c in captions]
        key = lambda s: torch.cat([s.img_emb[None], s.txt_embs])
    with torch.no_grad():
        ref = [key(s) for s in flexible(x, samples(), mode='predict')]
        install_onnx(flexible, path)
        got = [key(s) for s in flexible(x, samples(), mode='predict')]
    assert max_abs_diff(ref, got) < 1e-4
    set_patch_size(flexible, patch + 2)
    with pytest.raises(ValueError, match=f'baked at patch \\({patch}, {patch}\\)'):
        flexible(x, mode='tensor')


def test_backbone_target_feature_maps(tmp_path):
    flexible = tiny_model('seg', seed=3)
    baked = baked_at(flexible, 12, 120)
    path = str(tmp_path / 'bb.onnx')
    export_onnx(baked, 120, path, target='backbone', exporter='torchscript', meta=dict(patch_size=[12, 12]))
    assert read_meta(path)['outputs'] == {'tuple': ['T']}
    x = inputs_for(120)[0]
    assert check_onnx(path, flexible, [x]) < 1e-4
    with torch.no_grad():
        ref = flexible(x, mode='tensor')
        install_onnx(flexible, path)  # any task: the decode head runs in PyTorch on the graph's feature maps
        got = flexible(x, mode='tensor')
        assert flexible.backbone(x)[0].shape == (3, 96, 10, 10)
    assert max_abs_diff(ref, got) < 1e-4


def test_wrong_input_size_is_named(tmp_path):
    baked = baked_at(tiny_model('cls'), 12, 60)
    path = str(tmp_path / 'c.onnx')
    export_onnx(baked, 60, path, exporter='torchscript', meta=dict(patch_size=[12, 12]))
    with pytest.raises(ValueError, match=r'exported for inputs \(B, 3, 60, 60\).*--img-size 72 72'):
        check_onnx(path, baked, [torch.zeros(1, 3, 72, 72)])


def test_int8_quantises_every_linear_layer_and_stays_close(tmp_path):
    baked = baked_at(tiny_model('cls', seed=5), 6, 60)
    fp32, int8 = str(tmp_path / 'c.onnx'), str(tmp_path / 'c_int8.onnx')
    export_onnx(baked, 60, fp32, exporter='torchscript', meta=dict(patch_size=[6, 6]))
    counts = quantize_int8(fp32, int8)
    linears = sum(isinstance(m, nn.Linear) for m in export_module(baked).modules())
    assert linears == 4 * 4 + 1  # qkv, proj, fc1, fc2 per block + head
    # the fused graph: qkv inside each block's Attention node (QAttention), the others MatMulInteger
    assert counts['QAttention'] == 4 and counts['MatMulInteger'] == linears - 4
    assert read_meta(int8)['precision'] == 'int8-dynamic' and read_meta(int8)['outputs'] == 'T'
    assert osp.getsize(int8) < 0.5 * osp.getsize(fp32)
    from flexitransfer.deploy import OnnxFunction
    x = inputs_for(60)[0]
    with torch.no_grad():
        ref = baked(x, mode='tensor')
    q = OnnxFunction(int8)(x)
    rel = ((q - ref).norm() / ref.norm()).item()
    print(f'int8 relative error of the logits: {rel:.4f}')
    assert 0 < rel < 0.05


def test_bf16_never_offered_on_a_cpu_without_bf16_units(monkeypatch):
    monkeypatch.setattr(dtypes, 'cpu_flags', lambda: frozenset({'avx', 'avx2', 'fma'}))
    assert dtypes.autocast_dtypes('cpu') == []
    with pytest.raises(ValueError, match='no bf16 units'):
        check_autocast('bf16', 'cpu')
    monkeypatch.setattr(dtypes, 'cpu_flags', lambda: frozenset({'avx2', 'avx512_bf16', 'amx_bf16'}))
    assert dtypes.autocast_dtypes('cpu') == ['bf16']
    assert check_autocast('bf16', 'cpu') is torch.bfloat16


@pytest.fixture(scope='module')
def random_seg_ckpt(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('onnx_seg') / 'seg.pth')
    torch.save({'state_dict': tiny_model('seg', seed=7).state_dict(), 'meta': {}}, path)
    return path


def table_row(text, name):
    m = re.search(rf'^\| {re.escape(name)} \| ([^|]+) \| ([^|]+) \| ([^|]+) \| ([^|]+) \|$', text, re.M)
    return [float(v) for v in m.groups()]


def test_resize_deploy_onnx_int8_metric_table(tmp_path, random_seg_ckpt, seg_toy_data):
    out = str(tmp_path / 'deploy')
    res = subprocess.run([sys.executable, 'tools/resize_deploy.py', 'configs/seg/tiny_seg_flexi.py', random_seg_ckpt,
                          '--patch', '12', '--out', out, '--int8', '--runs', '2', '--exporter', 'torchscript',
                          '--cfg-options',
                          f'test_dataloader.dataset.data_root={seg_toy_data}', 'test_dataloader.num_workers=0',
                          'test_dataloader.persistent_workers=False'], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    print(res.stdout[res.stdout.index('max abs diff ONNX'):])
    assert 'target tensor, torchscript exporter' in res.stdout
    m = re.search(r'ONNX Runtime vs PyTorch at patch 12 \(tensor\): random ([0-9.e+-]+), 4 test images ([0-9.e+-]+)',
                  res.stdout)
    assert float(m.group(1)) < 1e-4 and float(m.group(2)) < 1e-4
    assert osp.isfile(osp.join(out, 'tiny_seg_flexi_p12.onnx'))
    assert graph_kernel_shapes(osp.join(out, 'tiny_seg_flexi_p12.onnx'))[0][-2:] == (12, 12)
    # the same test set and metric code: the fp32 graph scores what PyTorch scores
    for name in ('aAcc', 'mIoU', 'mAcc'):
        t, o, q, drop = table_row(res.stdout, name)
        assert abs(t - o) < 0.05 and drop == pytest.approx(t - q, abs=0.011)
    t, _, q, _ = table_row(res.stdout, 'mIoU')
    assert f'int8 metric drop: mIoU {t:.2f} -> {q:.2f}' in res.stdout


@pytest.fixture
def benchmark_tool():
    """The benchmark engine behind tools/benchmark.py (its functions run in this process)."""
    from flexitransfer.benchmark import tasks
    return tasks


def test_benchmark_runtimes_and_budget_pick(tmp_path, random_seg_ckpt, seg_toy_data, benchmark_tool, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = str(tmp_path / 'bench')
    rows = benchmark_tool.measure_one('seg', 'configs/seg/tiny_seg_flexi.py', random_seg_ckpt, [24], runs=2,
                                      tp_batch=2, data_root=seg_toy_data, runtimes=['torch', 'onnxruntime'],
                                      exporter='torchscript')
    benchmark_tool.write_outputs(rows, out, budget=100000)
    rows = list(csv.DictReader(open(out + '.csv')))
    assert [(r['runtime'], r['patch'], r['tokens']) for r in rows] == [('torch', '24', '25'),
                                                                       ('onnxruntime', '24', '25')]
    t, o = rows  # same model, same data, same metric code
    assert abs(float(t['value']) - float(o['value'])) < 0.05 and t['gflops'] == o['gflops']
    assert t['device'] == 'cpu' and o['device'] == 'cpu (onnxruntime)'
    best = max(rows, key=lambda r: (float(r['value']), -float(r['latency_ms'])))
    md = open(out + '.md').read()
    assert '| task | runtime | patch |' in md
    assert f"- seg: patch {best['patch']} (mIoU {float(best['value']):.2f}, {float(best['latency_ms']):.2f} ms, " \
           f"{best['runtime']})" in md
    assert osp.getsize(out + '.png') > 5000


def test_benchmark_refuses_bf16_on_a_cpu_without_bf16_units(monkeypatch, benchmark_tool):
    monkeypatch.setattr(dtypes, 'cpu_flags', lambda: frozenset({'avx', 'avx2', 'fma'}))
    cpu = torch.device('cpu')
    assert benchmark_tool.resolve_runtimes(None, cpu) == ['torch']
    assert benchmark_tool.resolve_runtimes(['torch', 'onnxruntime-int8'], cpu) == ['torch', 'onnxruntime-int8']
    with pytest.raises(SystemExit, match='--runtime torch-bf16: bf16 autocast is not offered on cpu'):
        benchmark_tool.resolve_runtimes(['torch', 'torch-bf16'], cpu)
    monkeypatch.setattr(dtypes, 'cpu_flags', lambda: frozenset({'avx2', 'amx_bf16'}))
    assert benchmark_tool.resolve_runtimes(['torch-bf16'], cpu) == ['torch-bf16']
