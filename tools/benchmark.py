"""Speed/accuracy benchmark across tasks and patch sizes.

    python tools/benchmark.py --model seg CONFIG CKPT --model cls CONFIG CKPT [--patch P ...]
                              [--runtime torch onnxruntime onnxruntime-int8] [--runs 10]
                              [--throughput-batch 8] [--budget-ms T] [--out docs/benchmark]
    python tools/benchmark.py --preset tiny      # the README's tables (trains missing tiny checkpoints)

For every model, runtime and patch size: the task metric (the config's test set, multi-patch
loop; for ONNX runtimes the exported graph inside the task model, flexitransfer.deploy.predictors),
GFLOPs (torch's FlopCounterMode, one image), parameters, latency (batch 1) and throughput
(--throughput-batch images) on the current device (warm-up, then the median of --runs), and
peak memory (CUDA: max allocated; CPU: growth of the process's peak RSS, measured in a fresh
process per model with patch sizes in increasing token order). Runtimes: ``torch`` (fp32),
``torch-bf16`` / ``torch-fp16`` (autocast; only where the device computes that dtype natively:
added by default on CUDA, never offered on a CPU without bf16 units, where it is several times
slower than fp32), ``onnxruntime`` (the model baked at each patch, exported, fp32) and
``onnxruntime-int8`` (the same graph with dynamic int8 linear layers). Per patch the runtimes
are timed interleaved in one process. Writes OUT.md, OUT.csv and OUT.png (metric vs latency,
one curve per runtime, per task). --budget-ms T picks, per task, the (patch, runtime) pair
with the best metric whose latency meets T on this device.
"""
import argparse
import csv
import json
import os
import os.path as osp
import resource
import subprocess
import sys
import tempfile

import _bootstrap  # noqa: F401

RUNTIMES = ('torch', 'torch-bf16', 'torch-fp16', 'onnxruntime', 'onnxruntime-int8')
METRIC_PRIORITY = ('mIoU', 'accuracy/top1', 'mean_R@1', 'PQ', 'bbox_mAP')
TINY = [  # name, config, checkpoint, toy data kind (tools/make_toy_data.py) to train it if missing
    ('seg', 'configs/seg/tiny_seg_flexi.py', 'work_dirs/tiny_seg_flexi/iter_300.pth', 'seg'),
    ('cls', 'configs/cls/tiny_cls_flexi.py', 'work_dirs/tiny_cls_flexi/epoch_8.pth', 'cls'),
    ('retrieval', 'configs/retrieval/tiny_lit_flexi.py', 'work_dirs/tiny_lit_flexi/epoch_25.pth', 'captions'),
    ('panoptic', 'configs/panoptic/tiny_panoptic_flexi.py', 'work_dirs/tiny_panoptic_flexi/iter_200.pth', 'panoptic'),
    ('det', 'configs/det/tiny_owl_det.py', 'work_dirs/tiny_owl_det/iter_300.pth', 'det'),
]


def main_metric(row: dict) -> str:
    for k in METRIC_PRIORITY:
        for key in row:
            if key == k or key.endswith('/' + k) or key.endswith(k):
                return key
    return next(k for k, v in row.items() if k not in ('patch', 'tokens') and isinstance(v, (int, float)))


def resolve_runtimes(requested, device):
    """The runtimes to measure on ``device``: as asked (checked), or torch fp32 plus the autocast
    dtypes the device runs natively (CUDA: bf16 / fp16; a CPU only where it has bf16 / fp16 units)."""

    from flexitransfer.deploy import autocast_dtypes, check_autocast
    if not requested:
        return ['torch'] + ([f'torch-{d}' for d in autocast_dtypes(device)] if device.type == 'cuda' else [])
    for r in requested:
        if r.startswith('torch-'):
            try:
                check_autocast(r[len('torch-'):], device)
            except ValueError as e:
                raise SystemExit(f'--runtime {r}: {e}')
    return list(dict.fromkeys(requested))


