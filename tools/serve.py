"""Serve a FlexiViT task model over HTTP on Ray Serve, the patch chosen per batch to hold a latency SLO.

    python tools/serve.py CONFIG CKPT --slo-ms 200 --patches 8 16 30 [--runtime torch|onnxruntime] [--replicas N]
                          [--port 8000]
    curl -s -H 'Content-Type: image/jpeg' --data-binary @demo.jpg http://127.0.0.1:8000/
    curl -s -H 'Content-Type: image/jpeg' --data-binary @demo.jpg 'http://127.0.0.1:8000/?patch=30'

One checkpoint is baked at every patch of the ladder (flexitransfer.serve); with --runtime onnxruntime
each baked patch is exported to ONNX once and run in an ONNX Runtime session (the graphs are static in
the model's input size: --img-size, default the config's). At start-up each replica
times every patch at batch 1 and the largest batch, and while serving it times every batch. For each
batch Ray's batcher forms, the controller takes the most accurate patch with which the requests the
replica holds still meet their deadlines (arrival + --slo-ms, or their own ?deadline_ms=), stepping
to coarser patches at once under a burst and back to finer ones after a calm spell (hysteresis).
A request may pin a patch (?patch=P). One patch (--patches 8) makes a fixed server.

Answer (JSON): prediction (classification: label, score, class; segmentation: label_map as a PNG in
base64), patch, queue_ms, service_ms. Bad requests get a 4xx JSON error: non-image bytes or an empty
body (400), a too large image (413, --max-megapixels), a wrong Content-Type (415). GET /-/ladder shows
the patches and the latency table. Ctrl-C drains the requests in flight and stops.
"""
import _bootstrap  # noqa: F401

import argparse
import time


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('config')
    p.add_argument('checkpoint')
    p.add_argument('--slo-ms', type=float, required=True, help='default deadline after arrival (ms)')
    p.add_argument('--patches', type=int, nargs='+', default=[8, 16, 30], help='the ladder (default: 8 16 30)')
    p.add_argument('--runtime', choices=['torch', 'onnxruntime'], default='torch',
                   help='run the baked patches in PyTorch or, exported at start-up, in ONNX Runtime')
    p.add_argument('--replicas', type=int, default=1, help='copies of the model (Ray spreads them over the cluster)')
    p.add_argument('--max-batch', type=int, default=8)
    p.add_argument('--batch-wait-ms', type=float, default=2.0, help='how long the batcher waits to fill a batch')
    p.add_argument('--max-megapixels', type=float, default=16.8, help='larger images are refused (413)')
    p.add_argument('--threads', type=int, default=None, help='torch threads per replica (default: torch\'s)')
    p.add_argument('--cpus-per-replica', type=float, default=1.0, help='CPUs Ray reserves per replica')
    p.add_argument('--img-size', type=int, nargs='+', default=None,
                   help='H [W] the patches are baked and timed at (default: the config\'s input size)')
    p.add_argument('--device', default='cpu')
    p.add_argument('--host', default='127.0.0.1')
    p.add_argument('--port', type=int, default=8000)
    args = p.parse_args()
    if args.slo_ms <= 0 or args.replicas < 1 or args.max_batch < 1 or min(args.patches) < 1:
        p.error('--slo-ms, --replicas, --max-batch and the patches must be positive')

    try:
        from flexitransfer.serve.ray_app import build_app, start_server, stop_server
    except ImportError as e:
        raise SystemExit(f'Ray Serve is not installed ({e}): pip install -r requirements.txt') from None
    app = build_app(args.config, args.checkpoint, args.patches, args.slo_ms, replicas=args.replicas,
                    max_batch=args.max_batch, batch_wait_ms=args.batch_wait_ms,
                    max_pixels=int(args.max_megapixels * 1e6), device=args.device, threads=args.threads,
                    num_cpus=args.cpus_per_replica, img_size=tuple(args.img_size * 2)[:2] if args.img_size else None,
                    runtime=args.runtime)
    url = start_server(app, args.host, args.port)
    print(f'serving {args.config} at patches {sorted(args.patches)} ({args.runtime}), SLO {args.slo_ms:g} ms: '
          f'POST images to {url}  (Ctrl-C stops)', flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print('stopping: draining the requests in flight', flush=True)
    finally:
        stop_server()


if __name__ == '__main__':
    main()
