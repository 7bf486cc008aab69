"""GPU self-check (``tools/gpu_check.py``): what a user runs after installing on a GPU machine.

One call writes ``OUT/report.md`` and one CSV per section:

(a) ``parity.csv``: the five tasks' tiny models (checkpoints passed in, else seeded random weights) give
    the same outputs on the device as on the CPU (``model(inputs, samples, mode='tensor')`` on a
    synthetic batch, every output tensor, per patch size). On CUDA the device side runs with TF32 off,
    so only the order of floating-point sums differs. ``--device cpu`` compares one thread with several
    (other reduction splits): the same code path, checked without a GPU.
(b) ``train.csv``: per config x patch x ``with_cp``, training steps as ``tools/train.py`` builds them
    (config -> ``amp_optim_wrapper`` -> model + optimizer wrapper -> ``model.train_step``, through
    :func:`flexitransfer.benchmark.train.measure_train_step`) on synthetic batches, random weights:
    images/s, tokens/s, peak memory (CUDA ``max_memory_allocated``; on a CPU the process's peak RSS
    so far, measured in this process), MFU = training FLOPs per image (torch's FlopCounterMode over one
    step, forward + backward, without the recomputation of ``with_cp``) x images/s over the
    measured matmul rate of the same dtype.
(c) ``timm.csv``: FlexiViT against timm's ``VisionTransformer`` holding the same weights
    (:func:`flexitransfer.deploy.to_timm_vit` of the model baked at p), timed interleaved in this
    process, and the SDPA kernel that runs (the profiler's aten op names). On CUDA the math
    (unfused) path at p = 8 is a failure.
(d) ``patch_schedule.csv``: training with the config's random patch sizes (the draws of
    ``RandomPatchSizeHook``) against training at the one patch size whose token count is nearest the
    random schedule's mean: the cost of changing shapes, per token.

Failures (parity beyond tolerance, the math path, a section that raised) are written into the
report first; then :func:`gpu_check` raises ``RuntimeError`` naming them.
"""
from __future__ import annotations

import contextlib
import copy
import datetime
import gc
import logging
import math
import os
import os.path as osp
import platform
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from ..reporting import markdown_table, write_csv

__all__ = ['PARITY_TOLERANCE', 'TRAIN_CONFIGS', 'gpu_check', 'matmul_tflops', 'sdpa_backends', 'weight_file_options']

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
# Relative tolerance (max |device - cpu| / max |cpu| over each output tensor). fp32 both sides (TF32 off):
# only summation order differs, ~1e-6 after a few blocks, so 1e-4 leaves margin yet catches a wrong kernel.
# Mask2Former thresholds its mask logits (masked attention, sigmoid < 0.5): a logit within rounding of the
# threshold flips one query's attention to one key, a local change of ~1e-3, hence 1e-2 there.
PARITY_TOLERANCE = {'seg': 1e-4, 'cls': 1e-4, 'retrieval': 1e-4, 'det': 1e-4, 'panoptic': 1e-2}
# name: (real ViT-B config, tiny config, training input size where the config cannot tell it)
TRAIN_CONFIGS = {
    'segmenter': ('configs/seg/ade20k_flexi_b.py', 'configs/seg/tiny_seg_flexi.py', None),
    'upernet': ('configs/seg/ade20k_upernet_flexi_b.py', 'configs/seg/tiny_seg_upernet.py', None),
    'mask2former': ('configs/panoptic/coco_panoptic_mask2former_flexi_b.py', 'configs/panoptic/tiny_panoptic_flexi.py',
                    None),
    'owlvit': ('configs/det/lvis_owl_flexi_b.py', 'configs/det/tiny_owl_det.py', (720, 720)),
    'lit': ('configs/retrieval/lit_coco_flexi_b.py', 'configs/retrieval/tiny_lit_flexi.py', None),
    'cls': ('configs/cls/imagenet_flexi_b_ft_random.py', 'configs/cls/tiny_cls_flexi.py', None),
    'flexidistill': ('configs/cls/imagenet_flexidistill_b.py', 'configs/cls/tiny_cls_distill.py', None),
}
# the settings of a full run and of the CI-sized one (tiny configs and models, one or two of everything)
PRESETS = {
    False: dict(patches=(8, 16, 30), iters=5, warmup=2, max_batch=32, gemm_n=1024, timm_arch='base', timm_img=240,
                timm_batch=64, timm_patches=(8, 10, 12, 15, 16, 20, 24, 30, 40, 48), timm_runs=10, sched='cls',
                sched_iters=20),
    True: dict(patches=(12, 6), iters=1, warmup=0, max_batch=2, gemm_n=256,
               timm_arch=dict(embed_dims=64, num_layers=2, num_heads=2), timm_img=48, timm_batch=2,
               timm_patches=(8, 16), timm_runs=2, sched='cls', sched_iters=3),
}
SDPA_OPS = {'_scaled_dot_product_flash_attention': 'flash',
            '_scaled_dot_product_efficient_attention': 'memory efficient',
            '_scaled_dot_product_cudnn_attention': 'cudnn',
            '_scaled_dot_product_flash_attention_for_cpu': 'flash-cpu',
            '_scaled_dot_product_attention_math': 'math'}
