"""Mixed patches measured on the tiny segmentation model (``tools/reproduce_adaptive.py --seg``).

mIoU against mean tokens and latency on the tiny segmentation data (val split): uniform patches, mixed
zero-shot, mixed after a short ``MixedPartitionHook`` fine-tune, and the ``RandomPatchSizeHook`` fine-tune
of the same length as its control. mIoU is mmseg's ``IoUMetric`` computation (areas per image, summed).
"""
from __future__ import annotations

import copy
import os.path as osp
from typing import Optional, Sequence, Tuple

import numpy as np
import torch

from ..adaptive import MixedPatchPolicy, use_mixed_patches
from ..engine.patch_size import record_tokens, set_patch_size
from .adaptive_common import add_latency, detail_thresholds, savings_table, token_row

__all__ = ['seg_study', 'miou_percent']


def _seg_batches(model, cfg):
    from mmengine.runner import Runner
    dl = copy.deepcopy(cfg.val_dataloader)
    dl.update(num_workers=0, persistent_workers=False)
    out = []
    for batch in Runner.build_dataloader(dl):
        data = model.data_preprocessor(batch, False)
        out.append((data['inputs'], data['data_samples']))
    return out


def miou_percent(pairs: Sequence[Tuple[torch.Tensor, torch.Tensor]], num_classes: int,
                 ignore_index: int = 255) -> float:
    """mIoU (%) of (prediction, ground truth) label maps, as mmseg's ``IoUMetric`` computes it.

    Args:
        pairs (Sequence[tuple[Tensor, Tensor]]): per image, the predicted and the true labels (H, W).
        num_classes (int): classes.
        ignore_index (int): the label left out.

    Returns:
        float: the mean over classes (NaN classes, absent from both, left out) of the IoU of the summed
        areas, in percent (unrounded).
    """
    from mmseg.evaluation.metrics import IoUMetric
    areas = [IoUMetric.intersect_and_union(pr, gt, num_classes, ignore_index) for pr, gt in pairs]
    totals = [sum(a[i].double() for a in areas) for i in range(4)]
    iou = IoUMetric.total_area_to_metrics(*totals, metrics=['mIoU'])['IoU']
    return float(np.nanmean(iou) * 100)


@torch.no_grad()
def _miou(model, batches, num_classes: int, policy: Optional[MixedPatchPolicy] = None, patch=None):
    """mIoU (%) and the patch tokens per image (under a mixed policy; None otherwise)."""
    if patch is not None:
        set_patch_size(model, patch)
    pairs = []
    with use_mixed_patches(model, policy), record_tokens(model) as rec:
        for x, samples in batches:
            for s in model.predict(x, copy.deepcopy(samples)):
                pairs.append((s.pred_sem_seg.data[0], s.gt_sem_seg.data[0]))
    toks = rec.tokens_per_image().float().numpy() if policy is not None else None
    return miou_percent(pairs, num_classes), toks


def _seg_finetune(cfg, ckpt, work_dir, hook: dict, iters: int, lr: float):
    """A short in-process mmengine fine-tune of the tiny segmentor with ``hook`` as its patch policy."""
    import uuid

    from mmengine.runner import Runner
    cfg = copy.deepcopy(cfg)
    cfg.work_dir = work_dir
    cfg.load_from, cfg.resume = ckpt, False
    cfg.custom_hooks = [hook]
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=iters, val_interval=iters + 1)
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.test_cfg = cfg.test_dataloader = cfg.test_evaluator = None
    cfg.optim_wrapper.optimizer.lr = lr
    cfg.param_scheduler = [dict(type='CosineAnnealingLR', eta_min=lr * 0.01, begin=0, end=iters, by_epoch=False)]
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', by_epoch=False, interval=iters)
    cfg.default_hooks.pop('visualization', None)
    cfg.train_dataloader.num_workers = 0
    cfg.train_dataloader.persistent_workers = False
    cfg.log_level = 'WARNING'
    if isinstance(cfg.get('visualizer'), dict):
        cfg.visualizer['name'] = f"visualizer_{uuid.uuid4().hex[:8]}"
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner.model.eval()


def _timed(m, lat_x, policy=None, patch=None):
    def run():
        if patch is not None:
            set_patch_size(m, patch)
        with use_mixed_patches(m, policy), torch.no_grad():
            for x in lat_x:
                m(x, mode='tensor')
    return run


