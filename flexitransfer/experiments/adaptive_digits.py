"""Adaptive compute measured on the digits FlexiViT (``tools/reproduce_adaptive.py``).

Accuracy against mean tokens, mean GFLOPs and mean latency per image for
(a) every uniform patch, (b) the per-image cascade (thresholds cross-fitted: calibrated on one half of
the test images, applied to the other, and vice versa), (c) mixed patch sizes inside each image,
zero-shot, (d) mixed patch sizes after a short fine-tune on random mixed partitions, with (e) the same
fine-tune on random uniform patches as its control. Every number comes from one seeded run.
"""
from __future__ import annotations

import copy
import os
from typing import Optional, Sequence

import numpy as np
import torch

from ..adaptive import (
    FlexiCascade,
    MixedPatchPolicy,
    calibrate,
    confidence,
    set_mixed_policy,
    stop_stages,
    stops_result,
    use_mixed_patches,
    vit_flops,
)
from ..engine.mixed_hook import draw_mixed_policy
from ..engine.patch_size import record_tokens
from .adaptive_common import add_latency, detail_thresholds, savings_table, token_row
from .digits import (
    IMG,
    PATCHES,
    accuracy,
    flexi_net,
    load_digits_48,
    load_saved_flexi,
    random_patch_fn,
    save_model,
    train,
)

__all__ = ['digits_study']


def _row(method, setting, acc, tokens, model):
    return token_row(method, setting, acc, tokens, model.backbone, (IMG, IMG), 10)


@torch.no_grad()
def _mixed_eval(model, data, policy: MixedPatchPolicy, bs: int = 128):
    """Top-1 (%) and tokens per image (patch tokens) of the model under a mixed policy."""
    x, y = data
    hits = 0
    with use_mixed_patches(model, policy), record_tokens(model) as rec:
        for i in range(0, len(y), bs):
            logits = model(x[i:i + bs])
            hits += int((logits.argmax(-1) == y[i:i + bs]).sum())
    return 100.0 * hits / len(y), rec.tokens_per_image().float()


def _mixed_series(model, label, test, lat_x, policies):
    rows, fns = [], {}
    for setting, pol in policies:
        acc, toks = _mixed_eval(model, test, pol)
        rows.append(_row(label, setting, acc, toks.numpy(), model))
        fns[f'{label} {setting}'] = _mixed_caller(model, pol, lat_x)
    return rows, fns


def _mixed_caller(model, pol, xs):
    def run():
        with use_mixed_patches(model, pol), torch.no_grad():
            for x in xs:
                model(x)
    return run


def _mixed_policies(val_x, budgets4, budgets6, thr_q):
    pols = [(f's=4/8/16, budget {b}', MixedPatchPolicy(4, 3, budget=b)) for b in budgets4]
    pols += [(f's=6/12/24, budget {b}', MixedPatchPolicy(6, 3, budget=b)) for b in budgets6]
    for q, t in zip(thr_q, detail_thresholds(val_x, 4, thr_q)):
        pols.append((f's=4/8/16, detail > q{int(q * 100)} ({t:.3g})', MixedPatchPolicy(4, 3, threshold=t)))
    return pols


