"""Load test of the anytime server (flexitransfer.serve): fixed finest, fixed coarsest and adaptive patch,
side by side, under open-loop Poisson load at multiples of the fixed finest server's capacity.

    python tools/loadtest.py CONFIG CKPT --slo-ms 100 --patches 8 12 15 24 [--loads 0.5 1 2 4]
                             [--fixed 8 24] [--runtime torch|onnxruntime] [--max-requests 600] [--max-seconds 10]
                             [--kill-replica-at SECONDS [--kill-load 1] [--kill-replicas 2]]
                             [--upscale 1] [--data-root DIR] [--out docs/results/serve_loadtest]

Each server (Ray Serve, one replica, on 127.0.0.1) is started in turn; its capacity is the throughput
of a burst of requests sent at once, and the fixed finest server's capacity sets the offered loads.
Every load runs the same seeded arrival trace against each server, bounded by --max-requests and
--max-seconds (no request waits longer than --timeout-s). Written: OUT.md / OUT.csv (throughput,
p50 / p99 latency, share within the SLO, patch mix, served accuracy on the validation images:
top-1 or mIoU), OUT.png (p99 latency and accuracy against offered load); the goals of issue 28 are
printed as held / NOT held. Loopback only: the client shares the machine with the server.

--kill-replica-at S adds a fault run: the adaptive server with --kill-replicas replicas at --kill-load,
one replica killed (ray.kill of its actor) S seconds after the first request. Its row counts the failed
requests (no 200 answer) and restart_s, the seconds until Ray Serve ran a replacement.
"""
import _bootstrap  # noqa: F401

import argparse

COLS = ['mode', 'load', 'offered', 'sent', 'failed', 'throughput', 'p50_ms', 'p99_ms', 'within_slo', 'patch_mix',
        'accuracy', 'saturation', 'restart_s']
FORMATS = {'load': '{:g}', 'offered': '{:.0f}', 'throughput': '{:.1f}', 'p50_ms': '{:.0f}', 'p99_ms': '{:.0f}',
           'within_slo': '{:.1f}', 'accuracy': '{:.1f}', 'saturation': '{:.0f}',
           'restart_s': '{:.1f}'}


def draw(rows, slo_ms):
    def _draw(fig, axes):
        for mode in dict.fromkeys(r['mode'] for r in rows):
            rs = [r for r in rows if r['mode'] == mode]
            style = 'x' if rs[0]['restart_s'] is not None else 'o-'  # the fault run: one point
            axes[0, 0].plot([r['load'] for r in rs], [r['p99_ms'] for r in rs], style, label=mode)
            axes[0, 1].plot([r['load'] for r in rs], [r['accuracy'] for r in rs], style, label=mode)
        axes[0, 0].axhline(slo_ms, color='grey', ls='--', lw=1, label='SLO')
        axes[0, 0].set(xlabel='offered load (x fixed finest capacity)', ylabel='p99 latency (ms)', yscale='log')
        axes[0, 1].set(xlabel='offered load (x fixed finest capacity)', ylabel='served accuracy')
        axes[0, 0].legend(fontsize=8)
    return _draw


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('config')
    p.add_argument('checkpoint')
    p.add_argument('--slo-ms', type=float, required=True)
    p.add_argument('--patches', type=int, nargs='+', default=[8, 12, 15, 24], help="the adaptive server's ladder")
    p.add_argument('--fixed', type=int, nargs='+', default=None,
                   help='the fixed servers (default: the finest and the coarsest patch); the first sets the loads')
    p.add_argument('--runtime', choices=['torch', 'onnxruntime'], default='torch')
    p.add_argument('--loads', type=float, nargs='+', default=[0.5, 1, 2, 4])
    p.add_argument('--kill-replica-at', type=float, default=None, metavar='SECONDS',
                   help='add a fault run: one replica killed this long after its first request')
    p.add_argument('--kill-load', type=float, default=1.0, help='the fault run\'s load (x fixed finest capacity)')
    p.add_argument('--kill-replicas', type=int, default=2, help='the fault run\'s replicas')
    p.add_argument('--max-requests', type=int, default=600)
    p.add_argument('--max-seconds', type=float, default=10.0)
    p.add_argument('--timeout-s', type=float, default=30.0, help='a request unanswered this long fails')
    p.add_argument('--upscale', type=int, default=1, help='enlarge the validation images (model cost over HTTP)')
    p.add_argument('--data-root', default=None)
    p.add_argument('--max-batch', type=int, default=8)
    p.add_argument('--threads', type=int, default=1, help='torch threads in the replica')
    p.add_argument('--port', type=int, default=8000)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--out', default='docs/results/serve_loadtest', help='OUT.md, OUT.csv and OUT.png')
    args = p.parse_args()
    if len(set(args.patches)) < 2 or args.slo_ms <= 0 or args.max_requests < 1 or args.max_seconds <= 0:
        p.error('give two or more patches, a positive --slo-ms, --max-requests and --max-seconds')
    if args.kill_replica_at is not None and not (0 <= args.kill_replica_at < args.max_seconds
                                                 and args.kill_replicas >= 1):
        p.error('--kill-replica-at must fall within the run (0 <= SECONDS < --max-seconds), --kill-replicas >= 1')

    from flexitransfer.reporting import save_figure, write_table
    from flexitransfer.serve.loadtest import goals, run_loadtest
    rows = run_loadtest(args.config, args.checkpoint, args.patches, args.slo_ms, args.loads, args.max_requests,
                        args.max_seconds, args.data_root, args.upscale, args.max_batch, args.threads, args.port,
                        args.seed, runtime=args.runtime, fixed=args.fixed, kill_replica_at=args.kill_replica_at,
                        kill_load=args.kill_load, kill_replicas=args.kill_replicas, timeout_s=args.timeout_s,
                        echo=lambda line: print(line, flush=True))
    held = goals(rows)
    text = '\n'.join(f'- {"held" if ok else "NOT held"}: {g}' for g, ok in held)
    faults = [r for r in rows if r['restart_s'] is not None]
    if faults:
        text += '\n\nFault (a replica killed during the load):\n\n' + '\n'.join(
            f'- {r["mode"]}, {r["load"]:g}x load: {r["failed"]} of {r["sent"]} requests failed, '
            f'{r["within_slo"]:.1f} % within the SLO, p99 {r["p99_ms"]:.0f} ms; Ray Serve ran a replacement '
            f'replica {r["restart_s"]:.1f} s after the kill' for r in faults)
    fine = args.fixed[0] if args.fixed else min(args.patches)
    md = write_table(args.out, rows, COLS, FORMATS,
                     text_before=f'Anytime serving load test: {args.config} at patches {sorted(args.patches)} '
                                 f'({args.runtime}), SLO {args.slo_ms:g} ms, loads in units of the fixed p{fine} '
                                 f'server\'s capacity; accuracy: served top-1 or mIoU (%); failed: requests '
                                 f'without a 200 answer.',
                     text_after=f'Goals (issue 28):\n\n{text}')
    save_figure(draw(rows, args.slo_ms), args.out + '.png', ncols=2)
    print(md)


if __name__ == '__main__':
    main()
