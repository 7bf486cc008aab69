"""GPU readiness, proven on the CPU (issue 17, part 2).

- Multi-scale deformable attention without a compiled kernel for the device: the PyTorch fallback
  runs and equals mmcv's reference; with the kernel reported present the compiled function is
  called; the tiny panoptic model gets the portable module (same weights, same random stream);
  the seg and panoptic training steps call no compiled mmcv op at all.
- AMP: the PI-resize and the position-embedding resize run in full precision under autocast; a
  bf16 training step runs through the CPU AMP optimizer wrapper that tools/train.py --amp picks.
- Activation checkpointing: same outputs and gradients, blocks really checkpointed.
- tools/benchmark_train.py: one measurement in process, one through the tool (fresh process).
"""
import argparse
import importlib.util
import os.path as osp

import pytest
import torch
from conftest import ROOT, randomize
from mmengine.config import Config

import flexitransfer.models.layers.deform_attn as da
from flexitransfer.models import FlexiViT

TINY_PAN = 'configs/panoptic/tiny_panoptic_flexi.py'
TINY_SEG = 'configs/seg/tiny_seg_flexi.py'


# ----------------------------------------------------------------------------- deformable attention
def _msda_inputs(seed=0, bs=2, dims=32, shapes=((6, 8), (3, 4)), nq=10):
    g = torch.Generator().manual_seed(seed)
    spatial = torch.tensor(shapes, dtype=torch.long)
    start = torch.cat([spatial.new_zeros(1), (spatial[:, 0] * spatial[:, 1]).cumsum(0)[:-1]])
    nv = int((spatial[:, 0] * spatial[:, 1]).sum())
    return dict(query=torch.randn(bs, nq, dims, generator=g), value=torch.randn(bs, nv, dims, generator=g),
                reference_points=torch.rand(bs, nq, len(shapes), 2, generator=g), spatial_shapes=spatial,
                level_start_index=start)


def _msda_pair(seed=0):
    """mmcv's module and ours with the same random weights (zero-initialised offsets would hide bugs)."""
    kw = dict(embed_dims=32, num_heads=4, num_levels=2, num_points=3, dropout=0.0, batch_first=True)
    ref = randomize(da.MultiScaleDeformableAttention(**kw), seed)
    ours = da.FlexiMSDeformAttn(**kw)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def test_no_compiled_kernel_on_this_cpu():
    """The CPU-only mmcv wheel has no CPU (and no CUDA) kernel for it: the probe says so, as the op does."""
    da.clear_kernel_cache()
    assert da.kernel_available('cpu') is False
    x = _msda_inputs()
    with pytest.raises(RuntimeError, match='not found'):
        da.ext_module.ms_deform_attn_forward(
            x['value'].view(2, -1, 4, 8), x['spatial_shapes'], x['level_start_index'],
            torch.rand(2, 10, 4, 2, 3, 2), torch.rand(2, 10, 4, 2, 3), im2col_step=64)


def test_fallback_equals_mmcv_pytorch_reference(monkeypatch):
    """Kernel reported missing for the device: multi_scale_deformable_attn_pytorch runs (spied), the output
    and every gradient equal mmcv's own module, whose CPU path is that reference."""
    monkeypatch.setattr(da, 'kernel_available', lambda device, dtype=None: False)
    calls = []
    monkeypatch.setattr(da.MultiScaleDeformableAttnFunction, 'apply',
                        lambda *a: calls.append('compiled') or pytest.fail('compiled kernel called'))
    real = da.multi_scale_deformable_attn_pytorch
    monkeypatch.setattr(da, 'multi_scale_deformable_attn_pytorch', lambda *a: calls.append('pytorch') or real(*a))
    ref, ours = _msda_pair()
    x = _msda_inputs()
    out_ref, out = ref(**x), ours(**x)
    assert calls == ['pytorch']
    assert out.shape == (2, 10, 32) and torch.equal(out, out_ref)
    out_ref.square().sum().backward()
    out.square().sum().backward()
    for (n, a), b in zip(ref.named_parameters(), ours.parameters()):
        assert torch.equal(a.grad, b.grad), n


