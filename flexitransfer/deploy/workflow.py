"""Deploy a trained model at one patch size, the whole workflow of ``tools/resize_deploy.py``:
bake the patch in (:mod:`.bake`), write config + checkpoint, verify the rebuilt model against the
flexible one, optionally export to timm / ONNX (checked in ONNX Runtime) and int8 with the test
metric side by side. ``a`` is the tool's argument namespace (see ``tools/resize_deploy.py --help``).
"""
import os
import os.path as osp
import re
import sys

import torch

from ..apis import init_model, load_config
from ..benchmark.timing import interleaved_median_ms
from ..engine.patch_size import flexi_modules, set_patch_size
from ..evaluation.main_metric import main_metric
from ..ops import to_2tuple
from .bake import bake_model, deploy_config, infer_img_size
from .evaluate import evaluate
from .export import export_module, export_onnx, to_timm_vit
from .predictors import has_predictor
from .quantize import quantize_int8
from .session import OnnxFunction
from .verify import check_onnx, max_abs_diff, test_inputs


def forward(model, x):
    return model(x, mode='tensor')


def deploy_at_patch(a):
    """Bake, write, verify (and export) ``a.config`` / ``a.checkpoint`` at ``a.patch``; exits non-zero above ``a.tol``."""
    a.onnx = a.onnx or a.int8
    patch = a.patch[0] if len(a.patch) == 1 else tuple(a.patch[:2])
    cfg = load_config(a.config, a.cfg_options)
    img = tuple(a.img_size) if a.img_size else infer_img_size(cfg)
    if img is None:
        sys.exit('cannot tell the deployment image size from the config: pass --img-size H W')
    out_dir = a.out or osp.join('work_dirs', 'deploy')
    os.makedirs(out_dir, exist_ok=True)
    ptag = str(patch) if isinstance(patch, int) else f'{patch[0]}x{patch[1]}'
    stem = osp.join(out_dir, f'{osp.splitext(osp.basename(a.config))[0]}_p{ptag}')

    flexible = init_model(cfg, a.checkpoint)  # strict: a missing tensor is an error naming it
    if a.int8 and a.onnx_target == 'tensor' and not has_predictor(flexible):
        sys.exit(f'--int8 measures the test metric of the exported graph, but a {type(flexible).__name__} has no '
                 f"ONNX predictor for target 'tensor' (flexitransfer.deploy.register_predictor): add "
                 f'--onnx-target backbone')
    set_patch_size(flexible, patch)
    deployed = bake_model(flexible, patch, img)
    torch.save({'state_dict': deployed.state_dict(),
                'meta': {'deployed_patch': patch, 'img_size': list(img), 'source_checkpoint': a.checkpoint}},
               stem + '.pth')
    dcfg = deploy_config(cfg, patch, img, osp.abspath(stem + '.pth'))
    dcfg.dump(stem + '.py')
    print(f'wrote {stem}.py and {stem}.pth (patch {ptag}, image {img[0]}x{img[1]})')

    # verify through the normal build path: config + checkpoint from disk
    reloaded = init_model(stem + '.py', stem + '.pth')
    torch.manual_seed(0)
    x = torch.randn(2, flexi_modules(flexible)[0].in_channels, *img)  # the config's channel count
    with torch.no_grad():
        diff = max_abs_diff(forward(flexible, x), forward(reloaded, x))
        bb_f, bb_d = flexi_modules(flexible)[0], flexi_modules(reloaded)[0]
        bdiff = max_abs_diff(bb_f(x), bb_d(x))
        print(f'max abs diff deployed vs flexible at patch {ptag}: task output {diff:.3g}, backbone {bdiff:.3g}')
        x1 = x[:1]
        t_flex, t_dep = interleaved_median_ms(lambda t: forward(flexible, t), lambda t: forward(reloaded, t),
                                               x1, a.runs)
        print(f'forward (batch 1, median of {a.runs}): flexible {t_flex:.2f} ms, deployed {t_dep:.2f} ms, '
              f'ratio deployed/flexible {t_dep / t_flex:.3f}')
        if getattr(a, 'compile', False):
            diff = max(diff, compile_check(reloaded, x, a.runs, ptag))
        if a.export_timm:
            timm_vit = to_timm_vit(bb_d, img)
            torch.save(timm_vit.state_dict(), stem + '_timm.pth')
            tdiff = max_abs_diff(timm_vit.forward_features(x), bb_d.forward_features(x))
            print(f'wrote {stem}_timm.pth (timm VisionTransformer, patch {ptag}, img_size {img}); '
                  f'max abs diff of tokens vs deployed: {tdiff:.3g}')
            diff = max(diff, tdiff)
    if max(diff, bdiff) > a.tol:
        sys.exit(f'verification failed: max abs diff {max(diff, bdiff):.3g} > tol {a.tol}')
    if a.onnx:
        export_and_check(a, dcfg, reloaded, stem, patch, ptag, img, x)




