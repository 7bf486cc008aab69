"""Open-loop load on the Ray Serve server over loopback: fixed finest, fixed coarsest and adaptive side
by side, at multiples of the fixed-finest server's capacity, on the config's validation images; and a
fault run, one replica of the adaptive server killed during the load.

Requests leave at Poisson times whatever the answers do (open loop), bounded in number and seconds;
each answer's latency is measured at the client. The capacity of a server is its throughput when a
burst of requests is sent at once (closed: all in flight). Accuracy is that of the answers served:
top-1 (classification) or mIoU (segmentation) against the dataset's labels. A request fails when it gets
no 200 answer within its timeout (an error status, a refused or dropped connection, a timeout).
"""
from __future__ import annotations

import asyncio
import threading
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .simulate import poisson_arrivals


def val_requests(config: str, data_root: Optional[str] = None, limit: int = 64,
                 upscale: int = 1) -> Tuple[List[bytes], list, str]:
    """The validation images as request bodies (PNG) and their labels.

    Args:
        config (str): the model's config (its ``test_dataloader`` dataset).
        data_root (str, optional): the dataset's root; default the config's.
        limit (int): the most images taken.
        upscale (int): each side multiplied (nearest for labels): a larger input makes the model, not
            HTTP, the cost of a request.

    Returns:
        tuple[list[bytes], list, str]: bodies, labels (int, or an HxW label map with 255 = ignore),
        and the task ('cls' or 'seg').
    """
    import cv2
    from mmengine.registry import DATASETS, init_default_scope

    from ..apis import load_config
    cfg = load_config(config)
    init_default_scope(cfg.get('default_scope', 'mmengine'))
    ds_cfg = cfg.test_dataloader.dataset
    if data_root:
        ds_cfg.data_root = data_root
    ds_cfg.pipeline = []
    ds = DATASETS.build(ds_cfg)
    bodies, labels, task = [], [], None
    for i in range(min(limit, len(ds))):
        # mmengine datasets (segmentation) have get_data_info, flexitransfer's classification datasets get_info
        info = ds.get_data_info(i) if hasattr(ds, 'get_data_info') else ds.get_info(i)
        img = info['img'] if 'img' in info else cv2.imread(info['img_path'], cv2.IMREAD_COLOR)
        img = cv2.resize(img, None, fx=upscale, fy=upscale, interpolation=cv2.INTER_LINEAR) if upscale > 1 else img
        bodies.append(cv2.imencode('.png', img)[1].tobytes())
        if 'seg_map_path' in info:
            task = 'seg'
            lab = cv2.imread(info['seg_map_path'], cv2.IMREAD_UNCHANGED).astype(np.int64)
            if info.get('reduce_zero_label'):
                lab = np.where(lab == 0, 255, lab - 1)
            labels.append(np.kron(lab, np.ones((upscale, upscale), np.int64)) if upscale > 1 else lab)
        else:
            task = 'cls'
            labels.append(int(np.asarray(info['gt_label']).reshape(-1)[0]))
    if not bodies:
        raise ValueError(f'no validation images found for {config} (data root {ds_cfg.data_root!r})')
    return bodies, labels, task


def accuracy(answers: Sequence[dict], labels: list, task: str, num_classes: int) -> float:
    """Top-1 % (cls) or mIoU % (seg) of the answered requests (``image`` indexes ``labels``)."""
    from .ray_app import from_json
    ok = [a for a in answers if a.get('status') == 200]
    if not ok:
        return float('nan')
    if task == 'cls':
        return 100.0 * float(np.mean([from_json(a['prediction'])['label'] == labels[a['image']] for a in ok]))
    conf = np.zeros((num_classes, num_classes), np.int64)
    for a in ok:
        pred, lab = from_json(a['prediction'])['label_map'].astype(np.int64), labels[a['image']]
        keep = lab != 255
        conf += np.bincount(lab[keep] * num_classes + pred[keep], minlength=num_classes ** 2).reshape(conf.shape)
    inter, union = np.diag(conf), conf.sum(0) + conf.sum(1) - np.diag(conf)
    return 100.0 * float(np.mean(inter[union > 0] / union[union > 0]))