def test_compiled_path_taken_when_kernel_present(monkeypatch):
    """Kernel reported present: MultiScaleDeformableAttnFunction gets the tensors the reference gets.
    Unspied on this CPU the compiled op then fails (no kernel), proving it is the compiled path."""
    ref, ours = _msda_pair()
    x = _msda_inputs()
    monkeypatch.setattr(da, 'kernel_available', lambda device, dtype=None: True)
    with pytest.raises(RuntimeError, match='not found'):
        ours(**x)
    seen = []

    def spy(value, shapes, start, loc, weights, im2col_step):
        seen.append((tuple(value.shape), tuple(loc.shape), im2col_step))
        assert torch.equal(start, x['level_start_index'])
        return da.multi_scale_deformable_attn_pytorch(value, shapes, loc, weights)
    monkeypatch.setattr(da.MultiScaleDeformableAttnFunction, 'apply', spy)
    assert torch.equal(ours(**x), ref(**x))
    assert seen == [((2, 60, 4, 8), (2, 10, 4, 2, 3, 2), 64)]


def test_kernel_probe_cached_per_device_and_bounded(monkeypatch):
    probes = []
    monkeypatch.setattr(da, '_probe', lambda device, dtype: probes.append(str(device)) or device.index == 0)
    monkeypatch.setattr(da, 'MAX_CACHED_DEVICES', 2)
    da.clear_kernel_cache()
    try:
        assert da.kernel_available('cuda:0') and da.kernel_available(torch.device('cuda', 0), torch.float32)
        assert not da.kernel_available('cuda:1')
        assert probes == ['cuda:0', 'cuda:1']
        da.kernel_available('cuda:1', torch.float16)
        assert list(da._KERNEL_CACHE) == [('cuda:1', torch.float32), ('cuda:1', torch.float16)]
    finally:
        da.clear_kernel_cache()


def _scope(scope):
    from mmengine.registry import DefaultScope, init_default_scope
    DefaultScope._instance_dict.clear()
    init_default_scope(scope)


def _build(path, scope, **model_changes):
    from mmengine.registry import MODELS

    import flexitransfer.models.panoptic  # noqa: F401  (FlexiMask2Former in mmdet's registry)
    cfg = Config.fromfile(osp.join(ROOT, path))
    cfg.model.update(model_changes)
    _scope(scope)
    return cfg, MODELS.build(cfg.model)


def test_tiny_panoptic_model_builds_with_portable_attention():
    """Every deformable attention of the tiny panoptic model is FlexiMSDeformAttn; the swap keeps the
    weights and the random stream: same state dict as mmdet's plain Mask2Former built from the same seed."""
    torch.manual_seed(0)
    _, model = _build(TINY_PAN, 'mmdet')
    after = torch.rand(3)
    msda = [m for m in model.modules() if isinstance(m, da.MultiScaleDeformableAttention)]
    assert len(msda) == 1 and all(type(m) is da.FlexiMSDeformAttn for m in msda)  # 1 encoder layer
    torch.manual_seed(0)
    _, plain = _build(TINY_PAN, 'mmdet', type='Mask2Former')
    assert torch.equal(torch.rand(3), after)
    assert any(type(m) is da.MultiScaleDeformableAttention for m in plain.modules())
    a, b = model.state_dict(), plain.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture
def ext_calls(monkeypatch):
    """Every function of mmcv's compiled extension, spied: the names called land in the list."""
    import mmcv._ext as ext
    calls = []
    for name in dir(ext):
        fn = getattr(ext, name)
        if not name.startswith('_') and callable(fn):
            monkeypatch.setattr(ext, name, lambda *a, _n=name, _f=fn, **k: calls.append(_n) or _f(*a, **k))
    return calls


def test_seg_and_panoptic_steps_call_no_compiled_mmcv_op(ext_calls, monkeypatch):
    """As on a GPU with a CPU-only mmcv (kernel reported missing): the tiny panoptic model (loss, backward,
    predict) and the tiny segmenter (loss, backward) call no function of mmcv._ext."""
    from flexitransfer.datasets.synthetic import panoptic_batch, seg_batch
    monkeypatch.setattr(da, 'kernel_available', lambda device, dtype=None: False)
    _, pan = _build(TINY_PAN, 'mmdet')
    pan.backbone.patch_size = (12, 12)
    data = pan.data_preprocessor(panoptic_batch(96, 2, 4, 3), training=True)
    losses = pan.loss(data['inputs'], data['data_samples'])
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    pan.eval()
    with torch.no_grad():
        pred = pan.predict(data['inputs'], data['data_samples'])
    assert pred[0].pred_panoptic_seg.sem_seg.shape[-2:] == (96, 96)
    _, seg = _build(TINY_SEG, 'mmseg')
    data = seg.data_preprocessor(seg_batch(120, 2, 5), training=True)
    losses = seg.loss(data['inputs'], data['data_samples'])
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    assert ext_calls == []


