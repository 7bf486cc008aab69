"""Anytime serving (flexitransfer.serve): the patch controller on a simulated clock, the latency model,
the patch ladder against inference_model, images as users have them, and one bounded Ray Serve run.

The controller tests replay seeded Poisson traces against service times shaped like a FlexiViT's
(p = 8 about 4x the cost of p = 16, 12x that of p = 30): no wall clock decides anything.
"""
import os.path as osp

import numpy as np
import pytest
import torch
from conftest import ROOT, randomize

COST = {8: (0.010, 0.010), 16: (0.004, 0.0025), 30: (0.002, 0.0008)}  # seconds: fixed + per image
SLO = 0.1
CLS = 'configs/cls/tiny_cls_flexi.py'
SEG = 'configs/seg/tiny_seg_flexi.py'


def service(patch, batch):
    fixed, per_image = COST[patch]
    return fixed + per_image * batch


def latency():
    from flexitransfer.serve import LatencyModel
    return LatencyModel.from_table({p: {1: service(p, 1), 8: service(p, 8)} for p in COST})


CAP8 = 8 / service(8, 8)  # requests per second a fixed p = 8 server sustains (batches of 8)


def _run(policy, arrivals, **kw):
    from flexitransfer.serve import simulate
    return simulate(policy, arrivals, service, SLO, **kw)


def _traces():
    from flexitransfer.serve import poisson_arrivals
    steady = poisson_arrivals(2 * CAP8, 5.0, seed=1)
    burst = np.concatenate([poisson_arrivals(0.5 * CAP8, 3.0, seed=2),
                            poisson_arrivals(6 * CAP8, 2.0, seed=3, start=3.0),
                            poisson_arrivals(0.5 * CAP8, 4.0, seed=4, start=5.0)])
    return {'steady 2x': steady, 'burst 6x': burst}


# ----------------------------------------------------------------------------- the controller
@pytest.mark.parametrize('name', ['steady 2x', 'burst 6x'])
def test_controller_meets_the_coarse_deadlines_that_fixed_p8_misses(name):
    from flexitransfer.serve import FixedPatch, PatchController
    arrivals = _traces()[name]
    coarse = _run(FixedPatch(30, latency()), arrivals)
    fine = _run(FixedPatch(8, latency()), arrivals)
    ada = _run(PatchController(latency(), slo_s=SLO), arrivals)
    assert coarse.share_met() == 1.0  # the trace is one the coarse patch serves in time
    assert fine.share_met() < 0.5, fine.share_met()
    lost = coarse.met() & ~ada.met()
    assert not lost.any(), f'{lost.sum()} deadlines met at p = 30 missed, first at {arrivals[lost][:3]}'
    assert ada.patch_mix().get(30, 0) < 0.7, ada.patch_mix()  # and not by serving everything coarse


def test_controller_uses_the_finest_patch_whenever_the_queue_allows():
    from flexitransfer.serve import FixedPatch, PatchController, poisson_arrivals
    half = poisson_arrivals(0.5 * CAP8, 5.0, seed=6)
    assert _run(FixedPatch(8, latency()), half).share_met() == 1.0  # p = 8 alone serves this trace in time
    low = _run(PatchController(latency(), slo_s=SLO), half)
    assert low.patch_mix() == {8: 1.0} and low.share_met() == 1.0
    burst = _traces()['burst 6x']
    res = _run(PatchController(latency(), slo_s=SLO), burst)
    before = [p for t, p, _ in res.batches if t < 3.0]
    during = [p for t, p, _ in res.batches if 3.5 < t < 5.0]
    after = [p for t, p, _ in res.batches if t > 6.5]  # the burst has left the 1 s rate window
    assert set(before) == {8} and set(after) == {8}, (set(before), set(after))
    assert 8 not in during