async def _post(session, url: str, body: bytes, index: int, image: int, timeout_s: float) -> dict:
    import aiohttp
    start = time.perf_counter()
    try:
        async with session.post(url, data=body, headers={'Content-Type': 'image/png'},
                                timeout=aiohttp.ClientTimeout(total=timeout_s)) as r:
            payload = await r.json(content_type=None)
            status = r.status
    except Exception as e:  # a refused connection or a timeout counts as a failed request
        payload, status = {'error': f'{type(e).__name__}: {e}'}, 0
    return {'index': index, 'image': image, 'status': status, 'latency_ms': (time.perf_counter() - start) * 1000,
            **({k: payload[k] for k in ('patch', 'prediction', 'queue_ms', 'service_ms', 'error') if k in payload})}


async def _open_loop(url, bodies, times, timeout_s):
    import aiohttp
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        t0, tasks = time.perf_counter(), []
        for i, at in enumerate(times):
            delay = t0 + at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(_post(session, url, bodies[i % len(bodies)], i, i % len(bodies),
                                                   timeout_s)))
        answers = await asyncio.gather(*tasks)
        return answers, time.perf_counter() - t0


def open_loop(url: str, bodies: Sequence[bytes], rate: float, max_requests: int, max_seconds: float, seed: int = 0,
              timeout_s: float = 30.0) -> Tuple[List[dict], float]:
    """Send requests at Poisson times (rate per second) until ``max_requests`` or ``max_seconds``.

    Args:
        url (str): the server.
        bodies (Sequence[bytes]): request bodies, used in turn.
        rate (float): offered requests per second.
        max_requests (int): the most requests sent.
        max_seconds (float): the longest span of arrivals.
        seed (int): the arrival trace's seed.
        timeout_s (float): a request unanswered this long fails.

    Returns:
        tuple[list[dict], float]: per request (status, latency_ms, patch, prediction, queue_ms, service_ms,
        image) and the seconds from the first request to the last answer.
    """
    times = poisson_arrivals(rate, max_seconds, seed)[:max_requests]
    return asyncio.run(_open_loop(url, bodies, times, timeout_s))


def capacity(url: str, bodies: Sequence[bytes], n: int = 200, timeout_s: float = 60.0) -> float:
    """Answers per second with ``n`` requests sent at once (the server saturated)."""
    answers, took = asyncio.run(_open_loop(url, bodies, np.zeros(n), timeout_s))
    return sum(a['status'] == 200 for a in answers) / took


def summarize(answers: Sequence[dict], took: float, slo_ms: float) -> Dict[str, object]:
    """Throughput, p50 / p99 latency, the share within the SLO (failures count as late) and the patch mix."""
    ok = [a for a in answers if a['status'] == 200]
    lat = np.array([a['latency_ms'] for a in ok]) if ok else np.array([np.nan])
    patches = [a['patch'] for a in ok]
    mix = ' '.join(f'{p}:{100 * patches.count(p) / len(patches):.0f}%' for p in sorted(set(patches)))
    return {'sent': len(answers), 'failed': len(answers) - len(ok), 'throughput': len(ok) / took,
            'p50_ms': float(np.percentile(lat, 50)), 'p99_ms': float(np.percentile(lat, 99)),
            'within_slo': 100.0 * sum(a['latency_ms'] <= slo_ms for a in ok) / max(1, len(answers)),
            'patch_mix': mix}


