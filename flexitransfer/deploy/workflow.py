"""Deploy a trained model at one patch size, the whole workflow of ``tools/resize_deploy.py``:
bake the patch in (:mod:`.bake`), write config + checkpoint, verify the rebuilt model against the
flexible one, optionally export to timm / ONNX (checked in ONNX Runtime) and int8 with the test
metric side by side. Each step prints what it wrote and measured as it goes (a torch.compile or
int8 run takes minutes on a CPU); :func:`bake_checkpoint` returns it all as a :class:`BakeResult`.
"""
from __future__ import annotations

import os
import os.path as osp
import re
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple, Union

import torch

from ..apis import init_model, load_config
from ..benchmark.timing import interleaved_median_ms
from ..engine.patch_size import flexi_modules, set_patch_size
from ..evaluation.main_metric import main_metric
from ..ops import to_2tuple
from .bake import bake_model, deploy_config, infer_img_size
from .export import export_module, export_onnx, to_timm_vit
from .metric import evaluate_onnx
from .predictors import has_predictor
from .quantize import quantize_int8
from .session import OnnxFunction
from .verify import VerificationError, check_onnx, max_abs_diff, test_inputs

Patch = Union[int, Tuple[int, int]]


@dataclass
class BakeResult:
    """What :func:`bake_checkpoint` wrote and measured (``None``: that step was not asked for).

    Attributes:
        config (str): the deployed config (a normal config: tools/test.py, init_model, ...).
        checkpoint (str): its checkpoint; ``meta['baked_patch']`` is the patch.
        max_abs_diff (float): task output (``model(x, mode='tensor')``), deployed vs flexible.
        backbone_max_abs_diff (float): the FlexiViT's outputs, deployed vs flexible.
        speed_ratio (float): forward time deployed / flexible (batch 1, median, timed interleaved).
        timm_checkpoint (str): the timm VisionTransformer state dict of the backbone.
        timm_max_abs_diff (float): its tokens vs the deployed backbone's.
        compile_max_abs_diff (float): torch.compile of the deployed model vs eager.
        compile_speedup (float): eager / compiled forward time.
        onnx (str): the ONNX graph.
        onnx_max_abs_diff (float): ONNX Runtime vs PyTorch, over random and (when loadable) test inputs.
        onnx_speedup (float): PyTorch / ONNX Runtime forward time.
        int8_onnx (str): the dynamic-int8 graph.
        int8_max_abs_diff (float): int8 vs fp32 graph outputs.
        int8_speedup (float): fp32 / int8 forward time in ONNX Runtime.
        metrics (dict): runtime ('torch', 'onnxruntime', 'onnxruntime-int8') -> test metrics.
    """
    config: str
    checkpoint: str
    max_abs_diff: float = float('nan')
    backbone_max_abs_diff: float = float('nan')
    speed_ratio: float = float('nan')
    timm_checkpoint: Optional[str] = None
    timm_max_abs_diff: Optional[float] = None
    compile_max_abs_diff: Optional[float] = None
    compile_speedup: Optional[float] = None
    onnx: Optional[str] = None
    onnx_max_abs_diff: Optional[float] = None
    onnx_speedup: Optional[float] = None
    int8_onnx: Optional[str] = None
    int8_max_abs_diff: Optional[float] = None
    int8_speedup: Optional[float] = None
    metrics: Optional[Dict[str, dict]] = None

    def torch_max_abs_diff(self) -> float:
        """The largest PyTorch-side difference: task output, backbone, timm tokens, torch.compile."""
        return max(d for d in (self.max_abs_diff, self.backbone_max_abs_diff, self.timm_max_abs_diff,
                               self.compile_max_abs_diff) if d is not None)


def _forward(model, x):
    return model(x, mode='tensor')