def _cascade_rows(model, test, cascade: Sequence[int], target_acc: Optional[float], sweep_thresholds, lat_x):
    """(b): the cross-calibrated cascade and a sweep of one threshold at every stage; the goals used."""
    logits_fn = lambda x, p: model(x, p)
    with torch.no_grad():
        lt = torch.stack([model(test[0], p) for p in cascade])
        lu = torch.stack([model(test[0], p) for p in PATCHES])
    tc, tk = confidence(lt).numpy(), (lt.argmax(-1) == test[1]).numpy()
    uk = (lu.argmax(-1) == test[1]).numpy()
    n = tc.shape[1]
    halves = [np.arange(0, n, 2), np.arange(1, n, 2)]
    tokens = [(IMG // p) ** 2 for p in cascade]
    stage_fl = np.cumsum([vit_flops(model.backbone, t, (IMG, IMG), 10) for t in tokens]) / 1e6
    # thresholds calibrated on one half of the test images are applied to the other half and vice versa,
    # so every test image is reported by thresholds that never saw it
    stop_cal, thr_cal, goals, met = np.zeros(n, int), [], [], True
    for cal_idx, rep_idx in (halves, halves[::-1]):
        goal = target_acc if target_acc is not None else float(uk[:, cal_idx].mean(1).max() * 100)
        c = calibrate(tc[:, cal_idx], tk[:, cal_idx], tokens, target_acc=goal)
        stop_cal[rep_idx] = stop_stages(tc[:, rep_idx], c.thresholds)
        thr_cal.append(c.thresholds)
        goals.append(goal)
        met = met and c.met
    settings = [('calibrated (cross-fitted halves, target = ' +
                 ('best uniform top-1 of the calibration half' if target_acc is None else f'{target_acc}%') + ')',
                 stop_cal, thr_cal[0], ' / '.join('/'.join(f'{t:.3f}' for t in th) for th in thr_cal)
                 + ('' if met else ' (target not met on a calibration half)'))]
    for t in sweep_thresholds:
        thr = [t] * (len(cascade) - 1)
        settings.append((f'threshold {t:g} at every stage', stop_stages(tc, thr), thr, f'{t:g}'))
    rows, fns = [], {}
    for name, stop, thr, thr_note in settings:
        setting = '/'.join(map(str, cascade)) + ', ' + name
        res = stops_result(stop, tk, tokens, thr)  # mean cost: every stage's tokens an image went through
        rows.append(dict(method='(b) cascade', setting=setting, top1=res.accuracy, mean_tokens=res.mean_cost,
                         mflops=float(stage_fl[stop].mean()), latency_ms=None,
                         note='stops ' + '/'.join(f'{f:.2f}' for f in res.stop_fraction) + ', thresholds ' + thr_note))
        casc = FlexiCascade(model, list(cascade), thr, logits_fn=logits_fn)
        fns['(b) cascade ' + setting] = lambda c=casc: [c(x) for x in lat_x]
    return rows, fns, goals


def digits_study(save_dir: str = 'work_dirs/reproduce_digits', epochs: int = 100, seed: int = 0,
                 cascade: Sequence[int] = (24, 8, 4), target_acc: Optional[float] = None, ft_epochs: int = 10,
                 ft_lr: float = 3e-4, latency_runs: int = 10, latency_images: int = 8,
                 budgets4=(12, 18, 24, 36, 48, 72, 96), budgets6=(8, 16, 24, 36, 48), thr_q=(0.5, 0.7, 0.85),
                 sweep_thresholds=(0.5, 0.7, 0.9, 0.97, 0.99),
                 log=print) -> dict:
    """All rows of the digits table (see the module docstring).

    Args:
        save_dir (str): where ``tools/reproduce_digits.py`` saved its FlexiViT (trained here when absent).
        epochs (int): training epochs when no saved FlexiViT exists.
        seed (int): the run's seed.
        cascade (Sequence[int]): the cascade's patches, coarse to fine.
        target_acc (float, optional): the cascade's target on each calibration half (default: the best
            uniform accuracy there).
        ft_epochs (int): epochs of the two fine-tunes.
        ft_lr (float): their learning rate.
        latency_runs (int): interleaved timing rounds (0: no timing).
        latency_images (int): test images timed per method (batch 1).
        budgets4, budgets6: token budgets of the mixed policies at finest patch 4 and 6.
        thr_q: quantiles of the detail score used as mixed thresholds.
        sweep_thresholds: one cascade threshold at every stage, each a row.
        log (Callable): progress messages.

    Returns:
        dict: ``rows``, ``n_test``, ``target_acc`` (the goal per calibration half), ``cascade``, ``ft_steps``,
        and what ``write_study`` writes: ``text`` (before the table), ``savings`` (after it), ``title``,
        ``metric``.
    """
    torch.manual_seed(seed)
    tr, te = load_digits_48(seed)
    test = te
    model = load_saved_flexi(save_dir)
    if model is None:
        log(f'no saved FlexiViT under {save_dir}: training one as tools/reproduce_digits.py does ({epochs} epochs)')
        torch.manual_seed(seed)
        model = train(flexi_net(8), tr, epochs, random_patch_fn(seed), seed, 'FlexiViT')
        os.makedirs(save_dir, exist_ok=True)
        save_model(model, save_dir, 'flexivit', 8)
    else:
        log(f'using the FlexiViT saved under {save_dir}')
    model.eval()
    lat_x = [test[0][i:i + 1] for i in range(latency_images)]
    rows, fns = [], {}
    fwd = lambda m, p: (lambda: [m(x, p) for x in lat_x])

    # (a) uniform
    for p in PATCHES:
        with torch.no_grad():
            rows.append(_row('(a) uniform', f'p{p}', accuracy(model, test, p), (IMG // p) ** 2, model))
        fns[f'(a) uniform p{p}'] = torch.no_grad()(fwd(model, p))

    # (b) cascade, cross-calibrated
    r_b, f_b, goals = _cascade_rows(model, test, cascade, target_acc, sweep_thresholds, lat_x)
    rows += r_b
    fns.update(f_b)

    # (c) mixed, zero-shot
    pols = _mixed_policies(tr[0][:512], budgets4, budgets6, thr_q)  # detail quantiles of training images
    r_c, f_c = _mixed_series(model, '(c) mixed zero-shot', test, lat_x, pols)
    rows += r_c
    fns.update(f_c)

    # (d) mixed after a short fine-tune on random mixed partitions; (e) its control: random uniform p
    steps = ft_epochs * (len(tr[1]) // 64)
    log(f'fine-tuning {ft_epochs} epochs ({steps} steps, lr {ft_lr}) on random mixed partitions, and the control')
    ft = copy.deepcopy(model)
    torch.manual_seed(seed + 1)
    train(ft, tr, ft_epochs, lambda s: None, seed + 1, 'FT mixed', lr=ft_lr,
          before_step=lambda s: set_mixed_policy(ft, draw_mixed_policy(s, [4, 6], num_levels=3, seed=seed)))
    set_mixed_policy(ft, None)
    ctl = copy.deepcopy(model)
    torch.manual_seed(seed + 1)
    train(ctl, tr, ft_epochs, random_patch_fn(seed + 1), seed + 1, 'FT uniform (control)', lr=ft_lr)
    r_d, f_d = _mixed_series(ft, '(d) mixed after mixed FT', test, lat_x, pols)
    rows += r_d
    fns.update(f_d)
    for p in PATCHES:
        with torch.no_grad():
            rows.append(_row('(d\') uniform after mixed FT', f'p{p}', accuracy(ft, test, p), (IMG // p) ** 2, ft))
            rows.append(_row('(e) uniform after uniform FT (control)', f'p{p}', accuracy(ctl, test, p),
                             (IMG // p) ** 2, ctl))
    r_e, _ = _mixed_series(ctl, '(e) mixed after uniform FT (control)', test, lat_x, pols)
    rows += r_e

    # latency, all methods interleaved in this process (batch 1, `latency_images` test images each)
    log(f'latency: {len(fns)} methods x {latency_images} images, batch 1, {latency_runs} interleaved rounds')
    add_latency(rows, fns, latency_runs, latency_images)
    n = len(test[1])
    text = (f"sklearn digits at 48x48, the digits FlexiViT (4 layers, 64 dims); every row on the {n} test images "
            f"(one image = {100 / n:.2f} points); the cascade's thresholds are cross-fitted (calibrated on one half "
            f"of the test images, applied to the other, and vice versa); fine-tunes: {steps} steps from the same "
            f"weights. Tokens = patch tokens per image (the cascade: summed over the stages an image ran); MFLOPs "
            f"counted analytically; latency = median batch-1 ms per image, all rows interleaved in one process.")
    return dict(rows=rows, n_test=n, target_acc=goals, cascade=list(cascade), ft_steps=steps, text=text,
                savings='Token savings at equal accuracy:\n\n' + savings_table(rows),
                title='Adaptive compute on digits (one FlexiViT)', metric='top-1 (%)')
