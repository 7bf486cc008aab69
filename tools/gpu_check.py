"""GPU self-check after installing: parity with the CPU, training throughput and MFU of every ViT-B
config, FlexiViT vs timm's ViT and the SDPA kernel, random vs fixed patch training.

    python tools/gpu_check.py [--device cuda|cpu] [--tiny] [--checkpoints TASK=CKPT ...]
                              [--configs NAME ...] [--patch 8 16 30] [--iters N] [--out work_dirs/gpu_check]

Writes OUT/report.md and one CSV per section (parity, train, timm, patch_schedule); exits non-zero
after writing them if a check failed. ``--tiny`` is the CI-sized form (tiny configs and models, one
iteration, two patches); ``--device cpu --tiny`` runs in the test suite. TASK is one of seg, cls,
retrieval, panoptic, det (CKPT 'random': seeded random weights); NAME one of segmenter, upernet,
mask2former, owlvit, lit, cls, flexidistill. See flexitransfer/benchmark/gpu_check.py.
"""
import _bootstrap  # noqa: F401

import argparse
import shlex
import sys


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--device', default='cuda', help='cuda | cuda:N | cpu (default cuda)')
    p.add_argument('--tiny', action='store_true', help='CI-sized: tiny configs, 1 iteration, 2 patches')
    p.add_argument('--checkpoints', nargs='+', default=[], metavar='TASK=CKPT',
                   help='parity models (default: the five tasks, trained tiny checkpoints where present)')
    p.add_argument('--configs', nargs='+', metavar='NAME', help='training-throughput configs (default all)')
    p.add_argument('--patch', type=int, nargs='+', help='training-throughput patch sizes (default 8 16 30)')
    p.add_argument('--iters', type=int, help='timed training iterations per measurement')
    p.add_argument('--out', default='work_dirs/gpu_check')
    a = p.parse_args()
    ckpts = {}
    for item in a.checkpoints:
        task, sep, path = item.partition('=')
        if not sep or not path:
            p.error(f'--checkpoints takes TASK=CKPT, got {item!r}')
        ckpts[task] = path
    from flexitransfer.benchmark.gpu_check import gpu_check
    try:
        gpu_check(device=a.device, tiny=a.tiny, checkpoints=ckpts or None, out=a.out, configs=a.configs,
                  patches=a.patch, iters=a.iters, command=' '.join(map(shlex.quote, ['python'] + sys.argv)))
    except RuntimeError as e:
        sys.exit(str(e))
    print(f'wrote {a.out}/report.md')


if __name__ == '__main__':
    main()