def _one_patch(patch) -> Patch:
    if isinstance(patch, int):
        return patch
    sizes = tuple(int(p) for p in patch)
    if len(sizes) not in (1, 2):
        raise ValueError(f'patch must be one size or (H, W), got {patch!r}')
    return sizes[0] if len(sizes) == 1 else sizes


def bake_checkpoint(config: str, checkpoint: str, patch: Union[Patch, Sequence[int]], *,
                    img_size: Optional[Union[int, Sequence[int]]] = None, out_dir: Optional[str] = None,
                    export_timm: bool = False, onnx: bool = False, onnx_target: str = 'tensor',
                    exporter: str = 'dynamo', int8: bool = False, compile: bool = False, tol: float = 1e-4,
                    runs: int = 30, cfg_options: Optional[dict] = None) -> BakeResult:
    """Bake ``patch`` into a trained model, write ``<out_dir>/<config name>_p<patch>.py`` / ``.pth`` (a
    normal config + checkpoint) and verify the model rebuilt from them against the flexible one.

    Args:
        config (str): the trained model's config file.
        checkpoint (str): its checkpoint (loaded strictly).
        patch (int | tuple[int, int]): the patch size to bake in (one size, or (H, W)).
        img_size (int | tuple[int, int], optional): the deployment input size. Default: the config's test
            crop / input size (:func:`infer_img_size`).
        out_dir (str, optional): output folder. Default: ``work_dirs/deploy``.
        export_timm (bool): also write and check a timm VisionTransformer state dict of the backbone.
        onnx (bool): also export to ONNX and check it in ONNX Runtime (random and test inputs).
        onnx_target (str): 'tensor' (the task output) or 'backbone' (the FlexiViT's outputs).
        exporter (str): 'dynamo' or 'torchscript' (``torch.onnx.export``).
        int8 (bool): also write a dynamic-int8 graph and measure the test metric in PyTorch, ONNX Runtime
            fp32 and int8 (implies ``onnx``).
        compile (bool): also check torch.compile of the deployed model.
        tol (float): the largest max abs difference a check accepts.
        runs (int): timed forwards per measurement.
        cfg_options (dict, optional): config overrides (e.g. the test set's ``data_root``).

    Returns:
        BakeResult: the paths written, the max abs differences and the speed ratios.

    Raises:
        ValueError: no image size in the config and none given; ``int8`` with ``onnx_target='tensor'`` for
            a model without an ONNX predictor, or with a test set that cannot be loaded.
        VerificationError: a difference above ``tol`` (its ``result`` holds what was written and measured).
    """
    onnx = onnx or int8
    patch = _one_patch(patch)
    cfg = load_config(config, cfg_options)
    img = to_2tuple(img_size) if img_size else infer_img_size(cfg)
    if img is None:
        raise ValueError('cannot tell the deployment image size from the config: pass --img-size H W '
                         '(img_size=(H, W))')
    out_dir = out_dir or osp.join('work_dirs', 'deploy')
    os.makedirs(out_dir, exist_ok=True)
    ptag = str(patch) if isinstance(patch, int) else f'{patch[0]}x{patch[1]}'
    stem = osp.join(out_dir, f'{osp.splitext(osp.basename(config))[0]}_p{ptag}')

    flexible = init_model(cfg, checkpoint)  # strict: a missing tensor is an error naming it
    if int8 and onnx_target == 'tensor' and not has_predictor(flexible):
        raise ValueError(f'--int8 measures the test metric of the exported graph, but a {type(flexible).__name__} '
                         f"has no ONNX predictor for target 'tensor' (flexitransfer.deploy.register_predictor): "
                         f'add --onnx-target backbone')
    set_patch_size(flexible, patch)
    deployed = bake_model(flexible, patch, img)
    torch.save({'state_dict': deployed.state_dict(),
                'meta': {'baked_patch': patch, 'img_size': list(img), 'source_checkpoint': checkpoint}},
               stem + '.pth')
    dcfg = deploy_config(cfg, patch, img, osp.abspath(stem + '.pth'))
    dcfg.dump(stem + '.py')
    print(f'wrote {stem}.py and {stem}.pth (patch {ptag}, image {img[0]}x{img[1]})')
    result = BakeResult(config=stem + '.py', checkpoint=stem + '.pth')

    # verify through the normal build path: config + checkpoint from disk
    reloaded = init_model(stem + '.py', stem + '.pth')
    torch.manual_seed(0)
    x = torch.randn(2, flexi_modules(flexible)[0].in_channels, *img)  # the config's channel count
    _check_torch(result, flexible, reloaded, x, ptag, img, stem, export_timm, compile, runs)
    if result.torch_max_abs_diff() > tol:
        raise VerificationError(f'verification failed: max abs diff {result.torch_max_abs_diff():.3g} > tol {tol}',
                                result)
    if onnx:
        meta = dict(patch_size=list(to_2tuple(patch)), config=osp.basename(config), source_checkpoint=checkpoint)
        _export_and_check(result, dcfg, reloaded, x, meta, ptag, img, stem, onnx_target, exporter, int8, tol, runs)
    return result


