"""The cascade study behind ``tools/cascade.py``: per-stage logits on a calibration and a test split,
calibrated thresholds, test accuracy / mean GFLOPs / mean latency / stop fractions, and a Pareto
table + plot against every single fixed patch size.

Takes a built classifier and its data (lists of preprocessed batches or mmengine dataloaders), so it
works for any ``FlexiImageClassifier``, a LiT zero-shot classifier (``logits_fn_for``) or any ``(x, p) -> logits``.
"""
from __future__ import annotations

from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..benchmark.timing import interleaved_ms
from ..models.backbones.flexivit import FlexiViT
from ..reporting import save_figure, write_csv
from .cascade import CascadeResult, calibrate, confidence, logits_fn_for, save_thresholds, simulate
from .cost import stage_gflops

__all__ = ['collect_stage_logits', 'batches_from_loader', 'stage_latency_ms', 'cascade_study', 'write_study']


def batches_from_loader(model, loader) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """(inputs, labels) per batch of an mmengine classification dataloader, through the model's data
    preprocessor (labels from the samples' ``gt_label``)."""
    out = []
    for batch in loader:
        data = model.data_preprocessor(batch, False)
        labels = torch.stack([torch.as_tensor(s.gt_label).reshape(()) for s in data['data_samples']]).long()
        out.append((data['inputs'], labels))
    return out


