"""Load test of the anytime server (flexitransfer.serve): fixed finest, fixed coarsest and adaptive patch,
side by side, under open-loop Poisson load at multiples of the fixed finest server's capacity.

    python tools/loadtest.py CONFIG CKPT --slo-ms 100 --patches 8 12 24 [--loads 0.5 1 2 4]
                             [--max-requests 600] [--max-seconds 10] [--upscale 1] [--data-root DIR]
                             [--out docs/results/serve_loadtest]

Each server (Ray Serve, one replica, on 127.0.0.1) is started in turn; its capacity is the throughput
of a burst of requests sent at once, and the fixed finest server's capacity sets the offered loads.
Every load runs the same seeded arrival trace against each server, bounded by --max-requests and
--max-seconds (no request waits longer than --timeout-s). Written: OUT.md / OUT.csv (throughput,
p50 / p99 latency, share within the SLO, patch mix, served accuracy on the validation images:
top-1 or mIoU), OUT.png (p99 latency and accuracy against offered load); the goals of issue 28 are
printed as held / NOT held. Loopback only: the client shares the machine with the server.
"""
import _bootstrap  # noqa: F401

import argparse

COLS = ['mode', 'load', 'offered', 'sent', 'failed', 'throughput', 'p50_ms', 'p99_ms', 'within_slo', 'patch_mix',
        'accuracy', 'saturation']
FORMATS = {'load': '{:g}', 'offered': '{:.0f}', 'throughput': '{:.1f}', 'p50_ms': '{:.0f}', 'p99_ms': '{:.0f}',
           'within_slo': '{:.1f}', 'accuracy': '{:.1f}', 'saturation': '{:.0f}'}


def draw(rows, slo_ms):
    def _draw(fig, axes):
        for mode in dict.fromkeys(r['mode'] for r in rows):
            rs = [r for r in rows if r['mode'] == mode]
            axes[0, 0].plot([r['load'] for r in rs], [r['p99_ms'] for r in rs], 'o-', label=mode)
            axes[0, 1].plot([r['load'] for r in rs], [r['accuracy'] for r in rs], 'o-', label=mode)
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
    p.add_argument('--patches', type=int, nargs='+', default=[8, 12, 24])
    p.add_argument('--loads', type=float, nargs='+', default=[0.5, 1, 2, 4])
    p.add_argument('--max-requests', type=int, default=600)
    p.add_argument('--max-seconds', type=float, default=10.0)
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

    from flexitransfer.reporting import save_figure, write_table
    from flexitransfer.serve.loadtest import goals, run_loadtest
    rows = run_loadtest(args.config, args.checkpoint, args.patches, args.slo_ms, args.loads, args.max_requests,
                        args.max_seconds, args.data_root, args.upscale, args.max_batch, args.threads, args.port,
                        args.seed)
    held = goals(rows)
    text = '\n'.join(f'- {"held" if ok else "NOT held"}: {g}' for g, ok in held)
    md = write_table(args.out, rows, COLS, FORMATS,
                     text_before=f'Anytime serving load test: {args.config} at patches {sorted(args.patches)}, '
                                 f'SLO {args.slo_ms:g} ms, loads in units of the fixed p{min(args.patches)} '
                                 f'server\'s capacity; accuracy: served top-1 or mIoU (%).',
                     text_after=f'Goals (issue 28):\n\n{text}')
    save_figure(draw(rows, args.slo_ms), args.out + '.png', ncols=2)
    print(md)


if __name__ == '__main__':
    main()
