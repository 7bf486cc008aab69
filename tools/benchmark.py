"""Speed/accuracy benchmark across tasks and patch sizes.

    python tools/benchmark.py --model seg CONFIG CKPT --model cls CONFIG CKPT [--patch P ...]
                              [--runs 10] [--throughput-batch 8] [--budget-ms T] [--out docs/benchmark]
    python tools/benchmark.py --preset tiny      # the README's tables (trains missing tiny checkpoints)

For every model and patch size: the task metric (the config's test set, multi-patch loop),
GFLOPs (torch's FlopCounterMode, one image), parameters, latency (batch 1) and throughput
(--throughput-batch images) on the current device (warm-up, then the median of --runs), and
peak memory (CUDA: max allocated; CPU: growth of the process's peak RSS, measured in a fresh
process per model with patch sizes in increasing token order). Writes OUT.md, OUT.csv and
OUT.png (metric vs latency per task). --budget-ms T picks, per task, the patch size with the
best metric whose latency meets T on this device.
"""
import argparse
import csv
import json
import os
import os.path as osp
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import _bootstrap  # noqa: F401

METRIC_PRIORITY = ('mIoU', 'accuracy/top1', 'mean_R@1', 'PQ', 'bbox_mAP')
TINY = [  # name, config, checkpoint, toy data kind (tools/make_toy_data.py) to train it if missing
    ('seg', 'configs/seg/tiny_seg_flexi.py', 'work_dirs/tiny_seg_flexi/iter_300.pth', 'seg'),
    ('cls', 'configs/cls/tiny_cls_flexi.py', 'work_dirs/tiny_cls_flexi/epoch_8.pth', 'cls'),
    ('retrieval', 'configs/retrieval/tiny_lit_flexi.py', 'work_dirs/tiny_lit_flexi/epoch_25.pth', 'captions'),
]


def main_metric(row: dict) -> str:
    for k in METRIC_PRIORITY:
        for key in row:
            if key == k or key.endswith('/' + k) or key.endswith(k):
                return key
    return next(k for k, v in row.items() if k not in ('patch', 'tokens') and isinstance(v, (int, float)))


