"""The paper's resource-efficient transfer, small: pre-train big, fine-tune briefly at a cheap patch, deploy
at a smaller one (what is run and measured: flexitransfer/experiments/transfer.py, ``run_transfer``).

Pre-training: a FlexiViT (random patch per step) and a plain ViT/8 on 200k+ images of a synthetic glyph
alphabet rendered on the fly (formula-driven pre-training; flexitransfer/experiments/glyphs.py). Transfer:
the real scikit-learn digits, a new head, a short fine-tune at the cheap patch 12 with each recipe
(big_vision's SGD transfer recipe and variants), against fine-tuning at the small patch 4 (9x the compute),
the ViT/8 and no pre-training; several fine-tuning seeds; every model tested at every patch.

    python tools/reproduce_transfer.py [--pre-steps 3000] [--ft-epochs 10] [--seeds 0 1 2] [--workers 2]
                                       [--out OUT | --docs] [--cache CACHE]

Pre-trained models are kept under CACHE (default work_dirs/reproduce_transfer/cache), fine-tune results
in OUT.jsonl as they come (a killed run resumes). Writes OUT.md (headed by the command, commit, CPU,
threads and date), OUT.csv and OUT.png (default OUT: work_dirs/reproduce_transfer/transfer_digits;
--docs: docs/results/transfer_digits).
One torch thread per worker: the published numbers were measured that way (another count, other bits).
"""
import _bootstrap  # noqa: F401

import argparse

PATCHES = (4, 6, 8, 12, 16, 24)  # flexitransfer.experiments.digits.PATCHES (not imported: errors answer at once)
RECIPES = ('adamw', 'sgd', 'sgd_linear', 'sgd_frozen_embed', 'sgd_bb_0.1', 'sgd_band_8_16',
           'sgd_band_12_24')  # flexitransfer.experiments.transfer.RECIPES
DOCS_OUT = 'docs/results/transfer_digits'


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--pre-steps', type=int, default=3000, help='pre-training steps of 64 glyph images')
    ap.add_argument('--ft-epochs', type=int, default=10, help='fine-tuning epochs over the digits (20 steps each)')
    ap.add_argument('--cheap-patch', type=int, default=12)
    ap.add_argument('--small-patch', type=int, default=4)
    ap.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2], help='fine-tuning seeds')
    ap.add_argument('--recipes', nargs='+', default=list(RECIPES), choices=RECIPES,
                    help='fine-tuning recipes tried at the cheap patch (must include the default, sgd)')
    ap.add_argument('--workers', type=int, default=2, help='processes, one torch thread each')
    ap.add_argument('--out', default='work_dirs/reproduce_transfer/transfer_digits')
    ap.add_argument('--docs', action='store_true', help=f'{DOCS_OUT}.* (the README\'s), not OUT')
    ap.add_argument('--cache', default='work_dirs/reproduce_transfer/cache', help='where pre-trained models are kept')
    a = ap.parse_args()
    for p in (a.cheap_patch, a.small_patch):
        if p not in PATCHES:
            ap.error(f'patch {p} is not one of the evaluated patch sizes {list(PATCHES)}')
    from flexitransfer.experiments.transfer import run_transfer
    run_transfer(pre_steps=a.pre_steps, ft_epochs=a.ft_epochs, cheap_patch=a.cheap_patch, small_patch=a.small_patch,
                 seeds=a.seeds, recipes=a.recipes, workers=a.workers, out=DOCS_OUT if a.docs else a.out,
                 cache=a.cache)


if __name__ == '__main__':
    main()