PARITY_COLS = ('task', 'config', 'weights', 'patch', 'outputs', 'max_abs_err', 'max_rel_err', 'tolerance', 'ok')
TRAIN_COLS = ('name', 'config', 'patch', 'tokens', 'with_cp', 'batch', 'img_size', 'amp', 'sec_per_iter',
              'images_per_s', 'tokens_per_s', 'peak_mib', 'train_gflop_per_img', 'tflops_per_s', 'mfu', 'status')
TIMM_COLS = ('patch', 'tokens', 'batch', 'dtype', 'flexivit_ms', 'timm_ms', 'ratio', 'images_per_s', 'max_abs_diff',
             'sdpa', 'ok')
SCHED_COLS = ('schedule', 'patches', 'mean_tokens', 'iters', 'batch', 'sec_per_iter', 'images_per_s', 'tokens_per_s',
              'ms_per_1k_tokens')


def _path(config: str) -> str:
    return config if osp.isabs(config) else osp.join(ROOT, config)


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def weight_file_options(config: str) -> Dict[str, None]:
    """``cfg_options`` that drop every weight file a model config loads (FlexiViT ``pretrained``, text
    tower ``checkpoint``, ``teacher_checkpoint``): the checks run on random weights, no file needed.

    Args:
        config (str): config path.

    Returns:
        dict: ``{'model.<path>': None, ...}`` for ``Config.merge_from_dict``.
    """
    from mmengine.config import Config
    out, stack = {}, [('model', Config.fromfile(_path(config)).model)]
    while stack:
        prefix, node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, (list, tuple)) else ()
        for k, v in items:
            if k in ('pretrained', 'checkpoint', 'teacher_checkpoint') and isinstance(v, str):
                out[f'{prefix}.{k}'] = None
            elif isinstance(v, (dict, list, tuple)):
                stack.append((f'{prefix}.{k}', v))
    return out


def matmul_tflops(device: torch.device, dtype: torch.dtype, n: int, runs: int = 5) -> float:
    """The device's measured matmul rate: median of ``runs`` n x n GEMMs in ``dtype``, in TFLOP/s.

    Args:
        device (torch.device): where to measure.
        dtype (torch.dtype): the GEMM's dtype (bf16 / fp16 under AMP on CUDA, fp32 on a CPU).
        n (int): matrix side.
        runs (int): timed GEMMs (after two untimed).

    Returns:
        float: TFLOP/s.
    """
    from .timing import gemm_fn, gemm_gflops, interleaved_ms
    ms = interleaved_ms({'gemm': gemm_fn(n, dtype, device)}, runs, 2, lambda: _sync(device))['gemm']
    return gemm_gflops(ms, n) / 1e3


def sdpa_backends(fn: Callable[[], object]) -> List[str]:
    """The scaled-dot-product-attention kernels one call of ``fn`` runs, from the profiler's aten op
    names ('flash', 'memory efficient', 'cudnn', 'flash-cpu', 'math'); 'math (no SDPA op)' when the
    attention runs as separate matmuls and softmax.

    Args:
        fn (callable): a zero-argument forward.

    Returns:
        list[str]: the kernels seen, in ``SDPA_OPS`` order.
    """
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    keys = {e.key for e in prof.key_averages()}
    return [name for op, name in SDPA_OPS.items() if f'aten::{op}' in keys] or ['math (no SDPA op)']