def run_loadtest(config: str, checkpoint: str, patches: Sequence[int], slo_ms: float,
                 loads: Sequence[float] = (0.5, 1, 2, 4), max_requests: int = 600, max_seconds: float = 10.0,
                 data_root: Optional[str] = None, upscale: int = 1, max_batch: int = 8, threads: Optional[int] = 1,
                 port: int = 8000, seed: int = 0, saturate_n: int = 200, settle_s: Optional[float] = None,
                 runtime: str = 'torch', fixed: Optional[Sequence[int]] = None,
                 kill_replica_at: Optional[float] = None, kill_load: float = 1.0, kill_replicas: int = 2,
                 timeout_s: float = 30.0, echo=None) -> List[dict]:
    """Fixed servers (default: the finest and the coarsest patch) and the adaptive server, each under open-loop
    load at ``loads`` x the fixed finest server's capacity (measured first), on the same traces; optionally a
    fault run: the adaptive server with ``kill_replicas`` replicas, one of them killed ``kill_replica_at``
    seconds into a run at ``kill_load``.

    Args:
        config (str): the model's config.
        checkpoint (str): its weights.
        patches (Sequence[int]): the adaptive server's ladder.
        slo_ms (float): the deadline after arrival.
        loads (Sequence[float]): offered load, in units of the fixed finest server's capacity.
        max_requests (int): the most requests per run.
        max_seconds (float): the longest arrival span per run.
        data_root (str, optional): the validation data's root; default the config's.
        upscale (int): validation images enlarged this many times per side.
        max_batch (int): the largest batch.
        threads (int, optional): torch / ONNX Runtime threads in each replica.
        port (int): the HTTP port on 127.0.0.1.
        seed (int): the traces' seed (one trace per load, the same for every server).
        saturate_n (int): requests of the capacity bursts.
        settle_s (float, optional): pause after a burst, before the loads; default 12 x the SLO + 1 s.
        runtime (str): 'torch' or 'onnxruntime' (every server).
        fixed (Sequence[int], optional): the fixed servers' patches; default the ladder's finest and coarsest.
            The first one's capacity sets the loads.
        kill_replica_at (float, optional): seconds after the fault run's first request when one replica is
            killed (:func:`~flexitransfer.serve.ray_app.kill_replica`); None: no fault run.
        kill_load (float): the fault run's offered load (x the fixed finest capacity).
        kill_replicas (int): the fault run's replicas.
        timeout_s (float): a request unanswered this long fails.
        echo (Callable[[str], None], optional): progress lines.

    Returns:
        list[dict]: one row per server and load: mode, load, offered, the :func:`summarize` columns,
        accuracy, saturation (the server's capacity; None for the fault run), restart_s (fault run: seconds
        from the kill until Ray ran a replacement; None elsewhere).

    Raises:
        ValueError: a fault run whose kill would come after its last arrival.
    """
    if kill_replica_at is not None and not 0 <= kill_replica_at < max_seconds:
        raise ValueError(f'kill the replica within the run: 0 <= kill_replica_at ({kill_replica_at}) < max_seconds '
                         f'({max_seconds})')
    from ..apis import load_config
    from ..deploy.bake import infer_img_size
    from .ray_app import build_app, start_server, stop_server
    echo = echo or (lambda line: None)
    bodies, labels, task = val_requests(config, data_root, upscale=upscale)
    base = infer_img_size(load_config(config))
    img_size = (base[0] * upscale, base[1] * upscale) if base is not None and upscale > 1 else None
    num_classes = len((load_config(config).get('metainfo') or {}).get('classes') or []) or 1 + max(
        int(lab.max()) if task == 'seg' else lab for lab in labels)
    settle_s = 12 * slo_ms / 1000 + 1 if settle_s is None else settle_s
    fixed = [int(p) for p in fixed] if fixed else [min(patches), max(patches)]
    modes = [(f'fixed p{p}', [p]) for p in fixed] + [('adaptive', sorted(set(patches)))]

    def app(ladder, replicas=1):
        return build_app(config, checkpoint, ladder, slo_ms, replicas=replicas, max_batch=max_batch, threads=threads,
                         img_size=img_size, runtime=runtime)

    def run(url, load, k):
        answers, took = open_loop(url, bodies, load * cap, max_requests, max_seconds, seed=seed + k,
                                  timeout_s=timeout_s)
        return {'load': load, 'offered': load * cap, **summarize(answers, took, slo_ms),
                'accuracy': accuracy(answers, labels, task, num_classes)}

    rows, cap = [], None
    try:
        for mode, ladder in modes:
            url = start_server(app(ladder), port=port)
            open_loop(url, bodies, 50.0, 20, 1.0, seed=seed)  # warm the HTTP path
            if cap is None:
                cap = capacity(url, bodies, saturate_n)
            time.sleep(settle_s)  # the burst leaves the controller's rate window and hysteresis
            done = []
            for k, load in enumerate(loads):
                done.append({'mode': mode, **run(url, load, k)})
                echo(f'{mode} at {load:g}x: {done[-1]["within_slo"]:.1f} % within the SLO, {done[-1]["patch_mix"]}')
            sat = cap if not rows else capacity(url, bodies, saturate_n)
            rows += [{**r, 'saturation': sat, 'restart_s': None} for r in done]
        if kill_replica_at is not None:
            mode = f'adaptive x{kill_replicas}, 1 killed at {kill_replica_at:g} s'
            url = start_server(app(sorted(set(patches)), kill_replicas), port=port)
            open_loop(url, bodies, 50.0, 20, 1.0, seed=seed)
            time.sleep(settle_s)
            span = min(max_seconds, max_requests / (kill_load * cap))
            if kill_replica_at >= span:
                echo(f'warning: the fault run sends its requests within {span:.1f} s, before the kill at '
                     f'{kill_replica_at:g} s: raise --max-requests or lower --kill-replica-at')
            fault: Dict[str, object] = {}
            killer = threading.Thread(target=_kill_later, args=(kill_replica_at, kill_replicas, fault), daemon=True)
            killer.start()
            row = run(url, kill_load, len(loads))
            killer.join()
            if 'error' in fault:
                raise fault['error']
            rows.append({'mode': mode, **row, 'saturation': None, 'restart_s': fault['restart_s']})
            echo(f'{mode}: {row["failed"]} of {row["sent"]} requests failed; a replacement ran '
                 f'{fault["restart_s"]:.1f} s after the kill')
    finally:
        stop_server()
    return rows