def measure_one(name, config, checkpoint, patches, runs, tp_batch, data_root=None):
    """Runs in its own process: speed and memory first (increasing tokens), then the metric."""
    import torch
    from mmengine.config import Config
    from mmengine.runner import Runner
    from torch.utils.flop_counter import FlopCounterMode

    from flexitransfer.deploy import infer_img_size, walk_backbone_cfgs
    from flexitransfer.engine import set_patch_size

    cfg = Config.fromfile(config)
    cfg.work_dir = tempfile.mkdtemp(prefix='bench_')
    cfg.load_from, cfg.resume = checkpoint, False
    for _, bb in walk_backbone_cfgs(cfg.model):
        bb['pretrained'] = None
    cfg.test_cfg = dict(type='MultiPatchTestLoop', patch_sizes=list(patches) if patches else
                        (cfg.get('test_cfg') or {}).get('patch_sizes'))
    cfg.log_level = 'WARNING'
    if data_root:
        cfg.test_dataloader.dataset.data_root = data_root
    img = infer_img_size(cfg)
    if img is None:
        raise SystemExit(f'{config}: cannot tell its input size (set img_size in the config)')
    runner = Runner.from_cfg(cfg)
    runner.load_or_resume()
    model = runner.model.eval()
    dev = next(model.parameters()).device
    cuda = dev.type == 'cuda'
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    patch_list = sorted(cfg.test_cfg['patch_sizes'], key=lambda p: -p)  # increasing tokens
    params = sum(p.numel() for p in model.parameters()) / 1e6
    speed = {}
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with torch.no_grad():
        for p in patch_list:
            set_patch_size(model, p)
            x1 = torch.randn(1, 3, *img, device=dev)
            xb = torch.randn(tp_batch, 3, *img, device=dev)
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            for _ in range(3):  # warm-up; the first forward at a new p also resizes kernel + grid (cached)
                model(x1, mode='tensor')
            with FlopCounterMode(display=False) as fc:  # steady state: no resize work
                model(x1, mode='tensor')
            sync()
            lat = []
            for _ in range(runs):
                t0 = time.perf_counter()
                model(x1, mode='tensor')
                sync()
                lat.append(time.perf_counter() - t0)
            tps = []
            for _ in range(max(3, runs // 3)):
                t0 = time.perf_counter()
                model(xb, mode='tensor')
                sync()
                tps.append(tp_batch / (time.perf_counter() - t0))
            mem = torch.cuda.max_memory_allocated() / 2 ** 20 if cuda else \
                (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
            speed[str(p)] = dict(gflops=fc.get_total_flops() / 1e9, latency_ms=statistics.median(lat) * 1e3,
                                 throughput=statistics.median(tps), peak_mem_mib=mem)
    runner.test()
    rows = []
    for r in runner.test_loop.last_table:
        metric = main_metric(r)
        rows.append(dict(task=name, patch=int(r['patch']), tokens=r['tokens'], metric=metric,
                         value=float(r[metric]), params_m=params, device=str(dev), **speed[r['patch']]))
    return rows


def write_outputs(rows, out, budget):
    os.makedirs(osp.dirname(out) or '.', exist_ok=True)
    cols = ['task', 'patch', 'tokens', 'metric', 'value', 'gflops', 'params_m', 'latency_ms', 'throughput',
            'peak_mem_mib', 'device']
    fmt = {'value': '{:.2f}', 'gflops': '{:.3f}', 'params_m': '{:.2f}', 'latency_ms': '{:.2f}',
           'throughput': '{:.1f}', 'peak_mem_mib': '{:.1f}'}
    lines = ['| ' + ' | '.join(cols) + ' |', '|' + '---|' * len(cols)]
    for r in rows:
        lines.append('| ' + ' | '.join(fmt.get(c, '{}').format(r[c]) for c in cols) + ' |')
    text = '\n'.join(lines)
    if budget is not None:
        text += f'\n\nBest patch per task within {budget} ms (batch 1, this device):\n'
        for task in dict.fromkeys(r['task'] for r in rows):
            ok = [r for r in rows if r['task'] == task and r['latency_ms'] <= budget]
            if ok:
                b = max(ok, key=lambda r: (r['value'], -r['latency_ms']))
                text += f"- {task}: patch {b['patch']} ({b['metric']} {b['value']:.2f}, {b['latency_ms']:.2f} ms)\n"
            else:
                fastest = min((r for r in rows if r['task'] == task), key=lambda r: r['latency_ms'])
                text += f"- {task}: no patch meets {budget} ms (fastest: patch {fastest['patch']}, " \
                        f"{fastest['latency_ms']:.2f} ms)\n"
    print(text)
    open(out + '.md', 'w').write(text + '\n')
    with open(out + '.csv', 'w', newline='') as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows({c: r[c] for c in cols} for r in rows)
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    tasks = list(dict.fromkeys(r['task'] for r in rows))
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.5 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        rs = sorted((r for r in rows if r['task'] == task), key=lambda r: r['latency_ms'])
        ax.plot([r['latency_ms'] for r in rs], [r['value'] for r in rs], 'o-')
        for r in rs:
            ax.annotate(f"p{r['patch']}", (r['latency_ms'], r['value']), textcoords='offset points', xytext=(4, 4),
                        fontsize=8)
        if budget is not None:
            ax.axvline(budget, color='red', ls=':', lw=1)
        ax.set_xlabel(f"latency, batch 1 (ms, {rs[0]['device']})")
        ax.set_ylabel(rs[0]['metric'])
        ax.set_title(task)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out + '.png', dpi=110)
    print(f'wrote {out}.md, {out}.csv, {out}.png')


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--model', nargs=3, action='append', metavar=('NAME', 'CONFIG', 'CKPT'), default=[])
    ap.add_argument('--preset', choices=['tiny'])
    ap.add_argument('--patch', type=int, nargs='+')
    ap.add_argument('--runs', type=int, default=10)
    ap.add_argument('--throughput-batch', type=int, default=8)
    ap.add_argument('--budget-ms', type=float)
    ap.add_argument('--out', default='docs/benchmark')
    ap.add_argument('--data-root', help='override the test set\'s data_root (all models)')
    ap.add_argument('--_one', nargs=4, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a._one:
        name, config, ckpt, out = a._one
        json.dump(measure_one(name, config, ckpt, a.patch, a.runs, a.throughput_batch, a.data_root), open(out, 'w'))
        return
    models = list(a.model)
    if a.preset == 'tiny':
        for name, config, ckpt, kind in TINY:
            if not osp.exists(ckpt):
                from flexitransfer.datasets.toy import TOY_DATASETS
                if not osp.isdir(TOY_DATASETS[kind].root):
                    subprocess.run([sys.executable, 'tools/make_toy_data.py', kind], check=True)
                subprocess.run([sys.executable, 'tools/train.py', config], check=True)
            models.append((name, config, ckpt))
    if not models:
        ap.error('give --model NAME CONFIG CKPT (repeatable) or --preset tiny')
    rows = []
    for name, config, ckpt in models:
        if not osp.isfile(ckpt):
            raise SystemExit(f'checkpoint not found: {ckpt}')
        with tempfile.NamedTemporaryFile(suffix='.json') as f:
            cmd = [sys.executable, __file__, '--_one', name, config, ckpt, f.name, '--runs', str(a.runs),
                   '--throughput-batch', str(a.throughput_batch)] + (['--patch', *map(str, a.patch)] if a.patch else []) \
                + (['--data-root', a.data_root] if a.data_root else [])
            print(f'[benchmark] {name}: {config} @ {ckpt}', flush=True)
            subprocess.run(cmd, check=True)
            rows += json.load(open(f.name))
    write_outputs(rows, a.out, a.budget_ms)


if __name__ == '__main__':
    main()