def seg_study(config: str = 'configs/seg/tiny_seg_flexi.py', checkpoint: str = 'work_dirs/tiny_seg_flexi/iter_300.pth',
              seed: int = 0, latency_runs: int = 5, latency_images: int = 4, ft_iters: int = 100, ft_lr: float = 5e-4,
              patches=(8, 10, 12, 15, 20, 24, 30, 40), budgets10=(16, 25, 36, 64, 100), budgets12=(40, 55, 70, 85),
              thr_q=(0.5, 0.7, 0.85), work_dir: str = 'work_dirs/reproduce_adaptive', log=print) -> dict:
    """mIoU against mean tokens / latency on the tiny segmentation data (val split, 24 images). Trains the
    tiny model first (``tools/train.py``'s recipe) when ``checkpoint`` is missing.

    Args:
        config (str): the tiny segmentor's config.
        checkpoint (str): its trained checkpoint.
        seed (int): the run's seed.
        latency_runs (int): interleaved timing rounds (0: no timing).
        latency_images (int): val images timed per method (batch 1).
        ft_iters (int): iterations of the two fine-tunes.
        ft_lr (float): their learning rate.
        patches: the uniform patches.
        budgets10, budgets12: token budgets of the mixed policies at finest patch 10 and 12.
        thr_q: quantiles of the detail score used as mixed thresholds.
        work_dir (str): where the fine-tunes write.
        log (Callable): progress messages.

    Returns:
        dict: ``rows`` and what ``write_study`` writes: ``text`` (before the table), ``savings`` (after it),
        ``title``, ``metric``.
    """
    from ..apis import init_model, load_config
    from ..datasets.toy import ensure_toy
    torch.manual_seed(seed)
    cfg = load_config(config)
    ensure_toy('seg')
    if not osp.isfile(checkpoint):
        log(f'{checkpoint} missing: training the tiny segmentor ({config})')
        from mmengine.runner import Runner
        tcfg = copy.deepcopy(cfg)
        tcfg.work_dir = osp.dirname(checkpoint)
        tcfg.train_dataloader.num_workers = 0
        tcfg.train_dataloader.persistent_workers = False
        Runner.from_cfg(tcfg).train()
    model = init_model(cfg, checkpoint)
    ncls = len(cfg.metainfo['classes'])
    batches = _seg_batches(model, cfg)
    xs = torch.cat([b[0] for b in batches])
    lat_x = [xs[i:i + 1] for i in range(latency_images)]
    h, w = xs.shape[-2:]
    rows, fns = [], {}

    def row(method, setting, miou, tokens, m):
        return token_row(method, setting, miou, tokens, m.backbone, (h, w))

    for p in patches:
        miou, _ = _miou(model, batches, ncls, patch=p)
        rows.append(row('(a) uniform', f'p{p}', miou, (h // p) * (w // p), model))
        fns[f'(a) uniform p{p}'] = _timed(model, lat_x, patch=p)
    pols = [(f's=10/20/40, budget {b}', MixedPatchPolicy(10, 3, budget=b)) for b in budgets10]
    pols += [(f's=12/24, budget {b}', MixedPatchPolicy(12, 2, budget=b)) for b in budgets12]
    for q, t in zip(thr_q, detail_thresholds(xs, 10, thr_q)):
        pols.append((f's=10/20/40, detail > q{int(q * 100)} ({t:.3g})', MixedPatchPolicy(10, 3, threshold=t)))

    def mixed(m, label, with_latency=True):
        for setting, pol in pols:
            miou, toks = _miou(m, batches, ncls, policy=pol)
            rows.append(row(label, setting, miou, toks, m))
            if with_latency:
                fns[f'{label} {setting}'] = _timed(m, lat_x, policy=pol)
    mixed(model, '(c) mixed zero-shot')
    log(f'fine-tuning the segmentor {ft_iters} iterations on random mixed partitions, and the control')
    ft = _seg_finetune(cfg, checkpoint, osp.join(work_dir, 'seg_ft_mixed'),
                       dict(type='MixedPartitionHook', base_patches=[10, 12], num_levels=3, seed=seed), ft_iters, ft_lr)
    mixed(ft, '(d) mixed after mixed FT')
    ctl = _seg_finetune(cfg, checkpoint, osp.join(work_dir, 'seg_ft_uniform'),
                        dict(type='RandomPatchSizeHook', patch_sizes=list(patches), seed=seed), ft_iters, ft_lr)
    mixed(ctl, '(e) mixed after uniform FT (control)', with_latency=False)
    for p in patches:
        rows.append(row("(d') uniform after mixed FT", f'p{p}', _miou(ft, batches, ncls, patch=p)[0],
                        (h // p) * (w // p), ft))
        rows.append(row('(e) uniform after uniform FT (control)', f'p{p}', _miou(ctl, batches, ncls, patch=p)[0],
                        (h // p) * (w // p), ctl))
    log(f'latency: {len(fns)} methods x {latency_images} images, batch 1, {latency_runs} interleaved rounds')
    add_latency(rows, fns, latency_runs, latency_images)
    text = (f'tiny segmentation (toy ADE20k layout, {len(xs)} val images {h}x{w}, 5 classes), the main job\'s '
            f'4-layer FlexiViT + linear decoder ({checkpoint}); fine-tunes: {ft_iters} iterations, lr {ft_lr}. '
            f'Metric: mIoU (%) in the top-1 column. Tokens = patch tokens per image; MFLOPs of the backbone; '
            f'latency = median batch-1 ms per image (tensor mode), all rows interleaved in one process.')
    return dict(rows=rows, text=text, savings='Token savings at equal mIoU:\n\n' + savings_table(rows, metric='mIoU'),
                title='Mixed patches, tiny segmentation', metric='mIoU (%)')
