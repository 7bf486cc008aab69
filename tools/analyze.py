"""Look inside a trained FlexiViT across patch sizes: representation similarity (CKA),
attention maps and cross-scale token correspondence. PNGs with CSVs of their numbers beside.

    python tools/analyze.py CONFIG CKPT --patch 8 12 16 24 48 [--images F ...] [--num-images 64]
                            [--img-size H W] [--out DIR] [--ref P] [--what cka attention correspondence]
                            [--layers -1] [--heads mean|all|0 1 ..] [--rollout] [--show 4] [--query Y X]
                            [--corr-layer NAME] [--batch-size 16] [--module 0]

Works for any config whose model holds a FlexiViT (the first one unless --module), on the
config's test images or on given image files, all resized to one analysis size (--img-size,
default the config's test input size) that every patch size must divide. Images are
normalised with the model's data preprocessor (mean/std, channel order).

Outputs in --out (default work_dirs/analysis/<config>; --docs: docs/results/analysis, the README's):
* cka_tokens.csv / cka_tokens.png: minibatch linear CKA (unbiased HSIC) between every recorded
  representation (embedding; after each attention and each MLP sub-block) at every pair of
  patch sizes, layer x layer; token maps on the coarser grid of the pair (the finer map
  average-pooled); cka_cls.csv / .png the same for the class token (images as examples);
  cka_vs_ref.csv / .png: same-layer CKA of each p against --ref (tokens, class token, and the
  mean-pooled final output).
* attention.csv / attention.png: class-token attention (mean attention without a class
  token) of --layers / --heads at each p on --show images (spread over the analysed ones); with --rollout also
  attention_rollout.csv / .png.
* correspondence.csv: for each layer and each p != ref, the fraction of tokens at --ref whose
  most similar token (cosine) at p lies in the same image region (cell of the coarser grid),
  with its chance level; correspondence.png / correspondence_maps.csv: the similarity of the
  --ref token at --query (fractions of height, width) to every token at each p.
"""
import _bootstrap  # noqa: F401

import argparse

WHAT = ('cka', 'attention', 'correspondence')  # flexitransfer.analysis.sweep.WHAT (not imported: --help stays fast)
DOCS_OUT = 'docs/results/analysis'


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('config')
    ap.add_argument('checkpoint')
    ap.add_argument('--patch', type=int, nargs='+', required=True, help='patch sizes to compare')
    ap.add_argument('--images', nargs='+', help='image files or glob patterns (default: the config\'s test set)')
    ap.add_argument('--num-images', type=int, default=64,
                    help='images used for CKA and correspondence (spread evenly over the test set)')
    ap.add_argument('--img-size', type=int, nargs=2, metavar=('H', 'W'))
    ap.add_argument('--out')
    ap.add_argument('--docs', action='store_true', help=f'write into {DOCS_OUT} (the README\'s) instead of --out')
    ap.add_argument('--ref', type=int, help='reference patch size (default: the first of --patch)')
    ap.add_argument('--what', nargs='+', choices=WHAT, default=list(WHAT))
    ap.add_argument('--layers', type=int, nargs='+', default=[-1], help='blocks whose attention is drawn')
    ap.add_argument('--heads', nargs='+', default=['mean'], help="'mean', 'all' or head indices")
    ap.add_argument('--rollout', action='store_true', help='also draw attention rollout')
    ap.add_argument('--show', type=int, default=4,
                    help='images drawn in the attention/correspondence plots (spread over the analysed ones)')
    ap.add_argument('--query', type=float, nargs=2, default=[0.5, 0.5], metavar=('Y', 'X'),
                    help='query point of the correspondence maps, as fractions of height and width')
    ap.add_argument('--corr-layer', help='representation of the correspondence maps (default: last block output)')
    ap.add_argument('--batch-size', type=int, default=16)
    ap.add_argument('--module', type=int, default=0, help='which FlexiViT of the model (if it has several)')
    ap.add_argument('--device', default='cpu')
    a = ap.parse_args(argv)
    a.ref = a.patch[0] if a.ref is None else a.ref
    if a.ref not in a.patch:
        ap.error(f'--ref {a.ref} must be one of --patch {a.patch}')
    if len(set(a.patch)) != len(a.patch):
        ap.error(f'--patch has repeated sizes: {a.patch}')
    if ('cka' in a.what or 'correspondence' in a.what) and len(a.patch) < 2:
        ap.error('CKA and correspondence compare patch sizes: give at least two to --patch')
    if a.num_images < 4:
        ap.error('--num-images must be at least 4 (the unbiased HSIC needs 4 examples per minibatch)')
    if a.batch_size < 4:
        ap.error('--batch-size must be at least 4 (the unbiased HSIC needs 4 examples per minibatch)')
    if not (0 <= a.query[0] < 1 and 0 <= a.query[1] < 1):
        ap.error(f'--query takes fractions in [0, 1), got {a.query}')
    if a.heads not in (['mean'], ['all']) and not all(h.isdigit() for h in a.heads):
        ap.error(f"--heads takes 'mean', 'all' or head indices, got {a.heads}")
    return a


def main(argv=None):
    a = parse_args(argv)
    from flexitransfer.analysis.sweep import run_analysis
    run_analysis(a.config, a.checkpoint, a.patch, ref=a.ref, what=a.what, images=a.images, num_images=a.num_images,
                 img_size=a.img_size, layers=a.layers, heads=a.heads, rollout=a.rollout, show=a.show, query=a.query,
                 corr_layer=a.corr_layer, batch_size=a.batch_size, module=a.module, device=a.device,
                 out=DOCS_OUT if a.docs else a.out)


if __name__ == '__main__':
    main()