@torch.no_grad()
def collect_stage_logits(logits_fn: Callable, batches: Iterable[Tuple[torch.Tensor, torch.Tensor]],
                         patches: Sequence[int]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Logits ``(K, N, C)`` of every image at every patch, and the labels ``(N,)``."""
    per_stage, labels = [[] for _ in patches], []
    for x, y in batches:
        for i, p in enumerate(patches):
            per_stage[i].append(logits_fn(x, p).float().cpu())
        labels.append(y.cpu())
    return torch.stack([torch.cat(s) for s in per_stage]), torch.cat(labels)


def stage_latency_ms(logits_fn: Callable, x1: torch.Tensor, patches: Sequence[int], runs: int = 20) -> Dict[int, float]:
    """Median batch-1 latency of each patch, measured interleaved in one process (ratios are what
    to trust on a loaded machine)."""
    with torch.no_grad():
        ms = interleaved_ms({str(p): (lambda p=p: logits_fn(x1, p)) for p in patches}, runs=runs)
    return {int(k): v for k, v in ms.items()}


def _conf_correct(logits: torch.Tensor, labels: torch.Tensor, score: str):
    return confidence(logits, score).numpy(), (logits.argmax(-1) == labels[None]).numpy()


def cascade_study(val: Tuple[torch.Tensor, torch.Tensor], test: Tuple[torch.Tensor, torch.Tensor],
                  stage_patches: Sequence[int], all_patches: Sequence[int], gflops: Dict[int, float],
                  latency: Optional[Dict[int, float]] = None, target_acc: Optional[float] = None,
                  budget_gflops: Optional[float] = None, score: str = 'maxprob', sweep: int = 12) -> dict:
    """Calibrate on ``val`` logits/labels, report on ``test``. ``val`` / ``test``: (logits (K_all, N, C), labels)
    over ``all_patches``; the cascade uses ``stage_patches`` (a subset, coarse to fine)."""
    idx = [list(all_patches).index(p) for p in stage_patches]
    costs = [gflops[p] for p in stage_patches]
    vc, vk = _conf_correct(val[0][idx], val[1], score)
    tc, tk = _conf_correct(test[0][idx], test[1], score)
    cal = calibrate(vc, vk, costs, target_acc=target_acc, budget=budget_gflops)
    res = simulate(tc, tk, costs, cal.thresholds)

    def lat(r: CascadeResult):
        if latency is None:
            return None
        reach = 1.0 - np.concatenate([[0.0], np.cumsum(r.stop_fraction)[:-1]])
        return float(sum(f * latency[p] for f, p in zip(reach, stage_patches)))

    fixed = []
    for j, p in enumerate(all_patches):
        acc = float((test[0][j].argmax(-1) == test[1]).float().mean() * 100)
        fixed.append(dict(method=f'fixed p{p}', accuracy=acc, gflops=gflops[p],
                          latency_ms=None if latency is None else latency[p], stop_fraction=''))
    curve = []
    lo, hi = costs[0], sum(costs)
    for b in np.linspace(lo, hi, sweep):
        c = calibrate(vc, vk, costs, budget=float(b))
        r = simulate(tc, tk, costs, c.thresholds)
        curve.append(dict(method=f'cascade (val budget {b:.4g})', accuracy=r.accuracy, gflops=r.mean_cost,
                          latency_ms=lat(r), stop_fraction=' '.join(f'{f:.3f}' for f in r.stop_fraction),
                          thresholds=r.thresholds))
    chosen = dict(method='cascade ' + '/'.join(map(str, stage_patches)) +
                  (f' (target {target_acc}% on val)' if target_acc is not None
                   else f' (budget {budget_gflops} GFLOPs)'),
                  accuracy=res.accuracy, gflops=res.mean_cost, latency_ms=lat(res),
                  stop_fraction=' '.join(f'{f:.3f}' for f in res.stop_fraction), thresholds=res.thresholds)
    return dict(chosen=chosen, calibration=dict(accuracy=cal.accuracy, gflops=cal.mean_cost, met=cal.met,
                                                stop_fraction=cal.stop_fraction),
                thresholds=cal.thresholds, fixed=fixed, curve=curve, score=score, stage_patches=list(stage_patches),
                n_val=int(val[1].numel()), n_test=int(test[1].numel()))


def _fmt(v, key=''):
    if v is None:
        return '-'
    if isinstance(v, float):
        return f'{v:.2f}' if key in ('accuracy', 'latency_ms') else f'{v:.4g}'
    return str(v)


def study_table(study: dict) -> str:
    keys = ['method', 'accuracy', 'gflops', 'latency_ms', 'stop_fraction']
    rows = study['fixed'] + [study['chosen']]
    lines = ['| method | top-1 (%) | GFLOPs / image | latency ms / image | stop fraction per stage |',
             '|---|---|---|---|---|']
    lines += ['| ' + ' | '.join(_fmt(r.get(k), k) for k in keys) + ' |' for r in rows]
    return '\n'.join(lines)


def write_study(study: dict, out_prefix: str, title: str = 'FlexiCascade vs fixed patch sizes') -> List[str]:
    """OUT.md (table), OUT.csv (fixed, chosen and the budget sweep) and OUT.png (accuracy vs GFLOPs)."""
    write_csv(out_prefix + '.csv', study['fixed'] + [study['chosen']] + study['curve'],
              ['method', 'accuracy', 'gflops', 'latency_ms', 'stop_fraction', 'thresholds'])
    with open(out_prefix + '.md', 'w') as f:
        f.write(study_table(study) + '\n')
    save_figure(lambda fig, axes: _draw_study(axes[0, 0], study, title), out_prefix + '.png', size=(6, 4), dpi=120)
    return [out_prefix + ext for ext in ('.md', '.csv', '.png')]


def run_cascade(model, val_batches, test_batches, stage_patches: Sequence[int], target_acc: Optional[float] = None,
                budget_gflops: Optional[float] = None, score: str = 'maxprob', out_prefix: Optional[str] = None,
                thresholds_path: Optional[str] = None, latency_runs: int = 20, extra_patches: Sequence[int] = (),
                logits_fn: Optional[Callable] = None, num_classes: Optional[int] = None) -> dict:
    """The whole study for a classifier; returns it (and writes OUT.* and the thresholds JSON when given)."""
    model.eval()
    logits_fn = logits_fn or logits_fn_for(model)
    all_patches = sorted(set(stage_patches) | set(extra_patches), reverse=True)
    x0 = test_batches[0][0]
    img_hw = tuple(x0.shape[-2:])
    backbone = next(m for m in model.modules() if isinstance(m, FlexiViT))
    if num_classes is None:
        head = getattr(model, 'head', None)
        num_classes = getattr(head, 'out_features', 0) or 0
    gflops = dict(zip(all_patches, stage_gflops(backbone, img_hw, all_patches, num_classes)))
    val = collect_stage_logits(logits_fn, val_batches, all_patches)
    test = collect_stage_logits(logits_fn, test_batches, all_patches)
    latency = stage_latency_ms(logits_fn, x0[:1], all_patches, latency_runs) if latency_runs else None
    study = cascade_study(val, test, stage_patches, all_patches, gflops, latency, target_acc, budget_gflops, score)
    if thresholds_path:
        save_thresholds(thresholds_path, stage_patches, study['thresholds'], score,
                        target_acc=target_acc, budget_gflops=budget_gflops,
                        val_accuracy=study['calibration']['accuracy'],
                        val_gflops=study['calibration']['gflops'], img_size=list(img_hw))
    if out_prefix:
        study['files'] = write_study(study, out_prefix)
    return study


def _draw_study(ax, study, title):
    fx = study['fixed']
    ax.plot([r['gflops'] for r in fx], [r['accuracy'] for r in fx], 'o-', label='fixed patch')
    for r in fx:
        ax.annotate(r['method'].split()[-1], (r['gflops'], r['accuracy']), fontsize=7, xytext=(3, -9),
                    textcoords='offset points')
    cv = sorted(study['curve'], key=lambda r: r['gflops'])
    ax.plot([r['gflops'] for r in cv], [r['accuracy'] for r in cv], 's--', ms=4,
            label='cascade ' + '/'.join(map(str, study['stage_patches'])) + ' (val budgets)')
    ch = study['chosen']
    ax.plot([ch['gflops']], [ch['accuracy']], '*', ms=14, label='cascade, chosen')
    ax.set_xscale('log')
    ax.set_xlabel('mean GFLOPs per image')
    ax.set_ylabel('test top-1 (%)')
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