def _check_torch(result: BakeResult, flexible, deployed, x, ptag, img, stem, export_timm, compile, runs) -> None:
    """Deployed vs flexible (task output, backbone, speed), and the timm / torch.compile checks, into ``result``."""
    with torch.no_grad():
        result.max_abs_diff = max_abs_diff(_forward(flexible, x), _forward(deployed, x))
        bb_f, bb_d = flexi_modules(flexible)[0], flexi_modules(deployed)[0]
        result.backbone_max_abs_diff = max_abs_diff(bb_f(x), bb_d(x))
        print(f'max abs diff deployed vs flexible at patch {ptag}: task output {result.max_abs_diff:.3g}, '
              f'backbone {result.backbone_max_abs_diff:.3g}')
        t_flex, t_dep = interleaved_median_ms(lambda t: _forward(flexible, t), lambda t: _forward(deployed, t),
                                              x[:1], runs)
        result.speed_ratio = t_dep / t_flex
        print(f'forward (batch 1, median of {runs}): flexible {t_flex:.2f} ms, deployed {t_dep:.2f} ms, '
              f'ratio deployed/flexible {result.speed_ratio:.3f}')
        if compile:
            result.compile_max_abs_diff, result.compile_speedup = compile_check(deployed, x, runs, ptag)
        if export_timm:
            timm_vit = to_timm_vit(bb_d, img)
            result.timm_checkpoint = stem + '_timm.pth'
            torch.save(timm_vit.state_dict(), result.timm_checkpoint)
            result.timm_max_abs_diff = max_abs_diff(timm_vit.forward_features(x), bb_d.forward_features(x))
            print(f'wrote {result.timm_checkpoint} (timm VisionTransformer, patch {ptag}, img_size {img}); '
                  f'max abs diff of tokens vs deployed: {result.timm_max_abs_diff:.3g}')


def compile_check(deployed, x, runs, ptag) -> Tuple[float, float]:
    """torch.compile of the deployed model: max abs diff to eager and the speed-up (batch 1), printed and returned."""
    module = export_module(deployed, 'tensor').eval()
    compiled = torch.compile(module)
    with torch.no_grad():
        diff = max_abs_diff(module(x), compiled(x))  # compiles (minutes on a CPU for a big model)
        t_eager, t_comp = interleaved_median_ms(module, compiled, x[:1], runs)
    print(f'torch.compile at patch {ptag}: max abs diff vs eager {diff:.3g}; forward (batch 1, median of {runs}) '
          f'eager {t_eager:.2f} ms, compiled {t_comp:.2f} ms, speed-up {t_eager / t_comp:.2f}x')
    return diff, t_eager / t_comp


