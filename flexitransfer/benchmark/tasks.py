"""The cross-task speed/accuracy benchmark: per model, runtime and patch size the task metric
(the config's test set through the multi-patch loop; for ONNX runtimes the exported graph inside
the task model), GFLOPs, parameters, latency, throughput and peak memory; the table, CSV and plot;
the (patch, runtime) pick under a latency budget. ``tools/benchmark.py`` is argparse + :func:`run`.

Each model is measured in a fresh process (``python -m flexitransfer.benchmark.tasks``), so its
peak-RSS growth is its own; per patch the runtimes are timed interleaved in that process.
"""
import json
import os
import os.path as osp
import resource
import subprocess
import sys
import tempfile

from ..evaluation.main_metric import main_metric

RUNTIMES = ('torch', 'torch-compile', 'torch-bf16', 'torch-fp16', 'onnxruntime', 'onnxruntime-int8')
TINY = [  # name, config, checkpoint, toy data kind (tools/make_toy_data.py) to train it if missing
    ('seg', 'configs/seg/tiny_seg_flexi.py', 'work_dirs/tiny_seg_flexi/iter_300.pth', 'seg'),
    ('cls', 'configs/cls/tiny_cls_flexi.py', 'work_dirs/tiny_cls_flexi/epoch_8.pth', 'cls'),
    ('retrieval', 'configs/retrieval/tiny_lit_flexi.py', 'work_dirs/tiny_lit_flexi/epoch_25.pth', 'captions'),
    ('panoptic', 'configs/panoptic/tiny_panoptic_flexi.py', 'work_dirs/tiny_panoptic_flexi/iter_200.pth', 'panoptic'),
    ('det', 'configs/det/tiny_owl_det.py', 'work_dirs/tiny_owl_det/iter_300.pth', 'det'),
]


def resolve_runtimes(requested, device):
    """The runtimes to measure on ``device``: as asked (checked), or torch fp32 plus the autocast
    dtypes the device runs natively (CUDA: bf16 / fp16; a CPU only where it has bf16 / fp16 units)."""

    from ..deploy import autocast_dtypes, check_autocast
    if not requested:
        return ['torch'] + ([f'torch-{d}' for d in autocast_dtypes(device)] if device.type == 'cuda' else [])
    for r in requested:
        if r.startswith('torch-') and r != 'torch-compile':
            try:
                check_autocast(r[len('torch-'):], device)
            except ValueError as e:
                raise SystemExit(f'--runtime {r}: {e}')
    return list(dict.fromkeys(requested))


def make_forward(runtime, model, patch, img, tmp, dev, exporter='dynamo'):
    """``fn(x)`` running ``model`` at ``patch`` in ``runtime``; for ONNX runtimes also the graph's path."""
    import torch

    from ..deploy import AUTOCAST_DTYPES, OnnxFunction, bake_model, export_onnx, has_predictor, quantize_int8
    if runtime == 'torch':
        return (lambda x: model(x, mode='tensor')), None
    if runtime == 'torch-compile':  # the model baked at this patch (no resize in the graph), compiled
        from ..deploy.export import export_module
        compiled = torch.compile(export_module(bake_model(model, patch, img).eval(), 'tensor'))
        return compiled, None
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

        from ..deploy import install_onnx
        full = copy.deepcopy(model).cpu().eval()
        install_onnx(full, path)
        return (lambda x: full(x.cpu(), mode='tensor')), path
    fn = OnnxFunction(path)
    return (lambda x: fn(x.cpu())), path


def _say(name: str, text: str) -> None:
    print(f'[benchmark] {name}: {text}', flush=True)


def measure_one(name, config, checkpoint, patches, runs, tp_batch, data_root=None, runtimes=None,
                exporter='dynamo'):
    """Runs in its own process: speed and memory first (increasing tokens), then the metric, with a
    progress line per patch, runtime and metric pass. The runner's work dir and the exported ONNX
    files live in one temporary folder, removed when the measurement ends (or fails).

    Per patch, the runtimes are timed interleaved (round-robin, alternating order), so their
    ratios hold even when the machine is busy.

    Returns:
        list[dict]: one row per (runtime, patch) (see :data:`COLUMNS`).
    """
    with tempfile.TemporaryDirectory(prefix='ft_bench_') as tmp:
        return _measure(tmp, name, config, checkpoint, patches, runs, tp_batch, data_root, runtimes, exporter)