def make_forward(runtime, model, patch, img, tmp, dev, exporter='dynamo'):
    """``fn(x)`` running ``model`` at ``patch`` in ``runtime``; for ONNX runtimes also the graph's path."""
    import torch

    from flexitransfer.deploy import AUTOCAST_DTYPES, OnnxFunction, bake_model, export_onnx, quantize_int8
    from flexitransfer.deploy import has_predictor
    if runtime == 'torch':
        return (lambda x: model(x, mode='tensor')), None
    if runtime.startswith('torch-'):
        dtype = AUTOCAST_DTYPES[runtime[len('torch-'):]]

        def fwd(x):
            with torch.autocast(dev.type, dtype=dtype):
                return model(x, mode='tensor')
        return fwd, None
    path = osp.join(tmp, f'p{patch}.onnx')
    target = 'tensor' if has_predictor(model) else 'backbone'
    if not osp.exists(path):
        baked = bake_model(model, patch, img).cpu().eval()
        export_onnx(baked, img, path, target=target, exporter=exporter, meta=dict(patch_size=[patch, patch]))
    if runtime == 'onnxruntime-int8':
        qpath = osp.join(tmp, f'p{patch}_int8.onnx')
        quantize_int8(path, qpath)
        path = qpath
    if target == 'backbone':  # time the whole model (neck + head in torch) on the ONNX backbone, as torch's row
        import copy

        from flexitransfer.deploy import install_onnx
        full = copy.deepcopy(model).cpu().eval()
        install_onnx(full, path)
        return (lambda x: full(x.cpu(), mode='tensor')), path
    fn = OnnxFunction(path)
    return (lambda x: fn(x.cpu())), path