def test_a_spent_burst_leaves_no_coarse_patch_behind():
    """The load test's order: a capacity burst, a calm spell, then light load. The burst drove the controller
    to the coarsest patch; the calm spell (idle for longer than up_after_s) means the load has passed, so
    light load is served at p = 8 from its first request (it climbed a rung per up_after_s of load before)."""
    from flexitransfer.serve import PatchController, poisson_arrivals
    burst = np.zeros(300)
    light = poisson_arrivals(0.5 * CAP8, 4.0, seed=11, start=2.0)
    res = _run(PatchController(latency(), slo_s=SLO), np.concatenate([burst, light]))
    assert 30 in res.patch[:300]
    assert {res.patch[i] for i in range(300, len(res.patch))} == {8}, res.patch_mix()
    assert res.met()[300:].all()


def test_the_controller_climbs_to_the_most_accurate_rung_that_stayed_feasible():
    """Down to p = 30 under a flood; then light load keeps the server busy (no idle spell): once p = 8 and
    p = 16 have both been feasible with margin for up_after_s, the controller goes straight to p = 8 (it
    climbed through p = 16 first, another up_after_s, before)."""
    from flexitransfer.serve import PatchController
    ctl = PatchController(latency(), slo_s=SLO, rate_window_s=0.05)
    flood = [ctl.request(0.0) for _ in range(40)]
    assert ctl.decide(flood, now=0.0).patch == 30
    used = []
    for t in np.arange(0.15, 0.8, 0.03):  # one request at a time, served before the next arrives
        used.append(ctl.decide([ctl.request(t)], now=t).patch)
    assert used[0] == 30 and 16 not in used and used[-1] == 8, used


# service times shaped like the load test's server (tiny Segmenter at 240 px on one CPU thread, over HTTP):
# p = 8 about 23 requests/s in batches of 8, p = 12 about 45, p = 15 about 62, p = 24 about 111; and the mIoU
# (%) of each patch on the toy validation images at that size (flexitransfer.serve.PatchLadder)
SERVER = {8: (0.013, 0.0419), 12: (0.011, 0.0208), 15: (0.010, 0.01465), 24: (0.008, 0.0080)}
SERVER_MIOU = {8: 96.6, 12: 94.9, 15: 93.3, 24: 87.2}


def test_load_test_goals_hold_on_the_simulated_clock():
    """The load test's sequence (a capacity burst, a calm spell, then 0.5x, 1x, 2x, 4x of the p = 8 capacity,
    back to back, 10 % noise on every service time) with the 8 / 12 / 15 / 24 ladder: at 0.5x every request at
    p = 8; at 2x >= 99 % within the deadline and the served mIoU within 5 points of p = 8's."""
    from flexitransfer.serve import LatencyModel, PatchController, poisson_arrivals, simulate
    slo = 0.36  # 400 ms, 90 % of it planned for

    def service(patch, batch):
        return SERVER[patch][0] + SERVER[patch][1] * batch
    rng = np.random.default_rng(0)
    noisy = lambda p, b: service(p, b) * float(np.exp(rng.normal(0, 0.1)))
    cap8 = 8 / service(8, 8)
    parts, spans, t = [np.full(200, 0.0)], {}, 200 / (8 / service(24, 8)) + 5.8  # burst, drained, settled
    for k, load in enumerate((0.5, 1, 2, 4)):
        a = poisson_arrivals(load * cap8, 8.0, seed=20 + k, start=t)[:300]
        parts.append(a)
        spans[load] = (len(np.concatenate(parts)) - len(a), len(np.concatenate(parts)))
        t = a[-1] + 0.05
    lm = LatencyModel.from_table({p: {1: service(p, 1), 8: service(p, 8)} for p in SERVER})
    res = simulate(PatchController(lm, slo_s=slo), np.concatenate(parts), noisy, slo, latency=lm)
    met = res.met()

    def served(load):
        lo, hi = spans[load]
        return res.patch[lo:hi], met[lo:hi].mean()
    patches, share = served(0.5)
    assert set(patches) == {8} and share == 1.0
    patches, share = served(2)
    miou = np.mean([SERVER_MIOU[p] for p in patches])
    assert share >= 0.99 and miou >= SERVER_MIOU[8] - 5, (share, miou, {p: patches.count(p) for p in SERVER})