def _measure(tmp, name, config, checkpoint, patches, runs, tp_batch, data_root, runtimes, exporter):
    import torch

    from ..apis import build_test_runner, load_config, prepare_test_cfg
    from ..benchmark.timing import count_flops, interleaved_ms
    from ..deploy import AUTOCAST_DTYPES, evaluate_onnx, infer_img_size
    from ..engine import flexi_modules, set_patch_size
    from ..engine.workers import shut_down_workers

    cfg = load_config(config)
    cfg = prepare_test_cfg(cfg, patch_sizes=list(patches) if patches else None,
                           work_dir=osp.join(tmp, 'work'), data_root=data_root, log_level='WARNING')
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
    with torch.no_grad():
        for i, p in enumerate(patch_list):
            set_patch_size(model, p)
            x1 = torch.randn(1, chans, *img, device=dev)
            xb = torch.randn(tp_batch, chans, *img, device=dev)
            fwd, mem = {}, {}
            for rt in runtimes:
                _say(name, f'patch {p} ({i + 1}/{len(patch_list)}): {rt}: ' +
                     ('export + warm-up' if rt.startswith('onnx') or rt == 'torch-compile' else 'warm-up'))
                fwd[rt], onnx_paths[(rt, p)] = make_forward(rt, model, p, img, tmp, dev, exporter)
                ondev = cuda and rt.startswith('torch')
                if ondev:
                    torch.cuda.reset_peak_memory_stats()
                for _ in range(3):  # warm-up; the first torch forward at a new p also resizes kernel + grid (cached)
                    fwd[rt](x1)
                sync()
                mem[rt] = torch.cuda.max_memory_allocated() / 2 ** 20 if ondev else \
                    (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
            _say(name, f'patch {p} ({i + 1}/{len(patch_list)}): timing {", ".join(runtimes)} ({runs} rounds)')
            gflops = count_flops(lambda: model(x1, mode='tensor')) / 1e9  # steady state: no resize work
            lat = interleaved_ms({rt: (lambda f=fwd[rt]: f(x1)) for rt in runtimes}, runs, 1, sync)
            tput = interleaved_ms({rt: (lambda f=fwd[rt]: f(xb)) for rt in runtimes}, max(3, runs // 3), 1, sync)
            for rt in runtimes:
                speed[(rt, p)] = dict(gflops=gflops, latency_ms=lat[rt], throughput=tp_batch / tput[rt] * 1e3,
                                      peak_mem_mib=mem[rt],
                                      device=str(dev) if rt.startswith('torch') else 'cpu (onnxruntime)')
    tables = {}
    for rt in runtimes:
        if rt in ('torch', 'torch-compile'):  # compiling does not change the function: torch's metric
            if 'torch' not in tables:
                _say(name, f'metric of torch on the test set at patches {cfg.test_cfg["patch_sizes"]}')
                runner.test()
                tables['torch'] = list(runner.test_loop.last_table)
            tables[rt] = tables['torch']
        elif rt.startswith('torch-'):
            _say(name, f'metric of {rt} on the test set at patches {cfg.test_cfg["patch_sizes"]}')
            with torch.autocast(dev.type, dtype=AUTOCAST_DTYPES[rt[len('torch-'):]]):
                runner.test()
            tables[rt] = list(runner.test_loop.last_table)
    rows = []
    for rt in runtimes:
        for p in cfg.test_cfg['patch_sizes']:
            if rt in tables:
                r = next(r for r in tables[rt] if int(r['patch']) == p)
            else:  # the exported graph inside the task model: same data, same metric code
                _say(name, f'metric of {rt} on the test set at patch {p}')
                metrics = evaluate_onnx(cfg, checkpoint, onnx_paths[(rt, p)], patch_sizes=[p], data_root=data_root)
                r = {'patch': str(p), 'tokens': (img[0] // p) * (img[1] // p),
                     **{k: v for k, v in metrics.items() if not k.startswith(f'p{p}/')}}
            metric = main_metric(r)
            rows.append(dict(task=name, runtime=rt, patch=int(r['patch']), tokens=r['tokens'], metric=metric,
                             value=float(r[metric]), params_m=params, **speed[(rt, int(r['patch']))]))
    shut_down_workers(runner, ('test',))
    return rows


def budget_pick(rows, budget: float) -> str:
    """Per task, the (patch, runtime) with the best metric whose batch-1 latency meets ``budget`` ms."""
    text = f'Best (patch, runtime) per task within {budget} ms (batch 1, this device):\n'
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
    return text


COLUMNS = ['task', 'runtime', 'patch', 'tokens', 'metric', 'value', 'gflops', 'params_m', 'latency_ms',
           'throughput', 'peak_mem_mib', 'device']
FORMATS = {'value': '{:.2f}', 'gflops': '{:.3f}', 'params_m': '{:.2f}', 'latency_ms': '{:.2f}',
           'throughput': '{:.1f}', 'peak_mem_mib': '{:.1f}'}


def plot_speed_accuracy(rows, path: str, budget=None) -> str:
    """One panel per task: the metric against batch-1 latency, a point per (patch, runtime) labelled by its
    patch (a marker per runtime), and the Pareto front (no point more accurate and faster) drawn through
    the points sorted by latency, so noisy latencies do not zig-zag a line joining patches in order.

    Args:
        rows (list[dict]): benchmark rows (``task``, ``runtime``, ``patch``, ``latency_ms``, ``value``, ...).
        path (str): the PNG to write.
        budget (float, optional): a latency budget drawn as a vertical line.

    Returns:
        str: ``path``.
    """
    from ..reporting import pareto_front, save_figure
    tasks = list(dict.fromkeys(r['task'] for r in rows))
    runtimes = list(dict.fromkeys(r['runtime'] for r in rows))
    ncols = min(3, len(tasks))
    nrows = -(-len(tasks) // ncols)

    def draw(fig, axes):
        for i, ax in enumerate(axes.flat):
            if i >= len(tasks):
                ax.axis('off')
                continue
            trows = [r for r in rows if r['task'] == tasks[i]]
            for k, rt in enumerate(runtimes):
                rs = [r for r in trows if r['runtime'] == rt]
                ax.plot([r['latency_ms'] for r in rs], [r['value'] for r in rs], 'os^Dv'[k % 5], color=f'C{k}',
                        ms=6, ls='none', label=rt)
                for r in rs:
                    ax.annotate(f"p{r['patch']}", (r['latency_ms'], r['value']), textcoords='offset points',
                                xytext=(5, 4 if k % 2 == 0 else -11), fontsize=8, color=f'C{k}')
            front = pareto_front(trows, cost='latency_ms', value='value')
            ax.plot([r['latency_ms'] for r in front], [r['value'] for r in front], '-', color='0.3', lw=1.2,
                    marker='o', ms=12, mfc='none', zorder=0, label='Pareto front (circled)')
            if budget is not None:
                ax.axvline(budget, color='red', ls=':', lw=1, label=f'budget {budget:g} ms')
            ax.set_xlabel(f"latency, batch 1 (ms, {trows[0]['device']})")
            ax.set_ylabel(trows[0]['metric'])
            ax.set_title(tasks[i])
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    return save_figure(draw, path, nrows=nrows, ncols=ncols, size=(4.2, 3.4))


def write_outputs(rows, out, budget=None, note: str = ''):
    """OUT.md (table + budget pick + ``note``), OUT.csv, OUT.png (:func:`plot_speed_accuracy`); prints the
    Markdown once."""
    from ..reporting import write_table
    after = '\n\n'.join(t for t in (budget_pick(rows, budget) if budget is not None else '', note) if t)
    text = write_table(out, rows, COLUMNS, FORMATS, text_after=after)
    print(text)
    plot_speed_accuracy(rows, out + '.png', budget)
    print(f'wrote {out}.md, {out}.csv, {out}.png')


def run(models, patches=None, runs=10, throughput_batch=8, budget_ms=None, out='work_dirs/benchmark',
        data_root=None, runtimes=None, exporter='dynamo', preset=None):
    """Measure every ``(name, config, checkpoint)`` (each in a fresh process) and write the outputs. A busy
    machine (:func:`~flexitransfer.benchmark.timing.busy_warning`, checked before the first measurement) is
    reported on the terminal and in OUT.md, next to the budget picks it may change."""
    import torch

    from .timing import busy_warning, load_average
    busy = busy_warning(torch.get_num_threads())  # first: training missing tiny checkpoints loads the CPU itself
    print(f'[benchmark] load average at start {load_average()} (1/5/15 min)' + (f'\n{busy}' if busy else ''),
          flush=True)
    if runtimes:  # fail before any work: e.g. bf16 on a CPU without bf16 units
        resolve_runtimes(runtimes, torch.device('cuda' if torch.cuda.is_available() else 'cpu'))
    models = list(models)
    if preset == 'tiny':
        for name, config, ckpt, kind in TINY:
            if not osp.exists(ckpt):
                from ..datasets.toy import ensure_toy
                ensure_toy(kind)
                with tempfile.TemporaryDirectory(prefix='ft_bench_') as tmp:  # what its dataloader workers leave
                    subprocess.run([sys.executable, 'tools/train.py', config], check=True,
                                   env=dict(os.environ, TMPDIR=tmp))
            models.append((name, config, ckpt))
    if not models:
        raise SystemExit('give --model NAME CONFIG CKPT (repeatable) or --preset tiny')
    rows = []
    missing = [ckpt for _, _, ckpt in models if not osp.isfile(ckpt)]
    if missing:  # before the first model's minutes of work
        raise SystemExit(f'checkpoint not found: {missing[0]}')
    for i, (name, config, ckpt) in enumerate(models):
        # the child's TMPDIR, removed afterwards: its work dir, ONNX files, dataloader workers' and runtimes' files
        with tempfile.TemporaryDirectory(prefix='ft_bench_') as tmp:
            args = dict(name=name, config=config, checkpoint=ckpt, patches=patches, runs=runs,
                        tp_batch=throughput_batch, data_root=data_root, runtimes=runtimes, exporter=exporter)
            print(f'[benchmark] {name} (model {i + 1}/{len(models)}): {config} @ {ckpt}', flush=True)
            result = osp.join(tmp, 'rows.json')
            subprocess.run([sys.executable, '-m', 'flexitransfer.benchmark.tasks', json.dumps(args), result],
                           check=True, env=dict(os.environ, TMPDIR=tmp))
            with open(result) as f:
                rows += json.load(f)
    write_outputs(rows, out, budget_ms, note=busy or '')
    return rows


if __name__ == '__main__':  # one model, in its own process (see run)
    import flexitransfer  # noqa: F401  (registers the modules)
    kwargs, dst = json.loads(sys.argv[1]), sys.argv[2]
    rows = measure_one(**kwargs)
    with open(dst, 'w') as f:
        json.dump(rows, f)
