"""Deploy speed: fused attention in the exported graph, fused SDPA in eager PyTorch at every patch."""
import pytest
import torch

import flexitransfer.models.backbones.flexivit as fv
from flexitransfer.deploy import check_onnx, export_onnx, quantize_int8, read_meta
from flexitransfer.deploy.fuse import op_counts

BLOCKS = 3


def small_vit(seed=0, **kw):
    torch.manual_seed(seed)
    m = fv.FlexiViT(arch=dict(embed_dims=64, num_layers=BLOCKS, num_heads=4), **kw).eval()
    m.init_weights()
    with torch.no_grad():  # non-trivial biases and norms: a fusion that drops one would show
        for name, p in m.named_parameters():
            if 'norm' in name or name.endswith('bias'):
                p.add_(0.1 * torch.randn_like(p))
    return m


@pytest.mark.parametrize('exporter', ['torchscript', 'dynamo'])
def test_export_fuses_attention_layernorm_gelu_per_block(tmp_path, exporter):
    model = small_vit()
    baked = model.bake(8, 64).eval()
    path = str(tmp_path / 'vit.onnx')
    meta = export_onnx(baked, 64, path, target='backbone', exporter=exporter, meta=dict(patch_size=[8, 8]))
    counts = op_counts(path)
    print(f'{exporter}: fused ops {meta.get("fused_ops")}; all ops {counts}')
    assert counts.get('Attention') == BLOCKS  # one node per block: q, k, v, softmax and the products inside
    assert counts.get('Softmax', 0) == 0  # nothing left unfused
    assert counts.get('SkipLayerNormalization', 0) >= 2 * BLOCKS - 1  # residual + norm fused
    assert counts.get('BiasGelu', 0) + counts.get('FastGelu', 0) + counts.get('Gelu', 0) == BLOCKS
    assert counts.get('Erf', 0) == 0
    assert meta['fused_ops']['Attention'] == BLOCKS
    diff = check_onnx(path, baked, [torch.randn(2, 3, 64, 64), torch.randn(1, 3, 64, 64)])
    print(f'{exporter}: max abs diff fused ONNX Runtime vs PyTorch {diff:.3g}')
    assert diff < 1e-4


def test_multi_head_attention_form_and_int8_quantises_attention(tmp_path):
    model = small_vit(seed=1)
    baked = model.bake(16, 64).eval()
    mha = str(tmp_path / 'mha.onnx')
    export_onnx(baked, 64, mha, target='backbone', exporter='torchscript', attention_op='MultiHeadAttention')
    assert op_counts(mha).get('MultiHeadAttention') == BLOCKS and op_counts(mha).get('Softmax', 0) == 0
    assert check_onnx(mha, baked, [torch.randn(2, 3, 64, 64)]) < 1e-4
    fp32, int8 = str(tmp_path / 'a.onnx'), str(tmp_path / 'a8.onnx')
    export_onnx(baked, 64, fp32, target='backbone', exporter='torchscript')
    counts = quantize_int8(fp32, int8)
    assert counts.get('QAttention') == BLOCKS  # attention's qkv projection in int8
    assert counts.get('MatMulInteger', 0) + counts.get('DynamicQuantizeMatMul', 0) == 3 * BLOCKS  # proj, fc1, fc2
    assert counts.get('Softmax', 0) == 0 and counts.get('SkipLayerNormalization', 0) >= 2 * BLOCKS - 1
    assert read_meta(int8)['int8'] == 'per_channel=True, reduce_range=True'


@pytest.mark.parametrize('patch', [8, 16, 30, 48])
def test_eager_attention_uses_fused_sdpa_not_math(patch):
    """FlexiViT's blocks call scaled_dot_product_attention and it takes a fused CPU kernel at every
    patch size: with only the flash backend allowed the forward still runs, and the math path never shows."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.profiler import ProfilerActivity, profile
    model = fv.FlexiViT(arch=dict(embed_dims=64, num_layers=2, num_heads=4)).eval()
    x = torch.randn(1, 3, 240, 240)
    with torch.no_grad(), sdpa_kernel([SDPBackend.FLASH_ATTENTION]), profile(activities=[ProfilerActivity.CPU]) as prof:
        model(x, patch)
    names = {e.key for e in prof.key_averages()}
    sdpa = sorted(n for n in names if 'scaled_dot_product' in n)
    print(f'p{patch}: {sdpa}')
    assert 'aten::_scaled_dot_product_flash_attention_for_cpu' in names, sdpa
    assert not any('math' in n for n in sdpa), sdpa


def test_speed_rows_and_goals(tmp_path):
    """tools/benchmark_onnx.py's engine: one interleaved row per patch, every runtime's output checked."""
    from flexitransfer.deploy.speed import compare, format_row, goals, header
    model = small_vit(seed=2)
    runtimes = ['eager', 'ort', 'ort-int8', 'ort-unfused']
    rows = compare(model, [16, 32], 64, runtimes, runs=1, warmup=0, gemm=64, threads=1, tmp=str(tmp_path),
                   exporter='torchscript', echo=lambda s: None)
    assert [r['patch'] for r in rows] == [16, 32] and set(rows[0]['ms']) == set(runtimes)
    assert rows[0]['diff']['ort'] < 1e-4 and rows[0]['diff']['ort-unfused'] < 1e-4 and rows[0]['diff']['ort-int8'] < 0.5
    assert header(runtimes).count('|---') == len(runtimes) + 6
    assert format_row(rows[0], runtimes).startswith('| 16 | 16 |')
    text = '\n'.join(goals(rows))
    for goal in ('best fp32 >= 90 % of the GEMM rate at p <= 16', 'best fp32 >= 1.3x eager at every patch',
                 'best int8 >= 2x eager at every patch', 'eager alone vs eager'):
        assert goal in text
    assert 'incl. p = 8' in text and 'NOT met' in text.split('\n')[0]  # no p = 8 row: that goal cannot be met


def test_benchmark_offers_torch_compile():
    from flexitransfer.benchmark.tasks import RUNTIMES, resolve_runtimes
    assert 'torch-compile' in RUNTIMES
    assert resolve_runtimes(['torch', 'torch-compile'], torch.device('cpu')) == ['torch', 'torch-compile']
