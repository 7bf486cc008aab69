"""tools/gpu_check.py in its CPU form (issue 27): every section of the report, CSVs of finite numbers,
the SDPA kernel detection it fails on, and the weight files it drops to run on random weights."""
import csv
import math
import os.path as osp

import torch
from conftest import ROOT, run_tool

from flexitransfer.benchmark.gpu_check import sdpa_backends, weight_file_options

SECTIONS = {'parity': '## (a) Parity', 'train': '## (b) Training throughput', 'timm': '## (c) FlexiViT vs timm',
            'patch_schedule': '## (d) Random vs fixed patch training'}


def test_gpu_check_tool_cpu_tiny(tmp_path):
    """The smallest setting: one tiny config at one patch, parity of a checkpoint file passed in."""
    from flexitransfer.apis import init_model
    config = 'configs/seg/tiny_seg_flexi.py'
    ckpt = str(tmp_path / 'seg.pth')
    torch.manual_seed(1)
    model = init_model(osp.join(ROOT, config), None, cfg_options=weight_file_options(config))
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, ckpt)
    out = str(tmp_path / 'gpu_check')
    text = run_tool('tools/gpu_check.py', '--device', 'cpu', '--tiny', '--configs', 'segmenter', '--patch', '12',
                    '--checkpoints', f'seg={ckpt}', '--out', out)
    assert 'wrote' in text
    report = open(osp.join(out, 'report.md')).read()
    assert 'FAILED' not in report and 'measured matmul rate (float32)' in report
    rows = {}
    for key, heading in SECTIONS.items():
        assert heading in report, heading
        rows[key] = list(csv.DictReader(open(osp.join(out, f'{key}.csv'))))
        assert rows[key], key
        for r in rows[key]:
            for v in r.values():
                try:
                    assert math.isfinite(float(v)), (key, r)
                except ValueError:
                    pass  # text cells (names, kernels, status)
    assert [(r['weights'], r['patch'], r['ok']) for r in rows['parity']] == [(ckpt, '8', 'True'), (ckpt, '24', 'True')]
    assert [(r['name'], r['patch'], r['with_cp'], r['status']) for r in rows['train']] == [
        ('segmenter', '12', 'False', 'ok'), ('segmenter', '12', 'True', 'ok')]
    assert all(float(r['mfu']) > 0 and float(r['train_gflop_per_img']) > 0 for r in rows['train'])
    assert [r['patch'] for r in rows['timm']] == ['8', '16']
    assert all(r['sdpa'].startswith('cpu (') for r in rows['timm'])
    assert all(float(r['max_abs_diff']) < 1e-4 for r in rows['timm'])  # same weights, same tokens
    assert [r['schedule'].split()[0] for r in rows['patch_schedule']] == ['random', 'fixed']


def test_sdpa_backend_detection():
    """What section (c) fails on (the math path at p = 8 on CUDA) is seen from the profiler's op names."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    q = torch.randn(1, 2, 16, 8)

    def attn():
        return torch.nn.functional.scaled_dot_product_attention(q, q, q)
    with sdpa_kernel(SDPBackend.MATH):
        assert sdpa_backends(attn) == ['math']
    assert sdpa_backends(lambda: torch.softmax(q @ q.transpose(-1, -2), -1) @ q) == ['math (no SDPA op)']


def test_weight_file_options_cover_every_file():
    """Random weights need no file: FlexiViT pretrained, the text tower and the distillation teacher."""
    lit = weight_file_options('configs/retrieval/lit_coco_flexi_b.py')
    assert lit == {'model.image_backbone.pretrained': None, 'model.text_tower.checkpoint': None}
    assert 'model.teacher_checkpoint' in weight_file_options('configs/cls/imagenet_flexidistill_b.py')
    assert weight_file_options('configs/seg/tiny_seg_flexi.py') == {}
