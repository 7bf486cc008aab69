"""The anytime server on Ray Serve: HTTP in (an image file's bytes), JSON out (the prediction, the patch
used, queue and service milliseconds). Ray's batcher (``@serve.batch``) forms the batches, the
controller picks each batch's patch from every request the replica holds, the latency model follows
the batches served. Replicas (``num_replicas``) and the cluster come from Ray.

    POST /            body: image bytes (Content-Type image/* or application/octet-stream)
                      query: patch=P (pin a patch of the ladder), deadline_ms=D (own deadline)
    GET  /-/ladder    the patches, the SLO and the current latency table
"""
from __future__ import annotations

import asyncio
import base64
import io
import time
import warnings
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from ray import serve

from .controller import PatchController, Request
from .ladder import PatchLadder

MAX_PIXELS = 4096 * 4096


class BadRequest(ValueError):
    """A request the server refuses: ``status`` (4xx) and a message naming the problem."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def decode_image(body: bytes, content_type: str, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """An uploaded image as the file loader reads a file (``cv2.IMREAD_COLOR``: BGR, 8 bits; gray, palette,
    16-bit and alpha images included), its size checked from the header before it is decoded.

    Args:
        body (bytes): the file's bytes.
        content_type (str): the request's Content-Type.
        max_pixels (int): the largest width x height accepted.

    Returns:
        np.ndarray: HxWx3 uint8 BGR.
    """
    import cv2
    from PIL import Image
    kind = content_type.split(';')[0].strip().lower()
    if not (kind.startswith('image/') or kind == 'application/octet-stream'):
        raise BadRequest(415, f'Content-Type {content_type or "(none)"!r}: send the image file\'s bytes as '
                              f'image/* or application/octet-stream')
    if not body:
        raise BadRequest(400, 'empty body: send the image file\'s bytes')
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(body)) as im:  # reads the header only
                width, height = im.size
    except Exception as e:  # PIL raises several types (UnidentifiedImageError, DecompressionBombError, ...)
        raise BadRequest(400, f'not an image file ({len(body)} bytes): {type(e).__name__}') from None
    if width * height > max_pixels:
        raise BadRequest(413, f'image of {width}x{height} = {width * height / 1e6:.1f} megapixels; this server '
                              f'takes at most {max_pixels / 1e6:.1f}')
    img = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise BadRequest(400, f'the {width}x{height} image could not be decoded (truncated or unsupported)')
    return img


def to_json(prediction: dict) -> dict:
    """A compact prediction with its arrays as PNG files (base64): JSON-ready.

    Args:
        prediction (dict): from :meth:`PatchLadder.predict`.

    Returns:
        dict: the same keys; ``label_map`` / ``panoptic_map`` become ``{'png': base64, 'shape': [H, W]}``.
    """
    import cv2
    out = {}
    for k, v in prediction.items():
        if isinstance(v, np.ndarray):
            dtype = np.uint8 if v.min() >= 0 and v.max() < 256 else np.uint16 if v.min() >= 0 and v.max() < 65536 \
                else None
            if dtype is None:
                raise ValueError(f'{k} holds values outside 0..65535: no PNG for it')
            ok, png = cv2.imencode('.png', v.astype(dtype))
            if not ok:
                raise ValueError(f'{k}: PNG encoding failed')
            out[k] = {'png': base64.b64encode(png.tobytes()).decode('ascii'), 'shape': list(v.shape)}
        else:
            out[k] = v
    return out


def from_json(prediction: dict) -> dict:
    """The inverse of :func:`to_json` (arrays decoded), for clients and tests."""
    import cv2
    out = dict(prediction)
    for k, v in prediction.items():
        if isinstance(v, dict) and 'png' in v:
            out[k] = cv2.imdecode(np.frombuffer(base64.b64decode(v['png']), np.uint8), cv2.IMREAD_UNCHANGED)
    return out


def _query(params, name: str, kind=float) -> Optional[float]:
    raw = params.get(name)
    if raw is None:
        return None
    try:
        return kind(raw)
    except ValueError:
        raise BadRequest(400, f'query parameter {name}={raw!r} is not a number') from None


@serve.deployment(max_ongoing_requests=2048)  # the queue lives in the replica, where the controller sees it
class AnytimeServer:
    """One replica: the ladder, its latency model (measured at start-up) and the controller.

    Args:
        config (str): the model's config.
        checkpoint (str, optional): its weights.
        patches (Sequence[int]): the ladder; one patch makes a fixed server.
        slo_ms (float): the default deadline after arrival.
        max_batch (int): the largest batch.
        headroom (float): the share of every deadline left to what the replica does not see (proxy, network,
            client): the controller plans to answer within ``1 - headroom`` of it.
        batch_wait_ms (float): how long Ray's batcher waits to fill a batch.
        max_pixels (int): the largest image accepted.
        device (str): where the model runs.
        threads (int, optional): torch threads in the replica.
        cfg_options (dict, optional): merged into the config.
        img_size (int | tuple[int, int], optional): the input size the patches are baked and timed at;
            default the config's (see :class:`~flexitransfer.serve.ladder.PatchLadder`).
        runtime (str): 'torch' or 'onnxruntime' (one exported graph per patch, made at start-up).
    """

    def __init__(self, config: str, checkpoint: Optional[str], patches: Sequence[int], slo_ms: float,
                 max_batch: int = 8, batch_wait_ms: float = 2.0, max_pixels: int = MAX_PIXELS, device: str = 'cpu',
                 threads: Optional[int] = None, cfg_options: Optional[dict] = None, img_size=None,
                 headroom: float = 0.1, runtime: str = 'torch'):
        import torch
        if threads:
            torch.set_num_threads(threads)
        self.ladder = PatchLadder.from_checkpoint(config, checkpoint, patches, device=device, img_size=img_size,
                                                  cfg_options=cfg_options, runtime=runtime, threads=threads)
        self.latency = self.ladder.measure(batch_sizes=sorted({1, max_batch}), repeats=3)
        if not 0 <= headroom < 1:
            raise ValueError(f'headroom must be in [0, 1), got {headroom}')
        self.budget = 1 - headroom
        self.slo_ms = slo_ms
        self.controller = PatchController(self.latency, slo_s=self.budget * slo_ms / 1000, max_batch=max_batch)
        self.max_pixels = max_pixels
        self.pending: Dict[int, Request] = {}
        self.serve_batch.set_max_batch_size(max_batch)
        self.serve_batch.set_batch_wait_timeout_s(batch_wait_ms / 1000)

    async def __call__(self, http):
        from starlette.responses import JSONResponse
        if http.method == 'GET' and http.url.path.rstrip('/').endswith('/-/ladder'):
            return JSONResponse({'patches': self.ladder.patches, 'slo_ms': self.slo_ms, 'runtime': self.ladder.runtime,
                                 'latency_s': {str(p): {str(b): t for b, t in row.items()}
                                               for p, row in self.latency.table().items()}})
        arrival = time.monotonic()
        try:
            if http.method != 'POST':
                raise BadRequest(405, f'{http.method}: POST the image bytes')
            pin = _query(http.query_params, 'patch', int)
            own = _query(http.query_params, 'deadline_ms')
            img = decode_image(await http.body(), http.headers.get('content-type', ''), self.max_pixels)
            try:
                req = self.controller.request(arrival, None if own is None else arrival + self.budget * own / 1000,
                                              pin)
            except ValueError as e:
                raise BadRequest(400, str(e)) from None
        except BadRequest as e:
            return JSONResponse({'error': str(e)}, status_code=e.status)
        self.pending[req.seq] = req
        try:
            out = await self.serve_batch((req, img))
        finally:
            self.pending.pop(req.seq, None)
        return JSONResponse(out, status_code=out.pop('status', 200))

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.002)
    async def serve_batch(self, items: List[Tuple[Request, np.ndarray]]) -> List[dict]:
        """Ray's batch, split by pinned patch, each part at the controller's patch."""
        out: List[Optional[dict]] = [None] * len(items)
        groups: Dict[Optional[int], List[int]] = {}
        for i, (req, _) in enumerate(items):
            groups.setdefault(req.patch, []).append(i)
        loop = asyncio.get_running_loop()
        for idx in sorted(groups.values(), key=lambda ix: min(items[i][0].deadline for i in ix)):
            start = time.monotonic()
            d = self.controller.decide(list(self.pending.values()), start, batch=[items[i][0] for i in idx])
            images = [items[i][1] for i in idx]
            try:
                preds = await loop.run_in_executor(None, self.ladder.predict, images, d.patch)
            except Exception as e:  # one bad image must not fail its batch: retry one by one
                preds = [await loop.run_in_executor(None, self._one, img, d.patch) for img in images]
                if all('error' in p for p in preds):
                    preds = [{'error': f'{type(e).__name__}: {e}', 'status': 422} for _ in images]
            heads = [{'status': pred.pop('status')} if 'status' in pred else {} for pred in preds]
            preds = [to_json(pred) for pred in preds]
            took = time.monotonic() - start
            self.latency.observe(d.patch, len(idx), took)
            for i, head, pred in zip(idx, heads, preds):
                out[i] = {**head, 'prediction': pred, 'patch': d.patch,
                          'queue_ms': (start - items[i][0].arrival) * 1000, 'service_ms': took * 1000}
                self.pending.pop(items[i][0].seq, None)
        return out

    def _one(self, img: np.ndarray, patch: int) -> dict:
        try:
            return self.ladder.predict([img], patch)[0]
        except Exception as e:
            return {'error': f'{type(e).__name__}: {e}', 'status': 422}


def build_app(config: str, checkpoint: Optional[str], patches: Sequence[int], slo_ms: float, replicas: int = 1,
              max_batch: int = 8, batch_wait_ms: float = 2.0, max_pixels: int = MAX_PIXELS, device: str = 'cpu',
              threads: Optional[int] = None, num_cpus: float = 1.0, cfg_options: Optional[dict] = None,
              img_size=None, headroom: float = 0.1, runtime: str = 'torch', health_check_period_s: float = 2.0):
    """The Ray Serve application (see :class:`AnytimeServer` for the arguments; ``replicas`` copies, each
    reserving ``num_cpus``; Ray's controller checks each replica every ``health_check_period_s`` and replaces
    the dead)."""
    from .ladder import RUNTIMES
    if runtime not in RUNTIMES:
        raise ValueError(f'runtime must be one of {RUNTIMES}, got {runtime!r}')
    return AnytimeServer.options(num_replicas=replicas, ray_actor_options={'num_cpus': num_cpus},
                                 health_check_period_s=health_check_period_s).bind(
        config, checkpoint, [int(p) for p in patches], slo_ms, max_batch, batch_wait_ms, max_pixels, device,
        threads, cfg_options, img_size, headroom, runtime)


def start_server(app, host: str = '127.0.0.1', port: int = 8000, name: str = 'flexitransfer') -> str:
    """Deploy ``app`` (from :func:`build_app`) on Ray Serve (Ray started here if it is not) and wait until
    it serves.

    Args:
        app: the application.
        host (str): the HTTP address to listen on.
        port (int): the HTTP port.
        name (str): the application's name.

    Returns:
        str: the URL to POST images to.
    """
    serve.start(http_options={'host': host, 'port': port})
    serve.run(app, name=name, route_prefix='/')
    return f'http://{host}:{port}/'


def stop_server() -> None:
    """Shut Ray Serve down: the replicas stop taking requests and finish the ones they hold (Ray's graceful
    shutdown, ``graceful_shutdown_timeout_s`` at most) before they exit."""
    serve.shutdown()


def replica_names(name: str = 'flexitransfer', deployment: str = 'AnytimeServer') -> List[str]:
    """The actor names of the deployment's live replicas (Ray Serve names them ``SERVE_REPLICA::app#deployment#id``
    in the ``serve`` namespace).

    Args:
        name (str): the application's name (:func:`start_server`).
        deployment (str): the deployment's name.

    Returns:
        list[str]: the names, sorted.
    """
    import ray
    prefix = f'SERVE_REPLICA::{name}#{deployment}#'
    return sorted(a['name'] for a in ray.util.list_named_actors(all_namespaces=True)
                  if a['namespace'] == 'serve' and a['name'].startswith(prefix))


def kill_replica(name: str = 'flexitransfer', deployment: str = 'AnytimeServer') -> str:
    """Kill one replica of the deployment as a crash would (``ray.kill``, the actor not restarted by Ray core):
    Ray Serve's controller notices the dead replica and starts a new one.

    Args:
        name (str): the application's name.
        deployment (str): the deployment's name.

    Returns:
        str: the killed replica's actor name.

    Raises:
        LookupError: the deployment has no live replica.
    """
    import ray
    names = replica_names(name, deployment)
    if not names:
        raise LookupError(f'no live replica of {name}/{deployment} to kill')
    ray.kill(ray.get_actor(names[0], namespace='serve'), no_restart=True)
    return names[0]


def running_replicas(name: str = 'flexitransfer', deployment: str = 'AnytimeServer') -> int:
    """How many replicas of the deployment Ray Serve reports RUNNING (``serve.status()``).

    Args:
        name (str): the application's name.
        deployment (str): the deployment's name.

    Returns:
        int: the count (0 when the application is not deployed).
    """
    app = serve.status().applications.get(name)
    dep = app.deployments.get(deployment) if app is not None else None
    return int(dep.replica_states.get('RUNNING', 0)) if dep is not None else 0


def wait_for_replicas(replicas: int, name: str = 'flexitransfer', deployment: str = 'AnytimeServer',
                      timeout_s: float = 120.0, poll_s: float = 0.2, after: Optional[str] = None) -> float:
    """Wait until ``replicas`` replica actors live and Ray Serve reports as many RUNNING (given ``after``, a
    killed replica, none of them is it: the killed actor leaves the named actors at once, while the status
    counts it RUNNING until the controller notices).

    Args:
        replicas (int): the replicas wanted.
        name (str): the application's name.
        deployment (str): the deployment's name.
        timeout_s (float): the longest wait.
        poll_s (float): seconds between looks.
        after (str, optional): a killed replica's actor name.

    Returns:
        float: the seconds waited.

    Raises:
        TimeoutError: not within ``timeout_s``.
    """
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        live = [n for n in replica_names(name, deployment) if n != after]
        if len(live) >= replicas and running_replicas(name, deployment) >= replicas:
            return time.monotonic() - start
        time.sleep(poll_s)
    raise TimeoutError(f'{name}/{deployment}: {running_replicas(name, deployment)} of {replicas} replicas running '
                       f'after {timeout_s:g} s')
