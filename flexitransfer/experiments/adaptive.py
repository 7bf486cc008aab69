"""Adaptive compute measured on the digits FlexiViT (``tools/reproduce_adaptive.py``).

Accuracy against mean tokens, mean GFLOPs and mean latency per image for
(a) every uniform patch, (b) the per-image cascade (thresholds cross-fitted: calibrated on one half of
the test images, applied to the other, and vice versa), (c) mixed patch sizes inside each image, zero-shot, (d) mixed patch sizes
after a short fine-tune on random mixed partitions, with (e) the same fine-tune on random uniform
patches as its control. Every number comes from one seeded run.
"""
from __future__ import annotations

import copy
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from ..adaptive import (FlexiCascade, MixedPatchPolicy, calibrate, confidence, laplacian_detail, set_mixed_policy,
                        vit_flops)
from ..engine.mixed_hook import draw_mixed_policy
from ..benchmark.timing import interleaved_ms
from ..reporting import save_figure, write_csv
from .digits import (IMG, PATCHES, accuracy, flexi_net, load_digits_48, load_saved_flexi, random_patch_fn,
                     save_model, train)

__all__ = ['digits_study', 'savings_table', 'write_rows']


@torch.no_grad()
def _mixed_eval(model, data, policy: MixedPatchPolicy, bs: int = 128):
    """Top-1 (%) and tokens per image (patch tokens) of the model under a mixed policy."""
    x, y = data
    set_mixed_policy(model, policy)
    try:
        hits, toks = 0, []
        for i in range(0, len(y), bs):
            logits = model(x[i:i + bs])
            hits += int((logits.argmax(-1) == y[i:i + bs]).sum())
            toks.append(model.backbone.last_num_tokens.float())
    finally:
        set_mixed_policy(model, None)
    toks = torch.cat(toks)
    return 100.0 * hits / len(y), toks


def _latency(fns: Dict[str, callable], runs: int) -> Dict[str, float]:
    return interleaved_ms(fns, runs=runs, warmup=1) if runs else {k: float('nan') for k in fns}


def _row(method, setting, acc, tokens, model, lat=None, note=''):
    t = float(np.mean(tokens))
    fl = float(np.mean([vit_flops(model.backbone, n, (IMG, IMG), 10) for n in np.atleast_1d(tokens)])) / 1e6
    return dict(method=method, setting=setting, top1=acc, mean_tokens=t, mflops=fl, latency_ms=lat, note=note)


def _thresholds_for(model_x: torch.Tensor, s: int, qs: Sequence[float]) -> List[float]:
    d = laplacian_detail(model_x, s, 3)
    vals = torch.cat([d[1].flatten(), d[2].flatten()])
    return [float(torch.quantile(vals, q)) for q in qs]


def _mixed_series(model, label, test, lat_x, policies):
    rows, fns = [], {}
    for setting, pol in policies:
        acc, toks = _mixed_eval(model, test, pol)
        rows.append(_row(label, setting, acc, toks.numpy(), model))
        fns[f'{label} {setting}'] = _mixed_caller(model, pol, lat_x)
    return rows, fns


def _mixed_caller(model, pol, xs):
    def run():
        set_mixed_policy(model, pol)
        try:
            with torch.no_grad():
                for x in xs:
                    model(x)
        finally:
            set_mixed_policy(model, None)
    return run


def _mixed_policies(val_x, budgets4, budgets6, thr_q):
    pols = [(f's=4/8/16, budget {b}', MixedPatchPolicy(4, 3, budget=b)) for b in budgets4]
    pols += [(f's=6/12/24, budget {b}', MixedPatchPolicy(6, 3, budget=b)) for b in budgets6]
    for q, t in zip(thr_q, _thresholds_for(val_x, 4, thr_q)):
        pols.append((f's=4/8/16, detail > q{int(q * 100)} ({t:.3g})', MixedPatchPolicy(4, 3, threshold=t)))
    return pols