def test_hysteresis_no_flapping_on_a_steady_load():
    from flexitransfer.serve import PatchController, poisson_arrivals
    steady = poisson_arrivals(3 * CAP8, 10.0, seed=6)  # p = 16 sustains it, p = 8 does not
    calm = _run(PatchController(latency(), slo_s=SLO), steady)
    jumpy = _run(PatchController(latency(), slo_s=SLO, hysteresis=False), steady)
    assert calm.share_met() == 1.0 and jumpy.share_met() == 1.0
    assert jumpy.switches() > 50, jumpy.switches()  # the trace does provoke flapping
    assert calm.switches() <= 5, calm.switches()
    assert calm.patch_mix().get(16, 0) > 0.95, calm.patch_mix()


def test_pinned_patch_and_own_deadline_are_honoured():
    from flexitransfer.serve import PatchController, poisson_arrivals
    low = poisson_arrivals(0.3 * CAP8, 4.0, seed=7)
    pins = [30 if i % 5 == 0 else None for i in range(len(low))]
    res = _run(PatchController(latency(), slo_s=SLO), low, pins=pins)
    assert {res.patch[i] for i in range(len(low)) if pins[i] == 30} == {30}
    assert {res.patch[i] for i in range(len(low)) if pins[i] is None} == {8}
    heavy = poisson_arrivals(3 * CAP8, 4.0, seed=8)
    pins = [8 if i % 10 == 0 else None for i in range(len(heavy))]
    res = _run(PatchController(latency(), slo_s=SLO), heavy, pins=pins)
    assert {res.patch[i] for i in range(len(heavy)) if pins[i] == 8} == {8}
    assert np.mean([res.patch[i] == 8 for i in range(len(heavy)) if pins[i] is None]) < 0.1
    # a request's own deadline: too tight for p = 8 (20 ms for one image) on an idle server
    ctl = PatchController(latency(), slo_s=SLO)
    assert ctl.decide([ctl.request(0.0)], now=0.0).patch == 8
    tight = PatchController(latency(), slo_s=SLO).decide([ctl.request(0.0, deadline=0.015)], now=0.0)
    assert tight.patch == 16, tight
    # in a trace: every third request brings a 15 ms deadline; all are met, as fixed p = 8 cannot
    deadlines = [a + 0.015 if i % 3 == 0 else None for i, a in enumerate(low)]
    res = _run(PatchController(latency(), slo_s=SLO), low, deadlines=deadlines)
    assert res.share_met() == 1.0
    from flexitransfer.serve import FixedPatch
    assert _run(FixedPatch(8, latency()), low, deadlines=deadlines).share_met() < 0.8


def test_controller_refuses_what_it_cannot_serve():
    from flexitransfer.serve import PatchController, Request
    ctl = PatchController(latency(), slo_s=SLO)
    with pytest.raises(ValueError, match='patch 12 is not served'):
        ctl.request(0.0, patch=12)
    with pytest.raises(ValueError, match='mixes the pinned patches'):
        ctl.decide([], 0.0, batch=[Request(0.0, 0.1, 8), Request(0.0, 0.1, None)])
    with pytest.raises(ValueError, match='no service time measured at patch'):
        PatchController(latency(), patches=[8, 12])
    assert ctl.decide([], 0.0) is None


def test_latency_model_interpolates_and_follows_observations():
    from flexitransfer.serve import LatencyModel, PatchController, poisson_arrivals
    lm = LatencyModel.from_table({8: {1: 0.02, 5: 0.06}}, alpha=0.5)
    assert lm.predict(8, 3) == pytest.approx(0.04)       # between measured sizes: linear
    assert lm.predict(8, 7) == pytest.approx(0.08)       # beyond: the last slope
    assert lm.predict(8, 1) == 0.02
    lm.observe(8, 1, 0.04)
    assert lm.predict(8, 1) == pytest.approx(0.03)       # moving average
    with pytest.raises(KeyError, match='patch 16'):
        lm.predict(16, 1)
    # the server's times are 1.6x the start-up measurement: kept current, the controller adapts
    slow = poisson_arrivals(3 * CAP8, 5.0, seed=5)
    from flexitransfer.serve import simulate
    stale = simulate(PatchController(latency(), slo_s=SLO), slow, lambda p, b: 1.6 * service(p, b), SLO)
    lm = latency()
    kept = simulate(PatchController(lm, slo_s=SLO), slow, lambda p, b: 1.6 * service(p, b), SLO, latency=lm)
    assert lm.predict(16, 8) == pytest.approx(1.6 * service(16, 8), rel=0.01)
    assert kept.share_met() > 0.99 and (~kept.met()).sum() * 5 < (~stale.met()).sum(), \
        (kept.share_met(), stale.share_met())