def _export_and_check(result: BakeResult, dcfg, deployed, x, meta, ptag, img, stem, onnx_target, exporter, int8,
                      tol, runs) -> None:
    """ONNX export of the deployed model, checked against it; with ``int8``, the metric table."""
    path = result.onnx = stem + '.onnx'
    info = export_onnx(deployed, img, path, target=onnx_target, exporter=exporter, meta=meta,
                       in_channels=x.shape[1])  # the config's channel count (1 for the digits models)
    fused = ', '.join(f'{v} {k}' for k, v in info.get('fused_ops', {}).items()) or 'none'
    print(f'wrote {path} (target {onnx_target}, {exporter} exporter, {osp.getsize(path) / 2 ** 20:.1f} MiB; '
          f'fused ops: {fused})')
    inputs, what = [x], ['random']
    try:
        inputs.append(test_inputs(dcfg, deployed, img))
        what.append(f'{inputs[-1].shape[0]} test images')
    except Exception as e:  # no data here: the random check still runs
        if int8:
            raise ValueError(f'--int8 measures the test metric, but the config\'s test set cannot be loaded ({e}); '
                             f'point it at the data with --cfg-options test_dataloader.dataset.data_root=...') from e
        print(f'note: no test images for the ONNX check ({type(e).__name__}: {e}); random inputs only')
    diffs = [check_onnx(path, deployed, [t]) for t in inputs]
    result.onnx_max_abs_diff = max(diffs)
    print(f'max abs diff ONNX Runtime vs PyTorch at patch {ptag} ({onnx_target}): '
          + ', '.join(f'{w} {d:.3g}' for w, d in zip(what, diffs)))
    fn = OnnxFunction(path)
    module = export_module(deployed, onnx_target)
    with torch.no_grad():
        t_pt, t_ort = interleaved_median_ms(module, fn, x[:1], runs)
    result.onnx_speedup = t_pt / t_ort
    print(f'forward (batch 1, median of {runs}): PyTorch {t_pt:.2f} ms, ONNX Runtime {t_ort:.2f} ms, '
          f'speed-up {t_pt / t_ort:.2f}x')
    if result.onnx_max_abs_diff > tol:
        raise VerificationError(f'ONNX verification failed: max abs diff {result.onnx_max_abs_diff:.3g} > tol {tol}',
                                result)
    if int8:
        _int8(result, dcfg, fn, inputs[-1], what[-1], x[:1], ptag, stem, runs)


def _int8(result: BakeResult, dcfg, fn: OnnxFunction, check_x, what: str, x1, ptag, stem, runs) -> None:
    """The dynamic-int8 graph: written, compared with fp32 (outputs, speed), and the test metric per runtime."""
    qpath = result.int8_onnx = stem + '_int8.onnx'
    counts = quantize_int8(result.onnx, qpath)
    qfn = OnnxFunction(qpath)
    with torch.no_grad():
        result.int8_max_abs_diff = max_abs_diff(fn(check_x), qfn(check_x))
        t_ort, t_q = interleaved_median_ms(fn, qfn, x1, runs)
    result.int8_speedup = t_ort / t_q
    print(f'wrote {qpath} ({counts.get("MatMulInteger", 0) + counts.get("DynamicQuantizeMatMul", 0)} int8 linear '
          f'layers + {counts.get("QAttention", 0)} int8 attention, per channel, reduced range, '
          f'{osp.getsize(qpath) / 2 ** 20:.1f} MiB); max abs diff int8 vs fp32 on {what}: '
          f'{result.int8_max_abs_diff:.3g}; forward {t_q:.2f} ms vs fp32 {t_ort:.2f} ms ({t_ort / t_q:.2f}x)')
    ckpt = result.checkpoint
    result.metrics = {'torch': evaluate_onnx(dcfg, ckpt), 'onnxruntime': evaluate_onnx(dcfg, ckpt, result.onnx),
                      'onnxruntime-int8': evaluate_onnx(dcfg, ckpt, qpath)}
    print(metric_table(result.metrics, ptag))


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