def digits_study(save_dir: str = 'work_dirs/reproduce_digits', epochs: int = 100, seed: int = 0,
                 cascade: Sequence[int] = (24, 8, 4), target_acc: Optional[float] = None, ft_epochs: int = 10,
                 ft_lr: float = 3e-4, latency_runs: int = 10, latency_images: int = 8,
                 budgets4=(12, 18, 24, 36, 48, 72, 96), budgets6=(8, 16, 24, 36, 48), thr_q=(0.5, 0.7, 0.85),
                 sweep_thresholds=(0.5, 0.7, 0.9, 0.97, 0.99),
                 log=print) -> dict:
    """All rows of the digits table (see the module docstring)."""
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
    fwd = lambda m, p: (lambda: [m(x, p) for x in lat_x])  # noqa: E731

    # (a) uniform
    for p in PATCHES:
        with torch.no_grad():
            rows.append(_row('(a) uniform', f'p{p}', accuracy(model, test, p), (IMG // p) ** 2, model))
        fns[f'(a) uniform p{p}'] = torch.no_grad()(fwd(model, p))

    # (b) cascade, cross-calibrated: thresholds calibrated on one half of the test images are applied to
    # the other half and vice versa, so every test image is reported by thresholds that never saw it
    logits_fn = lambda x, p: model(x, p)  # noqa: E731
    with torch.no_grad():
        lt = torch.stack([model(test[0], p) for p in cascade])
        lu = torch.stack([model(test[0], p) for p in PATCHES])
    tc, tk = confidence(lt).numpy(), (lt.argmax(-1) == test[1]).numpy()
    uk = (lu.argmax(-1) == test[1]).numpy()
    n = tc.shape[1]
    halves = [np.arange(0, n, 2), np.arange(1, n, 2)]
    tokens = [(IMG // p) ** 2 for p in cascade]
    stage_fl = np.cumsum([vit_flops(model.backbone, t, (IMG, IMG), 10) for t in tokens]) / 1e6

    def stops(thr, idx):
        return np.argmax(np.concatenate([tc[:-1, idx] >= np.array(thr)[:, None], np.ones((1, len(idx)), bool)]), 0)

    stop_cal, thr_cal, goals, met = np.zeros(n, int), [], [], True
    for cal_idx, rep_idx in (halves, halves[::-1]):
        goal = target_acc if target_acc is not None else float(uk[:, cal_idx].mean(1).max() * 100)
        c = calibrate(tc[:, cal_idx], tk[:, cal_idx], tokens, target_acc=goal)
        stop_cal[rep_idx] = stops(c.thresholds, rep_idx)
        thr_cal.append(c.thresholds)
        goals.append(goal)
        met = met and c.met
    settings = [('calibrated (cross-fitted halves, target = ' +
                 ('best uniform top-1 of the calibration half' if target_acc is None else f'{target_acc}%') + ')',
                 stop_cal, thr_cal[0], ' / '.join('/'.join(f'{t:.3f}' for t in th) for th in thr_cal)
                 + ('' if met else ' (target not met on a calibration half)'))]
    for t in sweep_thresholds:
        thr = [t] * (len(cascade) - 1)
        settings.append((f'threshold {t:g} at every stage', stops(thr, np.arange(n)), thr, f'{t:g}'))
    for name, stop, thr, thr_note in settings:
        setting = '/'.join(map(str, cascade)) + ', ' + name
        frac = [float((stop == i).mean()) for i in range(len(cascade))]
        rows.append(dict(method='(b) cascade', setting=setting, top1=float(tk[stop, np.arange(n)].mean() * 100),
                         mean_tokens=float(np.cumsum(tokens)[stop].mean()),  # every stage an image went through
                         mflops=float(stage_fl[stop].mean()), latency_ms=None,
                         note='stops ' + '/'.join(f'{f:.2f}' for f in frac) + ', thresholds ' + thr_note))
        casc = FlexiCascade(model, list(cascade), thr, logits_fn=logits_fn)
        fns['(b) cascade ' + setting] = lambda c=casc: [c(x) for x in lat_x]

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
    ms = _latency(fns, latency_runs)
    for r in rows:
        for k, v in ms.items():
            if k == f"{r['method']} {r['setting']}":
                r['latency_ms'] = v / latency_images
    return dict(rows=rows, n_test=len(test[1]), target_acc=goals, cascade=list(cascade),
                ft_steps=steps)


def savings_table(rows: List[dict], tol: float = 1e-3) -> str:
    """Against each uniform patch on the uniform Pareto front (no other uniform patch is as accurate with
    fewer tokens): the adaptive row (cascade, mixed zero-shot, mixed after mixed FT) with the fewest mean
    tokens reaching its accuracy, and the most accurate adaptive row within its token count."""
    uni = [r for r in rows if r['method'] == '(a) uniform']
    front = [u for u in uni if not any(v is not u and v['top1'] >= u['top1'] - tol and v['mean_tokens'] < u['mean_tokens']
                                       for v in uni)]
    adaptive = [r for r in rows if r['method'].startswith(('(b)', '(c)', '(d)')) and not r['method'].startswith("(d')")]
    out = ['| uniform (Pareto front) | top-1 | tokens | fewest-token adaptive row reaching its top-1 | top-1 | tokens '
           '| token saving | best adaptive row within its tokens | top-1 |', '|---|---|---|---|---|---|---|---|---|']
    for u in sorted(front, key=lambda r: r['mean_tokens']):
        ok = [r for r in adaptive if r['top1'] >= u['top1'] - tol]
        cheap = [r for r in adaptive if r['mean_tokens'] <= u['mean_tokens'] + tol]
        c = max(cheap, key=lambda r: (r['top1'], -r['mean_tokens'])) if cheap else None
        cell_c = f"{c['method']} {c['setting']} | {c['top1']:.1f}" if c else 'none | '
        if ok:
            b = min(ok, key=lambda r: r['mean_tokens'])
            sv = 1 - b['mean_tokens'] / u['mean_tokens']
            cell_b = (f"{b['method']} {b['setting']} | {b['top1']:.1f} | {b['mean_tokens']:.1f} | "
                      f"{'%.0f%%' % (100 * sv) if sv > tol else 'none'}")
        else:
            cell_b = 'none reaches it | | | none'
        out.append(f"| {u['setting']} | {u['top1']:.1f} | {u['mean_tokens']:.0f} | {cell_b} | {cell_c} |")
    return '\n'.join(out)


def rows_table(rows: List[dict]) -> str:
    out = ['| method | setting | top-1 (%) | mean tokens | MFLOPs | latency ms | note |', '|---|---|---|---|---|---|---|']
    for r in rows:
        lat = '-' if r.get('latency_ms') is None else f"{r['latency_ms']:.2f}"
        out.append(f"| {r['method']} | {r['setting']} | {r['top1']:.1f} | {r['mean_tokens']:.1f} | {r['mflops']:.1f} | "
                   f"{lat} | {r.get('note', '')} |")
    return '\n'.join(out)


def write_rows(rows: List[dict], out_prefix: str, title: str, metric: str = 'top-1 (%)', text: str = '') -> List[str]:
    write_csv(out_prefix + '.csv', rows, ['method', 'setting', 'top1', 'mean_tokens', 'mflops', 'latency_ms', 'note'])
    with open(out_prefix + '.md', 'w') as f:
        f.write(text + '\n')
    save_figure(lambda fig, axes: _draw_rows(fig, axes[0], rows, title, metric), out_prefix + '.png', 1, 2,
                size=(6.0, 5.6), dpi=120)
    return [out_prefix + e for e in ('.md', '.csv', '.png')]


def _draw_rows(fig, axes, rows, title, metric):
    groups: Dict[str, List[dict]] = {}
    for r in rows:
        key = r['method']
        if r['setting'].startswith('s='):  # one line per finest patch and partition rule
            key += ' ' + r['setting'].split(',')[0] + (' budget' if 'budget' in r['setting'] else ' detail')
        groups.setdefault(key, []).append(r)
    markers = 'os^vd<>ph*xP+'
    for ax, xkey, xlabel in ((axes[0], 'mean_tokens', 'mean tokens per image'),
                             (axes[1], 'latency_ms', 'latency per image, batch 1 (ms, interleaved)')):
        for i, (name, rs) in enumerate(groups.items()):
            rs = sorted([r for r in rs if r.get(xkey) is not None and np.isfinite(r[xkey])],
                        key=lambda r: r['mean_tokens'])
            if not rs:
                continue
            control = name.startswith(('(e)', "(d')"))
            ax.plot([r[xkey] for r in rs], [r['top1'] for r in rs], marker=markers[i % len(markers)], ms=4,
                    ls=(':' if control else '-') if xkey == 'mean_tokens' else 'none', alpha=0.45 if control else 0.9,
                    lw=1.8 if name.startswith('(a)') else 1.1, label=name)
            cal = [r for r in rs if 'calibrated' in r['setting']]
            if cal:
                ax.plot([r[xkey] for r in cal], [r['top1'] for r in cal], '*', ms=13, color='k', alpha=0.6,
                        label='cascade, calibrated' if xkey == 'mean_tokens' else None)
        ax.set_xscale('log')
        ax.set_xlabel(xlabel)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc='upper center', bbox_to_anchor=(0.5, 0.0), ncol=4, fontsize=7, frameon=False)
    fig.suptitle(title)


# ------------------------------------------------------------------------------ tiny segmentation
def _seg_batches(model, cfg):
    from mmengine.runner import Runner
    dl = copy.deepcopy(cfg.val_dataloader)
    dl.update(num_workers=0, persistent_workers=False)
    out = []
    for batch in Runner.build_dataloader(dl):
        data = model.data_preprocessor(batch, False)
        out.append((data['inputs'], data['data_samples']))
    return out


@torch.no_grad()
def _miou(model, batches, num_classes: int, policy: Optional[MixedPatchPolicy] = None, patch=None):
    """mIoU (%, nanmean over classes as mmseg's IoUMetric) and the patch tokens per image."""
    from ..engine.patch_size import set_patch_size
    if patch is not None:
        set_patch_size(model, patch)
    set_mixed_policy(model, policy)
    inter, union, toks = np.zeros(num_classes), np.zeros(num_classes), []
    try:
        for x, samples in batches:
            preds = model.predict(x, copy.deepcopy(samples))
            if policy is not None:
                toks.append(model.backbone.last_num_tokens.float())
            for s in preds:
                pr, gt = s.pred_sem_seg.data[0].numpy(), s.gt_sem_seg.data[0].numpy()
                keep = gt != 255
                pr, gt = pr[keep], gt[keep]
                for c in range(num_classes):
                    inter[c] += np.sum((pr == c) & (gt == c))
                    union[c] += np.sum((pr == c) | (gt == c))
    finally:
        set_mixed_policy(model, None)
    with np.errstate(invalid='ignore', divide='ignore'):
        miou = float(np.nanmean(inter / np.where(union > 0, union, np.nan)) * 100)
    return miou, (torch.cat(toks).numpy() if toks else None)


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


def seg_study(config: str = 'configs/seg/tiny_seg_flexi.py', checkpoint: str = 'work_dirs/tiny_seg_flexi/iter_300.pth',
              seed: int = 0, latency_runs: int = 5, latency_images: int = 4, ft_iters: int = 100, ft_lr: float = 5e-4,
              patches=(8, 10, 12, 15, 20, 24, 30, 40), budgets10=(16, 25, 36, 64, 100), budgets12=(40, 55, 70, 85),
              thr_q=(0.5, 0.7, 0.85), work_dir: str = 'work_dirs/reproduce_adaptive', log=print) -> dict:
    """mIoU against mean tokens / latency on the tiny segmentation data (val split, 24 images): uniform
    patches, mixed zero-shot, mixed after a short ``MixedPartitionHook`` fine-tune, and the
    ``RandomPatchSizeHook`` fine-tune of the same length as its control. Trains the tiny model first
    (``tools/train.py``'s recipe) when ``checkpoint`` is missing."""
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
        t = float(np.mean(tokens))
        fl = float(np.mean([vit_flops(m.backbone, n, (h, w)) for n in np.atleast_1d(tokens)])) / 1e6
        return dict(method=method, setting=setting, top1=miou, mean_tokens=t, mflops=fl, latency_ms=None, note='')

    def timed(m, policy=None, patch=None):
        def run():
            from ..engine.patch_size import set_patch_size
            if patch is not None:
                set_patch_size(m, patch)
            set_mixed_policy(m, policy)
            try:
                with torch.no_grad():
                    for x in lat_x:
                        m(x, mode='tensor')
            finally:
                set_mixed_policy(m, None)
        return run

    for p in patches:
        miou, _ = _miou(model, batches, ncls, patch=p)
        rows.append(row('(a) uniform', f'p{p}', miou, (h // p) * (w // p), model))
        fns[f'(a) uniform p{p}'] = timed(model, patch=p)
    pols = [(f's=10/20/40, budget {b}', MixedPatchPolicy(10, 3, budget=b)) for b in budgets10]
    pols += [(f's=12/24, budget {b}', MixedPatchPolicy(12, 2, budget=b)) for b in budgets12]
    for q, t in zip(thr_q, _thresholds_for(xs, 10, thr_q)):
        pols.append((f's=10/20/40, detail > q{int(q * 100)} ({t:.3g})', MixedPatchPolicy(10, 3, threshold=t)))

    def mixed(m, label, with_latency=True):
        for setting, pol in pols:
            miou, toks = _miou(m, batches, ncls, policy=pol)
            rows.append(row(label, setting, miou, toks, m))
            if with_latency:
                fns[f'{label} {setting}'] = timed(m, policy=pol)
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
    ms = _latency(fns, latency_runs)
    for r in rows:
        k = f"{r['method']} {r['setting']}"
        if k in ms:
            r['latency_ms'] = ms[k] / latency_images
    text = (f'tiny segmentation (toy ADE20k layout, {len(xs)} val images {h}x{w}, 5 classes), the main job\'s '
            f'4-layer FlexiViT + linear decoder ({checkpoint}); fine-tunes: {ft_iters} iterations, lr {ft_lr}. '
            f'Metric: mIoU (%) in the top-1 column. Tokens = patch tokens per image; MFLOPs of the backbone; '
            f'latency = median batch-1 ms per image (tensor mode), all rows interleaved in one process.\n\n'
            + rows_table(rows).replace('top-1 (%)', 'mIoU (%)')
            + '\n\nToken savings at equal mIoU:\n\n' + savings_table(rows).replace('top-1', 'mIoU'))
    return dict(rows=rows, text=text)