# ----------------------------------------------------------------------------- the ladder
def _tiny(config, patch=None):
    from flexitransfer.apis import init_model
    model = randomize(init_model(osp.join(ROOT, config), patch_size=patch), seed=1)
    return model.eval()


def test_ladder_predicts_what_inference_model_predicts():
    from flexitransfer.apis import inference_model
    from flexitransfer.serve import LatencyModel, PatchLadder
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 255, (64, 80, 3), dtype=np.uint8) for _ in range(3)]
    cls = _tiny(CLS)
    ladder = PatchLadder(cls, [30, 12])
    assert ladder.patches == [12, 30]
    for p in ladder.patches:
        want = inference_model(cls, imgs, patch_size=p)
        got = ladder.predict(imgs, p)
        assert [g['label'] for g in got] == [int(w.pred_score.argmax()) for w in want]
        np.testing.assert_allclose([g['score'] for g in got], [float(w.pred_score.max()) for w in want], atol=1e-5)
    seg = _tiny(SEG)
    ladder = PatchLadder(seg, [8, 24])
    img = rng.integers(0, 255, (120, 120, 3), dtype=np.uint8)
    got = ladder.predict([img], 24)[0]['label_map']
    want = inference_model(seg, img, patch_size=24).pred_sem_seg.data[0].numpy()
    assert got.shape == (120, 120) and (got == want).mean() > 0.999
    with pytest.raises(ValueError, match='not on the ladder'):
        ladder.predict([img], 12)
    ticks = iter(np.arange(0, 100, 0.5))  # a fake clock: every run "takes" 0.5 s
    lm = ladder.measure(LatencyModel(), batch_sizes=(1, 2), repeats=1, clock=lambda: next(ticks))
    assert lm.table() == {8: {1: 0.5, 2: 0.5}, 24: {1: 0.5, 2: 0.5}}


def test_onnxruntime_ladder_predicts_what_the_torch_ladder_predicts(tmp_path):
    """runtime='onnxruntime': one exported graph per patch in an ONNX Runtime session inside the task model;
    same predictions as the torch ladder (classification scores, segmentation label maps)."""
    pytest.importorskip('onnxruntime')
    from flexitransfer.serve import PatchLadder
    rng = np.random.default_rng(3)
    imgs = [rng.integers(0, 255, (64, 80, 3), dtype=np.uint8) for _ in range(3)]
    cls = _tiny(CLS)
    torch_ladder, ort_ladder = PatchLadder(cls, [12, 30], warm=False), PatchLadder(cls, [12, 30], runtime='onnxruntime')
    for p in (12, 30):
        assert type(ort_ladder.models[p].onnx_function).__name__ == 'OnnxFunction'
        want, got = torch_ladder.predict(imgs, p), ort_ladder.predict(imgs, p)
        assert [g['label'] for g in got] == [w['label'] for w in want]
        np.testing.assert_allclose([g['score'] for g in got], [w['score'] for w in want], atol=1e-4)
    seg = _tiny(SEG)
    keep = str(tmp_path / 'graphs')
    ort_seg = PatchLadder(seg, [24], runtime='onnxruntime', onnx_dir=keep, threads=1)
    assert osp.isfile(osp.join(keep, 'p24.onnx'))  # a folder given: the graphs are kept there
    img = rng.integers(0, 255, (120, 120, 3), dtype=np.uint8)
    got = ort_seg.predict([img, img[::-1]], 24)
    want = PatchLadder(seg, [24], warm=False).predict([img, img[::-1]], 24)
    for g, w in zip(got, want):
        assert g['label_map'].shape == (120, 120) and (g['label_map'] == w['label_map']).mean() > 0.999
    with pytest.raises(ValueError, match='runtime must be one of'):
        PatchLadder(cls, [12], runtime='tensorrt')


