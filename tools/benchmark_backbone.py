"""Forward time of FlexiViT against the same network with kernel and position embedding
baked in (``FlexiViT.baked``), per patch size, measured in one process, interleaved.

    python tools/benchmark_backbone.py [--arch base] [--img 240] [--batch 1] [--runs 20] [--patch 8 10 ...]

Prints a Markdown table with the median times and the ratio flexible / baked (goal <= 1.05).
"""
import _bootstrap  # noqa: F401

import argparse
import statistics

import torch

from flexitransfer.benchmark.timing import interleaved_median_ms
from flexitransfer.models.backbones import DEFAULT_PATCH_SIZES, FlexiViT


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--arch', default='base')
    p.add_argument('--img', type=int, default=240)
    p.add_argument('--batch', type=int, default=1)
    p.add_argument('--runs', type=int, default=20)
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--patch', type=int, nargs='+', default=sorted(DEFAULT_PATCH_SIZES))
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    a = p.parse_args()
    dev = torch.device(a.device)
    model = FlexiViT(arch=a.arch).eval().to(dev)
    x = torch.randn(a.batch, 3, a.img, a.img, device=dev)
    sync = torch.cuda.synchronize if dev.type == 'cuda' else (lambda: None)
    print(f'FlexiViT-{a.arch}, batch {a.batch}, {a.img}x{a.img}, device {dev} '
          f'({torch.get_num_threads()} threads), median of {a.runs} interleaved runs, eval + no_grad\n')
    print('| patch | tokens | flexible ms | baked ms | ratio |\n|---|---|---|---|---|')
    ratios = []
    with torch.no_grad():
        for ps in a.patch:
            baked = model.bake(ps, a.img).eval()
            mf, mb = interleaved_median_ms(lambda t: model(t, ps), baked, x, a.runs, a.warmup, sync)
            ratios.append(mf / mb)
            print(f'| {ps} | {(a.img // ps) ** 2} | {mf:.2f} | {mb:.2f} | {mf / mb:.3f} |', flush=True)
    print(f'\nworst ratio {max(ratios):.3f}, geometric mean '
          f'{statistics.geometric_mean(ratios):.3f} (goal <= 1.05)')


if __name__ == '__main__':
    main()