def measure_one(name, config, checkpoint, patches, runs, tp_batch, data_root=None, runtimes=None,
                exporter='dynamo'):
    """Runs in its own process: speed and memory first (increasing tokens), then the metric.

    Per patch, the runtimes are timed interleaved (round-robin, alternating order), so their
    ratios hold even when the machine is busy."""
    import torch

    from flexitransfer.apis import build_test_runner, load_config, prepare_test_cfg
    from flexitransfer.deploy import AUTOCAST_DTYPES, evaluate, infer_img_size
    from flexitransfer.deploy.speed import count_flops, interleaved_ms
    from flexitransfer.engine import flexi_modules, set_patch_size

    cfg = load_config(config)
    cfg = prepare_test_cfg(cfg, patch_sizes=list(patches) if patches else None,
                           work_dir=tempfile.mkdtemp(prefix='bench_'), data_root=data_root, log_level='WARNING')
    img = infer_img_size(cfg)
    if img is None:
        raise SystemExit(f'{config}: cannot tell its input size (set img_size in the config)')
    runner = build_test_runner(cfg, checkpoint, prepared=True)  # strict: a missing tensor is an error naming it
    model = runner.model.eval()
    chans = flexi_modules(model)[0].in_channels  # the config's channel count (1 for the digits models)
    dev = next(model.parameters()).device
    runtimes = resolve_runtimes(runtimes, dev)
    cuda = dev.type == 'cuda'
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    patch_list = sorted(cfg.test_cfg['patch_sizes'], key=lambda p: -p)  # increasing tokens
    params = sum(p.numel() for p in model.parameters()) / 1e6
    speed, onnx_paths = {}, {}
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tmp = tempfile.mkdtemp(prefix='bench_onnx_')
    with torch.no_grad():
        for p in patch_list:
            set_patch_size(model, p)
            x1 = torch.randn(1, chans, *img, device=dev)
            xb = torch.randn(tp_batch, chans, *img, device=dev)
            fwd, mem = {}, {}
            for rt in runtimes:
                fwd[rt], onnx_paths[(rt, p)] = make_forward(rt, model, p, img, tmp, dev, exporter)
                ondev = cuda and rt.startswith('torch')
                if ondev:
                    torch.cuda.reset_peak_memory_stats()
                for _ in range(3):  # warm-up; the first torch forward at a new p also resizes kernel + grid (cached)
                    fwd[rt](x1)
                sync()
                mem[rt] = torch.cuda.max_memory_allocated() / 2 ** 20 if ondev else \
                    (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
            gflops = count_flops(lambda: model(x1, mode='tensor')) / 1e9  # steady state: no resize work
            lat = interleaved_ms({rt: (lambda f=fwd[rt]: f(x1)) for rt in runtimes}, runs, 1, sync)
            tput = interleaved_ms({rt: (lambda f=fwd[rt]: f(xb)) for rt in runtimes}, max(3, runs // 3), 1, sync)
            for rt in runtimes:
                speed[(rt, p)] = dict(gflops=gflops, latency_ms=lat[rt], throughput=tp_batch / tput[rt] * 1e3,
                                      peak_mem_mib=mem[rt],
                                      device=str(dev) if rt.startswith('torch') else 'cpu (onnxruntime)')
    tables = {}
    for rt in runtimes:
        if rt.startswith('torch-'):
            with torch.autocast(dev.type, dtype=AUTOCAST_DTYPES[rt[len('torch-'):]]):
                runner.test()
            tables[rt] = list(runner.test_loop.last_table)
        elif rt == 'torch':
            runner.test()
            tables[rt] = list(runner.test_loop.last_table)
    rows = []
    for rt in runtimes:
        for p in cfg.test_cfg['patch_sizes']:
            if rt in tables:
                r = next(r for r in tables[rt] if int(r['patch']) == p)
            else:  # the exported graph inside the task model: same data, same metric code
                metrics = evaluate(cfg, checkpoint, onnx_paths[(rt, p)], patch_sizes=[p], data_root=data_root)
                r = {'patch': str(p), 'tokens': (img[0] // p) * (img[1] // p),
                     **{k: v for k, v in metrics.items() if not k.startswith(f'p{p}/')}}
            metric = main_metric(r)
            rows.append(dict(task=name, runtime=rt, patch=int(r['patch']), tokens=r['tokens'], metric=metric,
                             value=float(r[metric]), params_m=params, **speed[(rt, int(r['patch']))]))
    return rows


def write_outputs(rows, out, budget):
    os.makedirs(osp.dirname(out) or '.', exist_ok=True)
    cols = ['task', 'runtime', 'patch', 'tokens', 'metric', 'value', 'gflops', 'params_m', 'latency_ms', 'throughput',
            'peak_mem_mib', 'device']
    fmt = {'value': '{:.2f}', 'gflops': '{:.3f}', 'params_m': '{:.2f}', 'latency_ms': '{:.2f}',
           'throughput': '{:.1f}', 'peak_mem_mib': '{:.1f}'}
    lines = ['| ' + ' | '.join(cols) + ' |', '|' + '---|' * len(cols)]
    for r in rows:
        lines.append('| ' + ' | '.join(fmt.get(c, '{}').format(r[c]) for c in cols) + ' |')
    text = '\n'.join(lines)
    if budget is not None:
        text += f'\n\nBest (patch, runtime) per task within {budget} ms (batch 1, this device):\n'
        for task in dict.fromkeys(r['task'] for r in rows):
            ok = [r for r in rows if r['task'] == task and r['latency_ms'] <= budget]
            if ok:
                b = max(ok, key=lambda r: (r['value'], -r['latency_ms']))
                text += f"- {task}: patch {b['patch']} ({b['metric']} {b['value']:.2f}, {b['latency_ms']:.2f} ms, " \
                        f"{b['runtime']})\n"
            else:
                fastest = min((r for r in rows if r['task'] == task), key=lambda r: r['latency_ms'])
                text += f"- {task}: no (patch, runtime) meets {budget} ms (fastest: patch {fastest['patch']}, " \
                        f"{fastest['runtime']}, {fastest['latency_ms']:.2f} ms)\n"
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
        trows = [r for r in rows if r['task'] == task]
        for rt in dict.fromkeys(r['runtime'] for r in trows):  # one curve per runtime
            rs = sorted((r for r in trows if r['runtime'] == rt), key=lambda r: r['latency_ms'])
            ax.plot([r['latency_ms'] for r in rs], [r['value'] for r in rs], 'o-', label=rt)
            for r in rs:
                ax.annotate(f"p{r['patch']}", (r['latency_ms'], r['value']), textcoords='offset points',
                            xytext=(4, 4), fontsize=8)
        if budget is not None:
            ax.axvline(budget, color='red', ls=':', lw=1)
        ax.set_xlabel(f"latency, batch 1 (ms, {trows[0]['device']})")
        ax.set_ylabel(trows[0]['metric'])
        ax.set_title(task)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
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
    ap.add_argument('--runtime', nargs='+', choices=RUNTIMES,
                    help='runtimes to compare (default: torch, plus bf16/fp16 autocast on CUDA); ONNX runtimes export '
                         'the model baked at each patch and run it in ONNX Runtime (CPU)')
    ap.add_argument('--exporter', choices=['dynamo', 'torchscript'], default='dynamo',
                    help='torch.onnx.export(dynamo=True) or the TorchScript-based exporter, for ONNX runtimes')
    ap.add_argument('--_one', nargs=4, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a._one:
        name, config, ckpt, out = a._one
        json.dump(measure_one(name, config, ckpt, a.patch, a.runs, a.throughput_batch, a.data_root, a.runtime,
                              a.exporter), open(out, 'w'))
        return
    if a.runtime:  # fail before any work: e.g. bf16 on a CPU without bf16 units
        import torch
        resolve_runtimes(a.runtime, torch.device('cuda' if torch.cuda.is_available() else 'cpu'))
    models = list(a.model)
    if a.preset == 'tiny':
        for name, config, ckpt, kind in TINY:
            if not osp.exists(ckpt):
                from flexitransfer.datasets.toy import ensure_toy
                ensure_toy(kind)
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
                + (['--data-root', a.data_root] if a.data_root else []) \
                + (['--runtime', *a.runtime] if a.runtime else []) + ['--exporter', a.exporter]
            print(f'[benchmark] {name}: {config} @ {ckpt}', flush=True)
            subprocess.run(cmd, check=True)
            rows += json.load(open(f.name))
    write_outputs(rows, a.out, a.budget_ms)


if __name__ == '__main__':
    main()