def compile_check(deployed, x, runs, ptag) -> float:
    """torch.compile of the deployed model: max abs diff to eager and the speed-up (batch 1), printed."""
    module = export_module(deployed, 'tensor').eval()
    compiled = torch.compile(module)
    with torch.no_grad():
        diff = max_abs_diff(module(x), compiled(x))  # compiles (minutes on a CPU for a big model)
        t_eager, t_comp = interleaved_median_ms(module, compiled, x[:1], runs)
    print(f'torch.compile at patch {ptag}: max abs diff vs eager {diff:.3g}; forward (batch 1, median of {runs}) '
          f'eager {t_eager:.2f} ms, compiled {t_comp:.2f} ms, speed-up {t_eager / t_comp:.2f}x')
    return diff


def export_and_check(a, dcfg, deployed, stem, patch, ptag, img, x):
    """ONNX export of the deployed model, checked against it; with --int8, the metric table."""
    path = stem + '.onnx'
    meta = dict(patch_size=list(to_2tuple(patch)), config=osp.basename(a.config), source_checkpoint=a.checkpoint)
    info = export_onnx(deployed, img, path, target=a.onnx_target, exporter=a.exporter, meta=meta,
                       in_channels=x.shape[1])  # the config's channel count (1 for the digits models)
    fused = ', '.join(f'{v} {k}' for k, v in info.get('fused_ops', {}).items()) or 'none'
    print(f'wrote {path} (target {a.onnx_target}, {a.exporter} exporter, {osp.getsize(path) / 2 ** 20:.1f} MiB; '
          f'fused ops: {fused})')
    inputs, what = [x], ['random']
    try:
        inputs.append(test_inputs(dcfg, deployed, img))
        what.append(f'{inputs[-1].shape[0]} test images')
    except Exception as e:  # noqa: BLE001  (no data here: the random check still runs)
        if a.int8:
            sys.exit(f'--int8 measures the test metric, but the config\'s test set cannot be loaded ({e}); point it '
                     f'at the data with --cfg-options test_dataloader.dataset.data_root=...')
        print(f'note: no test images for the ONNX check ({type(e).__name__}: {e}); random inputs only')
    diffs = [check_onnx(path, deployed, [t]) for t in inputs]
    print(f'max abs diff ONNX Runtime vs PyTorch at patch {ptag} ({a.onnx_target}): '
          + ', '.join(f'{w} {d:.3g}' for w, d in zip(what, diffs)))
    fn = OnnxFunction(path)
    module = export_module(deployed, a.onnx_target)
    x1 = x[:1]
    with torch.no_grad():
        t_pt, t_ort = interleaved_median_ms(module, fn, x1, a.runs)
    print(f'forward (batch 1, median of {a.runs}): PyTorch {t_pt:.2f} ms, ONNX Runtime {t_ort:.2f} ms, '
          f'speed-up {t_pt / t_ort:.2f}x')
    if max(diffs) > a.tol:
        sys.exit(f'ONNX verification failed: max abs diff {max(diffs):.3g} > tol {a.tol}')
    if not a.int8:
        return
    qpath = stem + '_int8.onnx'
    counts = quantize_int8(path, qpath)
    qfn = OnnxFunction(qpath)
    with torch.no_grad():
        qdiff = max_abs_diff(fn(inputs[-1]), qfn(inputs[-1]))
        t_ort, t_q = interleaved_median_ms(fn, qfn, x1, a.runs)
    print(f'wrote {qpath} ({counts.get("MatMulInteger", 0) + counts.get("DynamicQuantizeMatMul", 0)} int8 linear '
          f'layers + {counts.get("QAttention", 0)} int8 attention, per channel, reduced range, '
          f'{osp.getsize(qpath) / 2 ** 20:.1f} MiB); max abs diff int8 vs fp32 on {what[-1]}: {qdiff:.3g}; '
          f'forward {t_q:.2f} ms vs fp32 {t_ort:.2f} ms ({t_ort / t_q:.2f}x)')
    ckpt = stem + '.pth'
    results = {'torch': evaluate(dcfg, ckpt), 'onnxruntime': evaluate(dcfg, ckpt, path),
               'onnxruntime-int8': evaluate(dcfg, ckpt, qpath)}
    print(metric_table(results, ptag))


def metric_table(results: dict, ptag: str) -> str:
    """Test metrics per runtime side by side, and the int8 drop against PyTorch fp32."""
    keys = [k for k in results['torch'] if not re.match(r'p\d+(x\d+)?/', k)]  # unprefixed (the deployed patch)
    lines = [f'\ntest-set metrics at patch {ptag}:', '| metric | torch fp32 | onnxruntime fp32 | onnxruntime int8 | '
             'int8 drop |', '|---|---|---|---|---|']
    for k in keys:
        t, o, q = (results[r].get(k, float('nan')) for r in ('torch', 'onnxruntime', 'onnxruntime-int8'))
        lines.append(f'| {k} | {t:.2f} | {o:.2f} | {q:.2f} | {t - q:+.2f} |')
    main = main_metric(keys)
    t, q = results['torch'][main], results['onnxruntime-int8'].get(main, float('nan'))
    lines.append(f'\nint8 metric drop: {main} {t:.2f} -> {q:.2f} (drop {t - q:+.2f})')
    return '\n'.join(lines)