# ----------------------------------------------------------------------------- images as users have them
def test_inference_model_takes_gray_alpha_16bit_and_palette_images(tmp_path):
    """A 4-channel array (BGRA) died with 'The size of tensor a (4) must match ...'. Arrays are read as
    the file loader reads files (alpha dropped, gray repeated, 16-bit scaled to 8): same predictions."""
    import cv2
    from PIL import Image

    from flexitransfer.apis import inference_model
    model = _tiny(CLS, patch=12)
    rng = np.random.default_rng(1)
    bgr = rng.integers(0, 255, (60, 60, 3), dtype=np.uint8)
    gray = bgr[..., 1].copy()
    want = inference_model(model, bgr).pred_score
    bgra = np.concatenate([bgr, rng.integers(0, 255, (60, 60, 1), dtype=np.uint8)], axis=2)
    torch.testing.assert_close(inference_model(model, bgra).pred_score, want)
    wide = bgr.astype(np.uint16) * 256 + 100  # 16 bit; the top byte is the 8-bit image
    torch.testing.assert_close(inference_model(model, wide).pred_score, want)
    want_gray = inference_model(model, np.repeat(gray[..., None], 3, axis=2)).pred_score
    torch.testing.assert_close(inference_model(model, gray).pred_score, want_gray)
    torch.testing.assert_close(inference_model(model, gray[..., None]).pred_score, want_gray)
    files = {'rgba.png': bgra, 'gray.png': gray, 'wide.png': wide}
    for name, arr in files.items():
        cv2.imwrite(str(tmp_path / name), arr)
        torch.testing.assert_close(inference_model(model, str(tmp_path / name)).pred_score,
                                   inference_model(model, arr).pred_score, msg=name)
    pal = Image.fromarray(gray).convert('P')
    pal.save(tmp_path / 'palette.png')
    rgb = np.asarray(pal.convert('RGB'))[..., ::-1]
    torch.testing.assert_close(inference_model(model, str(tmp_path / 'palette.png')).pred_score,
                               inference_model(model, np.ascontiguousarray(rgb)).pred_score)
    with pytest.raises(ValueError, match='2 channels'):
        inference_model(model, bgr[..., :2])


# ----------------------------------------------------------------------------- the load test's report
def test_load_test_goals_and_the_fault_row():
    """goals() reads the fixed and adaptive rows by exact mode (a fault row, 'adaptive x2, ...' at 1x, is not
    the adaptive server's); a kill outside the run is refused before any server starts."""
    from flexitransfer.serve.loadtest import goals, run_loadtest

    def row(mode, load, within, mix, acc, sat):
        return dict(mode=mode, load=load, within_slo=within, patch_mix=mix, accuracy=acc, saturation=sat,
                    failed=0, sent=100, restart_s=None)
    rows = [row('fixed p8', 0.5, 100, '8:100%', 96.6, 23), row('fixed p8', 2, 4, '8:100%', 96.7, 23),
            row('fixed p24', 0.5, 100, '24:100%', 87.2, 111), row('fixed p24', 2, 100, '24:100%', 87.2, 111),
            row('adaptive', 0.5, 100, '8:100%', 96.6, 107), row('adaptive', 2, 99.7, '12:55% 15:45%', 94.2, 107),
            {**row('adaptive x2, 1 killed at 3 s', 2, 80, '24:100%', 87.2, None), 'restart_s': 12.5}]
    held = goals(rows)
    assert [ok for _, ok in held] == [True, True, True, True], held
    rows[5] = row('adaptive', 2, 99.7, '12:10% 24:90%', 88.1, 107)
    assert [ok for _, ok in goals(rows)] == [True, False, True, True]
    with pytest.raises(ValueError, match='kill the replica within the run'):
        run_loadtest(CLS, 'none.pth', [12, 30], 100, max_seconds=5, kill_replica_at=6)