# ----------------------------------------------------------------------------- AMP
@pytest.mark.parametrize('patch,grid', [(8, (15, 15)), (16, (3, 3))])
def test_resize_runs_in_full_precision_under_autocast(patch, grid):
    """Under CPU bf16 autocast the resized kernel and grid equal the fp32 ones exactly (fp32 out); the
    same matmuls left to autocast (bf16) are off by far more than that."""
    from flexitransfer.ops import bilinear_matrix, kernel_resize_matrix, resize_patch_embed, resize_pos_embed
    vit = randomize(FlexiViT(arch=dict(embed_dims=64, num_layers=1, num_heads=2)))
    w, pos = vit.patch_embed.weight.detach(), vit.pos_embed.detach()
    ref_w, ref_pos = vit._resize_now((patch, patch), grid)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        am_w, am_pos = vit._resize_now((patch, patch), grid)
        assert torch.equal(resize_patch_embed(w, patch), ref_w) and torch.equal(resize_pos_embed(pos, 7, grid), ref_pos)
        naive_w = w.reshape(w.shape[0] * 3, -1) @ kernel_resize_matrix(32, patch).float().T
        naive_pos = bilinear_matrix(7, grid, True).float() @ pos
    assert am_w.dtype == am_pos.dtype == torch.float32
    assert torch.equal(am_w, ref_w) and torch.equal(am_pos, ref_pos)
    assert naive_w.dtype == torch.bfloat16  # what the resize would do without its autocast guard
    err_w = (naive_w.float().reshape(ref_w.shape) - ref_w).abs().max() / ref_w.abs().max()
    err_pos = (naive_pos.float() - ref_pos).abs().max() / ref_pos.abs().max()
    assert err_w > 1e-3 and err_pos > 1e-3, (err_w, err_pos)


def _train_tool():
    import sys
    if osp.join(ROOT, 'tools') not in sys.path:
        sys.path.insert(0, osp.join(ROOT, 'tools'))  # for its `import _bootstrap`
    spec = importlib.util.spec_from_file_location('train_tool', osp.join(ROOT, 'tools', 'train.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_amp_flag_fp16_on_cuda_bf16_on_cpu():
    from flexitransfer.engine import amp_optim_wrapper
    args = argparse.Namespace(config=osp.join(ROOT, TINY_SEG), launcher='none', cfg_options=None, work_dir='w',
                              amp=True, resume=None)
    cfg = _train_tool().build_cfg(args)
    if not torch.cuda.is_available():
        assert cfg.optim_wrapper.type == 'CPUAmpOptimWrapper' and cfg.optim_wrapper.dtype == 'bfloat16'
    ow = amp_optim_wrapper(dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.1)), device='cuda')
    assert (ow['type'], ow['dtype'], ow['loss_scale']) == ('AmpOptimWrapper', 'float16', 'dynamic')
    ow = amp_optim_wrapper(dict(type='OptimWrapper', dtype='bfloat16'), device='cuda')
    assert ow['dtype'] == 'bfloat16'  # a config's choice is kept on CUDA
    assert amp_optim_wrapper(dict(type='AmpOptimWrapper'), device='cpu')['type'] == 'CPUAmpOptimWrapper'


@pytest.mark.skipif(torch.cuda.is_available(), reason='mmengine builds its AmpOptimWrapper where CUDA exists')
def test_mmengine_amp_wrapper_refuses_this_cpu():
    """Why CPUAmpOptimWrapper exists: mmengine 0.10.7's AmpOptimWrapper asserts an accelerator."""
    from mmengine.optim import AmpOptimWrapper
    with pytest.raises(AssertionError, match='only available'):
        AmpOptimWrapper(optimizer=torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1))


def test_bf16_training_step_on_cpu():
    """tools/train.py --amp's optimizer wrapper on the tiny segmenter: one train_step runs under bf16
    autocast (the blocks' linears compute in bf16), the loss is finite, parameters (fp32) move."""
    from mmengine.optim import build_optim_wrapper

    from flexitransfer.datasets.synthetic import seg_batch
    from flexitransfer.engine import CPUAmpOptimWrapper
    args = argparse.Namespace(config=osp.join(ROOT, TINY_SEG), launcher='none', cfg_options=None, work_dir='w',
                              amp=True, resume=None)
    cfg = _train_tool().build_cfg(args)
    cfg.optim_wrapper = dict(cfg.optim_wrapper, type='CPUAmpOptimWrapper', dtype='bfloat16')
    _, model = _build(TINY_SEG, 'mmseg')
    model.backbone.patch_size = (24, 24)
    ow = build_optim_wrapper(model, cfg.optim_wrapper)
    assert isinstance(ow, CPUAmpOptimWrapper)
    dtypes = []
    model.backbone.blocks[0].mlp.fc1.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    log = model.train_step(seg_batch(120, 2, 5), ow)
    assert dtypes == [torch.bfloat16]
    assert torch.isfinite(log['loss']) and log['loss'] > 0
    for n, p in model.named_parameters():
        assert p.dtype == torch.float32
    moved = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert 'backbone.patch_embed.weight' in moved and 'backbone.pos_embed' in moved