def _kill_later(at_s: float, replicas: int, out: dict) -> None:
    """Kill one replica ``at_s`` seconds from now, then time how long Ray takes to run a replacement."""
    from .ray_app import kill_replica, wait_for_replicas
    try:
        time.sleep(at_s)
        out['killed'] = kill_replica()
        out['restart_s'] = wait_for_replicas(replicas, after=out['killed'])
    except Exception as e:  # re-raised in the caller's thread
        out['error'] = e


def goals(rows: Sequence[dict]) -> List[Tuple[str, bool]]:
    """The issue's goals, each with whether it held in ``rows`` (from :func:`run_loadtest`).

    Args:
        rows (Sequence[dict]): the load-test rows (loads 0.5 and 2 needed for the first two goals).

    Returns:
        list[tuple[str, bool]]: (goal, held).
    """
    def row(mode, load):
        return next((r for r in rows if r['mode'] == mode and r['load'] == load), None)
    fine = next(r['mode'] for r in rows if r['mode'].startswith('fixed'))
    coarse = [r['mode'] for r in rows if r['mode'].startswith('fixed')][-1]
    out = []
    ada2, fix2 = row('adaptive', 2), row(fine, 2)
    if ada2 and fix2:
        out.append((f'at 2x: adaptive >= 99 % within the SLO ({ada2["within_slo"]:.1f} %), {fine} < 50 % '
                    f'({fix2["within_slo"]:.1f} %)', ada2['within_slo'] >= 99 and fix2['within_slo'] < 50))
        out.append((f'at 2x: adaptive accuracy within 5 points of {fine} ({ada2["accuracy"]:.1f} vs '
                    f'{fix2["accuracy"]:.1f})', abs(ada2['accuracy'] - fix2['accuracy']) <= 5))
    ada05, fix05 = row('adaptive', 0.5), row(fine, 0.5)
    if ada05 and fix05:
        share = ada05['patch_mix'].split(' ')[0]
        out.append((f'at 0.5x: adaptive at the finest patch ({share}) with {fine}\'s accuracy '
                    f'({ada05["accuracy"]:.1f} vs {fix05["accuracy"]:.1f})',
                    share.startswith(fine[len('fixed p'):] + ':') and float(share.split(':')[1][:-1]) >= 95
                    and abs(ada05['accuracy'] - fix05['accuracy']) <= 1))
    ada_sat = max(r['saturation'] for r in rows if r['mode'] == 'adaptive')
    coarse_sat = max(r['saturation'] for r in rows if r['mode'] == coarse)
    out.append((f'saturation: adaptive {ada_sat:.0f}/s >= 0.9 x {coarse} {coarse_sat:.0f}/s',
                ada_sat >= 0.9 * coarse_sat))
    return out