@contextlib.contextmanager
def _reference_numerics(device: torch.device, threads: int):
    """fp32 without TF32 on CUDA; ``threads`` intra-op threads on a CPU."""
    old = (torch.get_num_threads(), torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.set_num_threads(threads)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        with torch.no_grad():
            yield
    finally:
        torch.set_num_threads(old[0])
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old[1:]


@contextlib.contextmanager
def _quiet_mmengine():
    """mmengine's INFO lines (every parameter's initialisation) off while the checks build models."""
    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    old = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(old)


def _cpu_name() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            return next((ln.split(':', 1)[1].strip() for ln in f if ln.startswith('model name')), 'cpu')
    except OSError:
        return platform.processor() or 'cpu'


# ----------------------------------------------------------------------------- (a) parity
def _tensor_outputs(model, inputs, samples, device, threads) -> List[torch.Tensor]:
    from ..deploy.export import flatten
    samples = [s.to(device) if hasattr(s, 'to') else s for s in samples]
    with _reference_numerics(device, threads):
        out = model(inputs.to(device), samples, mode='tensor')
    return [t.detach().float().cpu() for t in flatten(out)[0]]


def parity_rows(models: Sequence[Tuple[str, str, Optional[str]]], device: torch.device,
                max_patches: Optional[int] = None) -> List[dict]:
    """Section (a): each model's tensor outputs on the CPU against ``device`` (see the module docstring).

    Args:
        models: ``(task, config, checkpoint or None)``; None: random weights (seed 0).
        device (torch.device): the device checked; on a CPU, 1 thread against several.
        max_patches (int, optional): test only the smallest and largest of the config's test patches.

    Returns:
        list[dict]: one row per model and patch size (``PARITY_COLS``).
    """
    from ..apis import init_model, load_config
    from ..datasets.synthetic import synthetic_batch
    from ..deploy import infer_img_size
    from ..engine import get_patch_size, set_patch_size
    from .train import train_input_size
    many = max(2, len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else 2)
    rows = []
    for task, config, ckpt in models:
        opts = weight_file_options(config)
        cfg = load_config(_path(config), opts)
        torch.manual_seed(0)
        ref = init_model(_path(config), ckpt, 'cpu', cfg_options=opts)
        dev_model = copy.deepcopy(ref).to(device)
        hw = infer_img_size(cfg) or train_input_size(cfg)
        data = ref.data_preprocessor(synthetic_batch(ref, hw, n=2, seed=0), False)
        patches = sorted(cfg.get('test_cfg', {}).get('patch_sizes') or [get_patch_size(ref)[0]])
        if max_patches and len(patches) > max_patches:
            patches = [patches[0], patches[-1]][:max_patches]
        for p in patches:
            set_patch_size(ref, p)
            set_patch_size(dev_model, p)
            a = _tensor_outputs(ref, data['inputs'], data['data_samples'], torch.device('cpu'), 1)
            b = _tensor_outputs(dev_model, data['inputs'], data['data_samples'], device, many)
            abs_err = max((x - y).abs().max().item() for x, y in zip(a, b))
            rel_err = max(((x - y).abs().max() / x.abs().max().clamp_min(1e-12)).item() for x, y in zip(a, b))
            tol = PARITY_TOLERANCE.get(task, 1e-4)
            rows.append(dict(task=task, config=osp.basename(config), weights=ckpt or 'random (seed 0)', patch=p,
                             outputs=len(a), max_abs_err=abs_err, max_rel_err=rel_err, tolerance=tol,
                             ok=bool(rel_err <= tol and len(a) == len(b))))
    return rows


# ----------------------------------------------------------------------------- (b) training throughput
def _amp_options(cfg, opts: dict, amp_dtype: Optional[torch.dtype]) -> Tuple[bool, str]:
    """Mixed precision for ``measure_train_step``: in ``amp_dtype``, or, without one, only where the config
    itself asks for an AMP wrapper (converted for the device by ``amp_optim_wrapper``). Returns (amp, label)."""
    if amp_dtype is not None:
        opts['optim_wrapper.dtype'] = str(amp_dtype).replace('torch.', '')
        return True, opts['optim_wrapper.dtype']
    if cfg.optim_wrapper.get('type', 'OptimWrapper') != 'OptimWrapper':
        return True, f"the config's {cfg.optim_wrapper.type}"
    return False, 'fp32'


def _train_flops(config: str, patches: Sequence[int], device: str, img_size, opts: dict,
                 amp: bool) -> Dict[int, float]:
    """FLOPs of one training step (forward + backward) per image, per patch size (counted on a batch of 2,
    as batch norms need two samples)."""
    from torch.utils.flop_counter import FlopCounterMode

    from ..datasets.synthetic import synthetic_batch
    from ..engine import set_patch_size
    from .train import _build, train_input_size
    cfg, model, ow = _build(_path(config), device, amp, False, opts)
    hw = tuple(img_size) if img_size else train_input_size(cfg)
    out = {}
    for p in patches:
        set_patch_size(model, p)
        with FlopCounterMode(display=False) as fc:
            model.train_step(synthetic_batch(model, hw, n=2, seed=0), ow)
        out[p] = fc.get_total_flops() / 2
    return out


def train_rows(names: Sequence[str], tiny: bool, patches: Sequence[int], device: torch.device,
               amp_dtype: Optional[torch.dtype], peak_tflops: float, iters: int, warmup: int, max_batch: int,
               with_cp: Sequence[bool] = (False, True)) -> List[dict]:
    """Section (b): training throughput, memory and MFU per config x patch x ``with_cp``.

    Args:
        names: keys of ``TRAIN_CONFIGS``.
        tiny (bool): the tiny configs instead of the ViT-B ones.
        patches: patch sizes (each must divide every config's training input size).
        device (torch.device): where to train.
        amp_dtype (torch.dtype, optional): mixed precision in this dtype (None: fp32).
        peak_tflops (float): the matmul rate MFU is measured against.
        iters, warmup (int): timed and untimed steps per measurement.
        max_batch (int): batch = the config's per-device batch size, at most this.
        with_cp: activation checkpointing off / on.

    Returns:
        list[dict]: one row per measurement (``TRAIN_COLS``); an out-of-memory one has status 'OOM'.
    """
    from mmengine.config import Config

    from .train import measure_train_step, train_input_size
    rows = []
    for name in names:
        real, small, img = TRAIN_CONFIGS[name]
        config = small if tiny else real
        cfg = Config.fromfile(_path(config))
        hw = tuple(img) if img and not tiny else train_input_size(cfg)
        bad = [p for p in patches if hw[0] % p or hw[1] % p]
        if bad:
            raise ValueError(f'{config}: patch sizes {bad} do not divide its training input {hw[0]}x{hw[1]}')
        opts = weight_file_options(config)
        amp, label = _amp_options(cfg, opts, amp_dtype)
        try:
            flops = _train_flops(config, patches, str(device), hw, opts, amp)
        except Exception as e:
            rows.append(dict(name=name, config=osp.basename(config), status=f'error: {type(e).__name__}: {e}'))
            continue
        batch = min(int(cfg.train_dataloader.get('batch_size', 1)), max_batch)
        for p in patches:
            for cp in with_cp:
                try:
                    r = measure_train_step(_path(config), p, iters=iters, device=str(device), amp=amp,
                                           with_cp=cp, batch_size=batch, warmup=warmup, img_size=hw, cfg_options=opts)
                except torch.cuda.OutOfMemoryError:
                    r = dict(config=osp.basename(config), patch=p, with_cp=cp, batch=batch, status='OOM')
                except Exception as e:
                    r = dict(config=osp.basename(config), patch=p, with_cp=cp, status=f'error: {type(e).__name__}: {e}')
                gc.collect()
                if device.type == 'cuda':
                    torch.cuda.empty_cache()
                r.update(name=name, amp=label,
                         train_gflop_per_img=flops[p] / 1e9, status=r.get('status', 'ok'))
                if r['status'] == 'ok':
                    r['tflops_per_s'] = flops[p] * r['images_per_s'] / 1e12
                    r['mfu'] = r['tflops_per_s'] / peak_tflops
                    if device.type != 'cuda':
                        r['memory'] = 'process peak RSS so far (in-process CPU run)'
                rows.append(r)
    return rows


# ----------------------------------------------------------------------------- (c) FlexiViT vs timm
def timm_rows(arch, img: int, batch: int, patches: Sequence[int], device: torch.device,
              dtype: Optional[torch.dtype], runs: int, warmup: int = 2) -> List[dict]:
    """Section (c): FlexiViT (random weights) and timm's VisionTransformer with the same weights at each
    patch, eval + no_grad (+ autocast to ``dtype``), timed interleaved; the SDPA kernels of FlexiViT's forward.

    Args:
        arch: FlexiViT ``arch`` ('base' or a dict).
        img (int): square input side (every patch must divide it).
        batch (int): images per forward.
        patches: patch sizes.
        device (torch.device): where to run.
        dtype (torch.dtype, optional): autocast dtype (None: fp32).
        runs, warmup (int): timed / untimed rounds of ``interleaved_ms``.

    Returns:
        list[dict]: one row per patch (``TIMM_COLS``); ``ok`` is False where CUDA runs the math path at p = 8.
    """
    from ..deploy.export import to_timm_vit
    from ..models import FlexiViT
    from .timing import interleaved_ms
    torch.manual_seed(0)
    model = FlexiViT(arch=arch).to(device).eval()
    x = torch.randn(batch, 3, img, img, device=device)
    amp = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    rows = []
    with torch.no_grad(), amp:
        for p in patches:
            vit = to_timm_vit(model.bake(p, img), img).to(device).eval()
            fns = {'flexivit': lambda p=p: model.forward_features(x, p), 'timm': lambda v=vit: v.forward_features(x)}
            ms = interleaved_ms(fns, runs, warmup, lambda: _sync(device))
            kernels = sdpa_backends(fns['flexivit'])
            diff = (fns['flexivit']().float() - fns['timm']().float()).abs().max().item()
            sdpa = ', '.join(kernels) if device.type == 'cuda' else f"cpu ({', '.join(kernels)})"
            rows.append(dict(patch=p, tokens=(img // p) ** 2, batch=batch, dtype=str(dtype or torch.float32)[6:],
                             flexivit_ms=ms['flexivit'], timm_ms=ms['timm'], ratio=ms['flexivit'] / ms['timm'],
                             images_per_s=batch / ms['flexivit'] * 1e3, max_abs_diff=diff, sdpa=sdpa,
                             ok=not (device.type == 'cuda' and p == 8 and any(k.startswith('math') for k in kernels))))
            del vit
    return rows


# ----------------------------------------------------------------------------- (d) random vs fixed patch
def _timed_steps(model, ow, batch, patches: Sequence[int], device: torch.device) -> float:
    from ..engine import set_patch_size
    _sync(device)
    start = time.perf_counter()
    for p in patches:
        set_patch_size(model, p)
        model.train_step(copy.deepcopy(batch), ow)
    _sync(device)
    return time.perf_counter() - start


def schedule_rows(name: str, tiny: bool, device: torch.device, amp_dtype: Optional[torch.dtype], iters: int,
                  max_batch: int) -> List[dict]:
    """Section (d): the config's random patch schedule (``RandomPatchSizeHook``'s draws) against the fixed
    patch whose token count is nearest the schedule's mean; every shape is run once before timing.

    Args:
        name (str): a ``TRAIN_CONFIGS`` key whose config has a ``RandomPatchSizeHook``.
        tiny (bool): its tiny config.
        device (torch.device): where to train.
        amp_dtype (torch.dtype, optional): mixed precision dtype (None: fp32).
        iters (int): timed steps of each schedule.
        max_batch (int): batch cap, as in section (b).

    Returns:
        list[dict]: the random and the fixed schedule (``SCHED_COLS``).
    """
    from mmengine.config import Config

    from ..datasets.synthetic import synthetic_batch
    from ..engine import draw_patch_size
    from .train import _build, _prime_optimizer, train_input_size
    real, small, img = TRAIN_CONFIGS[name]
    config = small if tiny else real
    opts = weight_file_options(config)
    amp, _ = _amp_options(Config.fromfile(_path(config)), opts, amp_dtype)
    cfg, model, ow = _build(_path(config), str(device), amp, False, opts)
    hook = next((h for h in cfg.get('custom_hooks') or [] if h.get('type') == 'RandomPatchSizeHook'), None)
    if hook is None:
        raise ValueError(f'{config} has no RandomPatchSizeHook: no random patch schedule to compare')
    sizes = list(hook['patch_sizes'])
    hw = tuple(img) if img and not tiny else train_input_size(cfg)
    seq = [draw_patch_size(i, sizes, hook.get('probs'), hook.get('seed', 0)) for i in range(iters)]

    def tokens(p):
        return (hw[0] // p) * (hw[1] // p)
    mean = sum(map(tokens, seq)) / len(seq)
    fixed = min(sizes, key=lambda p: abs(tokens(p) - mean))
    bs = min(int(cfg.train_dataloader.get('batch_size', 1)), max_batch)
    batch = synthetic_batch(model, hw, n=bs, seed=0)
    _prime_optimizer(ow, model)
    _timed_steps(model, ow, batch, list(dict.fromkeys(seq + [fixed])), device)  # every shape once
    rows = []
    for label, ps in ((f'random of {sizes}', seq), (f'fixed p={fixed}', [fixed] * iters)):
        sec = _timed_steps(model, ow, batch, ps, device) / iters
        mean_tok = sum(map(tokens, ps)) / len(ps)
        rows.append(dict(schedule=label, patches=' '.join(map(str, ps)), mean_tokens=mean_tok, iters=iters, batch=bs,
                         sec_per_iter=sec, images_per_s=bs / sec, tokens_per_s=bs * mean_tok / sec,
                         ms_per_1k_tokens=sec * 1e6 / (bs * mean_tok)))
    return rows


# ----------------------------------------------------------------------------- the whole check
def _environment(device: torch.device, amp_dtype, peak: float, command: str) -> str:
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else _cpu_name()
    cuda = f', CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}' if device.type == 'cuda' else ''
    return (f'# GPU self-check\n\n`{command or "flexitransfer.benchmark.gpu_check.gpu_check"}`, '
            f'{datetime.datetime.now():%Y-%m-%d %H:%M}\n\n'
            f'- device: {device} ({name}), torch {torch.__version__}{cuda}, '
            f'{torch.get_num_threads()} CPU threads\n- mixed precision: {str(amp_dtype or "off (fp32)")}\n'
            f'- measured matmul rate ({str(amp_dtype or torch.float32)[6:]}): {peak:.2f} TFLOP/s (the MFU '
            f'denominator)\n')


def _section(title: str, note: str, rows: List[dict], cols: Sequence[str], csv_path: str, error: str = '') -> str:
    write_csv(csv_path, rows, cols)
    fmt = {c: '{:.4g}' for c in cols if any(isinstance(r.get(c), float) for r in rows)}
    body = markdown_table(rows, cols, fmt) if rows else '(no rows)'
    err = f'\n\n**FAILED**: {error}' if error else ''
    return f'## {title}\n\n{note}\n\n{body}{err}\n\nCSV: `{osp.basename(csv_path)}`\n'


def gpu_check(device: str = 'cuda', tiny: bool = False, checkpoints: Optional[Dict[str, str]] = None,
              out: str = 'work_dirs/gpu_check', configs: Optional[Sequence[str]] = None,
              patches: Optional[Sequence[int]] = None, iters: Optional[int] = None, command: str = '') -> Dict:
    """Run the four sections (module docstring), write ``out/report.md`` and the CSVs.

    Args:
        device (str): 'cuda' (or 'cuda:N') or 'cpu'.
        tiny (bool): the CI-sized check (tiny configs and models, one or two iterations, two patches).
        checkpoints (dict, optional): task -> checkpoint for the parity section (tasks of
            ``flexitransfer.benchmark.tasks.TINY``; 'random' for seeded random weights). Default: the five
            tasks, each with its checkpoint under ``work_dirs/`` when it exists, else random weights.
        out (str): output folder.
        configs (list[str], optional): ``TRAIN_CONFIGS`` keys for section (b) (default all).
        patches (list[int], optional): section (b)'s patch sizes (default 8 16 30; tiny 12 6).
        iters (int, optional): timed iterations per measurement in (b) (default 5; tiny 1).
        command (str): the command line, for the report's header.

    Returns:
        dict: section name -> rows.

    Raises:
        ValueError: CUDA asked for but not available, an unknown task or config name.
        RuntimeError: after writing the report, if any check failed (listed in the message).
    """
    from ..deploy import autocast_dtypes
    from .tasks import TINY
    dev = torch.device(device)
    if dev.type == 'cuda' and not torch.cuda.is_available():
        raise ValueError(f'--device {device}: CUDA is not available to this torch ({torch.__version__}); '
                         'use --device cpu for the CPU form of the check')
    names = list(configs or TRAIN_CONFIGS)
    unknown = [n for n in names if n not in TRAIN_CONFIGS]
    tasks = {t[0]: t for t in TINY}
    unknown += [t for t in checkpoints or {} if t not in tasks]
    if unknown:
        raise ValueError(f'unknown names {unknown}: configs are {sorted(TRAIN_CONFIGS)}, tasks {sorted(tasks)}')
    if checkpoints:
        models = [(t, tasks[t][1], None if c == 'random' else c) for t, c in checkpoints.items()]
    else:
        models = [(t, c, ck if osp.isfile(_path(ck)) else None) for t, c, ck, _ in TINY]
    s = PRESETS[bool(tiny)]
    ac = autocast_dtypes(dev) if dev.type == 'cuda' else []  # a CPU: fp32 (MFU against the fp32 GEMM rate)
    amp_dtype = {'bf16': torch.bfloat16, 'fp16': torch.float16}[ac[0]] if ac else None
    peak = matmul_tflops(dev, amp_dtype or torch.float32, 8192 if dev.type == 'cuda' else s['gemm_n'])
    os.makedirs(out, exist_ok=True)
    sections = [
        ('parity', '(a) Parity: CPU vs ' + str(dev), PARITY_COLS,
         lambda: parity_rows(models, dev, 2 if tiny else None),
         'Outputs of `model(inputs, data_samples, mode="tensor")` on a synthetic batch, fp32 (TF32 off on CUDA; on '
         'a CPU one thread against several). `max_rel_err`: max |device - cpu| / max |cpu| over each output tensor. '
         'Tolerances per task: ' + ', '.join(f'{k} {v:g}' for k, v in PARITY_TOLERANCE.items()) + ' (summation '
         'order only: ~1e-6; Mask2Former thresholds mask logits in its masked attention, so one flipped '
         'attention entry is allowed: 1e-2).'),
        ('train', '(b) Training throughput', TRAIN_COLS,
         lambda: train_rows(names, tiny, patches or s['patches'], dev, amp_dtype, peak, iters or s['iters'],
                            s['warmup'], s['max_batch']),
         'Random weights, synthetic batches, `model.train_step` with the optimizer wrapper `tools/train.py --amp` '
         'builds. MFU: FLOPs of one training step (forward + backward, FlopCounterMode, per image, without the '
         'recomputation of with_cp) x images/s / the measured matmul rate. Memory: CUDA max_memory_allocated; '
         'on a CPU the process peak RSS so far.'),
        ('timm', '(c) FlexiViT vs timm VisionTransformer (same weights)', TIMM_COLS,
         lambda: timm_rows(s['timm_arch'], s['timm_img'], s['timm_batch'], s['timm_patches'], dev, amp_dtype,
                           s['timm_runs']),
         'forward_features, eval + no_grad, medians of interleaved runs; ratio = FlexiViT / timm; `sdpa`: the '
         'attention kernels of the FlexiViT forward (profiler op names). The math path at p = 8 on CUDA fails.'),
        ('patch_schedule', '(d) Random vs fixed patch training', SCHED_COLS,
         lambda: schedule_rows(s['sched'], tiny, dev, amp_dtype, s['sched_iters'], s['max_batch']),
         "The config's random patch draws (RandomPatchSizeHook) against the fixed patch nearest their mean token "
         'count; `ms_per_1k_tokens` compares the two per token: the cost of changing shapes.'),
    ]
    report, results, failures = [_environment(dev, amp_dtype, peak, command)], {}, []
    for key, title, cols, run, note in sections:
        error = ''
        try:
            with _quiet_mmengine():
                rows = run()
        except Exception as e:
            rows, error = [], f'{type(e).__name__}: {e}'
        bad = [r for r in rows if r.get('ok') is False or r.get('status', 'ok') != 'ok'
               or any(isinstance(v, float) and not math.isfinite(v) for v in r.values())]
        if error or bad:
            failures.append(f'{title}: {error or f"{len(bad)} row(s) failed"}')
        results[key] = rows
        report.append(_section(title, note, rows, cols, osp.join(out, f'{key}.csv'), error))
    if results['patch_schedule'] and len(results['patch_schedule']) == 2:
        r, f = results['patch_schedule']
        report.append(f"Random / fixed time per token: {r['ms_per_1k_tokens'] / f['ms_per_1k_tokens']:.3f}\n")
    with open(osp.join(out, 'report.md'), 'w') as fh:
        fh.write('\n'.join(report))
    if failures:
        raise RuntimeError(f'GPU self-check failed (see {osp.join(out, "report.md")}):\n- ' + '\n- '.join(failures))
    return results