# ----------------------------------------------------------------------------- activation checkpointing
def test_with_cp_same_outputs_and_gradients(monkeypatch):
    """Tiny FlexiViT (drop path on, so recomputation must replay the random masks) at p = 8 and 16: with_cp
    gives the outputs and all parameter gradients of the plain run (1e-6); the blocks are really
    checkpointed in training and not in eval / no_grad."""
    import flexitransfer.models.backbones.flexivit as fv
    n_cp = []
    real = fv.checkpoint
    monkeypatch.setattr(fv, 'checkpoint', lambda *a, **k: n_cp.append(1) or real(*a, **k))
    x = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    for p in (8, 16):
        results = []
        for cp in (False, True):
            vit = randomize(FlexiViT(arch=dict(embed_dims=64, num_layers=3, num_heads=2), drop_path_rate=0.2,
                                     with_cp=cp, out_indices=(1, 2))).train()
            torch.manual_seed(0)
            outs = vit(x, patch_size=p)
            loss = sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() for o in outs)
            loss.backward()
            results.append((outs, {n: q.grad for n, q in vit.named_parameters()}))
            assert len(n_cp) == (3 if cp else 0)
            n_cp.clear()
        (o0, g0), (o1, g1) = results
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(o0, o1))
        assert g0.keys() == g1.keys() and all(g0[n] is not None for n in g0)
        for n in g0:
            assert torch.allclose(g0[n], g1[n], atol=1e-6), (p, n)
    vit.eval()
    vit(x, patch_size=8)
    vit.train()
    with torch.no_grad():
        vit.forward_features(x, patch_size=8)
    assert n_cp == []


# ----------------------------------------------------------------------------- training benchmark
def test_measure_train_step_in_process():
    from flexitransfer.benchmark.train import measure_train_step, train_input_size
    assert train_input_size(Config.fromfile(osp.join(ROOT, TINY_PAN))) == (96, 96)
    assert train_input_size(Config.fromfile(osp.join(ROOT, 'configs/seg/ade20k_flexi_b.py'))) == (480, 480)
    row = measure_train_step(osp.join(ROOT, TINY_SEG), patch=24, iters=1, with_cp=True, batch_size=2)
    assert (row['tokens'], row['batch'], row['with_cp'], row['img_size']) == (25, 2, True, '120x120')
    assert row['loss'] > 0 and row['images_per_s'] > 0 and row['tokens_per_s'] == pytest.approx(
        25 * row['images_per_s'], rel=1e-2)


@pytest.mark.parametrize('config,tokens', [('configs/cls/tiny_cls_flexi.py', 25),
                                            ('configs/retrieval/tiny_lit_flexi.py', 25),
                                            ('configs/det/tiny_owl_det.py', 64)])
def test_measure_train_step_every_task(config, tokens):
    """benchmark_train takes any config: classification, LiT and detection get batches of their own kind
    (a training step with a finite loss; LiT's contrastive loss on a batch of 2 pairs is > 0)."""
    from flexitransfer.benchmark.train import measure_train_step
    row = measure_train_step(osp.join(ROOT, config), patch=12, iters=1, batch_size=2)
    assert row['tokens'] == tokens and row['batch'] == 2 and row['loss'] > 0 and row['loss'] == row['loss']


def test_benchmark_train_fresh_process(tmp_path, capsys):
    """What tools/benchmark_train.py calls (argparse + this): the measurement in a fresh process, table, CSV."""
    from flexitransfer.benchmark.train import benchmark_train
    out = str(tmp_path / 'bt.csv')
    benchmark_train(osp.join(ROOT, TINY_SEG), [24], iters=1, device='cpu', out=out)
    text = capsys.readouterr().out
    assert '| patch | tokens | with_cp |' in text and 'minus the RSS after building' in text
    import csv
    rows = list(csv.DictReader(open(out)))
    assert [(r['patch'], r['tokens'], r['with_cp']) for r in rows] == [('24', '25', 'False')]
    assert float(rows[0]['peak_mib']) > float(rows[0]['peak_over_base_mib']) >= 0