# ----------------------------------------------------------------------------- Ray Serve, bounded
def test_ray_serve_predicts_refuses_bad_requests_and_keeps_serving(tmp_path):
    """Start a one-replica server on a tiny checkpoint, one prediction equal to inference_model's at the
    patch reported, bad requests answered 4xx with a JSON error, the next good one served; the replica
    killed, Ray Serve runs a new one that serves; a stop while requests are in flight answers them all."""
    ray = pytest.importorskip('ray', reason='ray[serve] is not installed (requirements.txt pins it)')
    requests = pytest.importorskip('requests')
    import socket
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    import cv2
    from PIL import Image

    from flexitransfer.apis import inference_model
    from flexitransfer.serve.ray_app import (
        build_app,
        from_json,
        kill_replica,
        replica_names,
        start_server,
        stop_server,
        wait_for_replicas,
    )
    model = _tiny(CLS)
    ckpt = str(tmp_path / 'tiny_cls.pth')
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, ckpt)
    rng = np.random.default_rng(2)
    img = rng.integers(0, 255, (70, 50, 3), dtype=np.uint8)
    png = cv2.imencode('.png', img)[1].tobytes()
    huge = io_bytes(Image.new('L', (8000, 6250)))  # 50 megapixels, a small file
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        url = start_server(build_app(osp.join(ROOT, CLS), ckpt, [12, 30], slo_ms=5000, threads=1), port=port)

        def post(data, kind='image/png', **params):
            return requests.post(url, data=data, headers={'Content-Type': kind}, params=params, timeout=60)
        r = post(png)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body['patch'] in (12, 30) and body['queue_ms'] >= 0 and body['service_ms'] > 0
        want = inference_model(model, img, patch_size=body['patch']).pred_score
        assert body['prediction']['label'] == int(want.argmax())
        assert abs(body['prediction']['score'] - float(want.max())) < 1e-5
        assert post(png, patch=30).json()['patch'] == 30
        for data, kind, status, words in [(b'not an image at all', 'image/png', 400, 'not an image'),
                                          (b'', 'image/png', 400, 'empty body'),
                                          (huge, 'image/png', 413, 'megapixels'),
                                          (png, 'text/plain', 415, 'Content-Type'),
                                          (png, 'image/png', 400, 'patch 16 is not served')]:
            r = post(data, kind, **({'patch': 16} if 'patch 16' in words else {}))
            assert r.status_code == status and words in r.json()['error'], (status, r.status_code, r.text)
        r = post(png)
        assert r.status_code == 200 and from_json(r.json()['prediction'])['label'] == int(want.argmax())
        # a crash: the replica's actor killed; Ray Serve replaces it and the server answers again
        killed = kill_replica()
        wait_for_replicas(1, after=killed, timeout_s=90)
        assert killed not in replica_names() and len(replica_names()) == 1
        assert post(png).json()['prediction']['label'] == int(want.argmax())
        # shutdown drains: requests the server holds when the stop begins are all answered (16 MP images
        # keep it busy for seconds; all are sent once the first answer is back)
        big = cv2.imencode('.png', np.broadcast_to(np.arange(4000, dtype=np.uint8)[None, :, None],
                                                   (4000, 4000, 3)).copy())[1].tobytes()
        with ThreadPoolExecutor(8) as pool:
            pending = [pool.submit(post, big) for _ in range(8)]
            wait(pending, return_when=FIRST_COMPLETED)
            held = sum(not f.done() for f in pending)
            stop_server()
            codes = [f.result().status_code for f in pending]
        assert held > 0 and codes == [200] * len(codes), (held, codes)
    finally:
        stop_server()
        ray.shutdown()


def io_bytes(image) -> bytes:
    import io
    buf = io.BytesIO()
    image.save(buf, format='PNG')
    return buf.getvalue()
