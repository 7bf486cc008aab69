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

Outputs in --out (default work_dirs/analysis/<config>):
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
import argparse
import copy
import csv
import glob
import os
import os.path as osp
import sys

import _bootstrap  # noqa: F401
import torch
import torch.nn.functional as F
from tqdm import tqdm

from flexitransfer.analysis import (MinibatchCKA, common_grid, correspondence, cosine_similarity, layer_names,
                                    pooled_rows, query_attention, record, rollout, to_pixels, token_map)
from flexitransfer.engine import flexi_modules, set_patch_size
from flexitransfer.models.backbones.flexivit import check_patch_size

WHAT = ('cka', 'attention', 'correspondence')


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


# ----------------------------------------------------------------------------- model and images
def expand_images(patterns):
    files = []
    for pat in patterns:
        hits = sorted(glob.glob(pat)) if any(c in pat for c in '*?[') else [pat]
        for f in hits:
            if not osp.isfile(f):
                sys.exit(f'--images: {f!r} is not a file')
            files.append(f)
    if not files:
        sys.exit(f'--images: no file matches {patterns}')
    return files


def load_images(cfg, a, in_channels):
    """Raw images as the test pipeline gives them (uint8 CHW, BGR for colour), and their names."""
    if a.images:
        import mmcv
        out = []
        for f in expand_images(a.images)[:a.num_images]:
            img = mmcv.imread(f, flag='grayscale' if in_channels == 1 else 'color')
            img = torch.from_numpy(img[..., None] if img.ndim == 2 else img).permute(2, 0, 1).contiguous()
            out.append((osp.basename(f), img))
        return out
    from mmengine.registry import DATASETS
    if not cfg.get('test_dataloader'):
        sys.exit(f'{a.config} has no test_dataloader: pass --images FILE ...')
    ds = DATASETS.build(copy.deepcopy(cfg.test_dataloader.dataset))
    out = []
    n = min(a.num_images, len(ds))
    for i in sorted({round(k * (len(ds) - 1) / max(n - 1, 1)) for k in range(n)}):  # evenly over the test set
        item = ds[i]
        sample = item.get('data_samples')
        path = sample.metainfo.get('img_path') if hasattr(sample, 'metainfo') else None
        out.append((osp.basename(path) if path else f'test_{i}', item['inputs']))
    return out


def preprocess(model, raw, size):
    """Resize (bilinear, antialiased) to ``size`` and normalise as the model's data preprocessor does."""
    x = F.interpolate(raw[None].float(), size=size, mode='bilinear', antialias=True, align_corners=False)[0]
    dp = getattr(model, 'data_preprocessor', None)
    swap = bool(getattr(dp, '_channel_conversion', False) or getattr(dp, 'channel_conversion', False))
    shown = x.clone()
    if swap and x.shape[0] == 3:
        x = x[[2, 1, 0]]
    if getattr(dp, '_enable_normalize', False):
        x = (x - dp.mean.cpu()) / dp.std.cpu()
    shown = shown[[2, 1, 0]].permute(1, 2, 0) if shown.shape[0] == 3 else shown[0]
    return x, (shown / 255.0).clamp(0, 1)  # display: RGB (H, W, 3) or gray (H, W) in [0, 1]


# ----------------------------------------------------------------------------- analysis
def analyze(model, backbone, images, a, size):
    names = layer_names(backbone.num_layers)
    npt = backbone.num_prefix_tokens
    pairs = [(p, q) for i, p in enumerate(a.patch) for q in a.patch[i:]]
    others = [p for p in a.patch if p != a.ref]
    res = dict(names=names, cka_tok={}, cka_cls={}, cka_pool={}, corr={}, attn={}, roll={}, sim={}, grids={})
    if 'cka' in a.what:
        res['cka_tok'] = {pq: MinibatchCKA(len(names)) if pq[0] == pq[1] else MinibatchCKA(len(names), len(names))
                          for pq in pairs}
        if npt:
            res['cka_cls'] = {pq: MinibatchCKA(len(names) - 1, len(names) - 1) for pq in pairs}
        res['cka_pool'] = {pq: MinibatchCKA(1, 1) for pq in pairs}
    corr_layer = a.corr_layer or names[-1]
    if corr_layer not in names:
        sys.exit(f'--corr-layer {corr_layer!r} is not one of {names}')
    if any(not -backbone.num_layers <= i < backbone.num_layers for i in a.layers):
        sys.exit(f'--layers {a.layers}: the model has {backbone.num_layers} blocks '
                 f'(indices 0..{backbone.num_layers - 1} or negative from the end)')
    layers = [i % backbone.num_layers for i in a.layers]
    heads = None if a.heads == ['mean'] else list(range(backbone.num_heads)) if a.heads == ['all'] \
        else [int(h) for h in a.heads]
    if heads and max(heads) >= backbone.num_heads:
        sys.exit(f'--heads {a.heads}: the model has {backbone.num_heads} heads')
    # batches of --batch-size; a last batch of fewer than 4 joins the one before (unbiased HSIC needs 4)
    starts = list(range(0, len(images), a.batch_size))
    if len(images) - starts[-1] < 4 and len(starts) > 1:
        starts.pop()
    bounds = list(zip(starts, starts[1:] + [len(images)]))
    n_show = min(a.show, len(images))  # drawn images: spread evenly over the analysed ones
    shown_idx = {round(k * (len(images) - 1) / max(n_show - 1, 1)) for k in range(n_show)}
    bar = tqdm(total=len(images), desc='analyze', unit='img')
    for s, e in bounds:
        x = torch.stack([images[i][1] for i in range(s, e)]).to(a.device)
        show = [i - s for i in range(s, e) if i in shown_idx]
        recs = {}
        for p in a.patch:
            set_patch_size(model, p)
            rec = record(backbone, x, attention='attention' in a.what and bool(show))
            res['grids'][p] = rec.grid
            for i in (show if rec.attn else []):
                for li in layers:
                    m = query_attention(rec.attn[li][i], rec.grid, npt)  # (H, gh, gw)
                    for h in (heads or ['mean']):
                        res['attn'][(s + i, p, li, h)] = m.mean(0) if h == 'mean' else m[h]
                if a.rollout:
                    r = rollout([t[i:i + 1] for t in rec.attn])
                    res['roll'][(s + i, p)] = query_attention(r[:, None], rec.grid, npt)[0, 0]
            rec.attn = []
            recs[p] = rec
        if 'cka' in a.what:
            for (p, q) in pairs:
                g = common_grid(recs[p].grid, recs[q].grid)
                xs = [pooled_rows(token_map(recs[p].tokens[n], recs[p].grid, npt), g) for n in names]
                ys = None if p == q else [pooled_rows(token_map(recs[q].tokens[n], recs[q].grid, npt), g)
                                          for n in names]
                res['cka_tok'][(p, q)].update(xs, ys)
                if npt:
                    res['cka_cls'][(p, q)].update([recs[p].tokens[n][:, 0] for n in names[1:]],
                                                  [recs[q].tokens[n][:, 0] for n in names[1:]])
                res['cka_pool'][(p, q)].update([recs[p].final[:, npt:].mean(1)], [recs[q].final[:, npt:].mean(1)])
        if 'correspondence' in a.what:
            ref = recs[a.ref]
            for q in others:
                for n in names:
                    hits, count, chance = correspondence(ref.tokens[n][:, npt:], recs[q].tokens[n][:, npt:],
                                                         ref.grid, recs[q].grid, size)
                    acc = res['corr'].setdefault((n, q), [0, 0, chance])
                    acc[0] += hits
                    acc[1] += count
            gh, gw = ref.grid
            qi = int(a.query[0] * gh) * gw + int(a.query[1] * gw)
            for i in show:
                for q in a.patch:
                    sim = cosine_similarity(ref.tokens[corr_layer][i:i + 1, npt + qi:npt + qi + 1],
                                            recs[q].tokens[corr_layer][i:i + 1, npt:])
                    res['sim'][(s + i, q)] = sim.reshape(recs[q].grid).float()
            res['query_token'] = divmod(qi, gw)
            res['corr_layer'] = corr_layer
        bar.update(e - s)
    bar.close()
    res['layers'], res['heads'] = layers, heads or ['mean']
    return res


# ----------------------------------------------------------------------------- outputs
def write_csv(path, header, rows):
    with open(path, 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    print(f'wrote {path}')


def plt_module():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def save_fig(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt_module().close(fig)
    print(f'wrote {path}')


def out_cka(res, a, out):
    plt = plt_module()
    names = res['names']
    for kind, accs, labels in (('tokens', res['cka_tok'], names), ('cls', res['cka_cls'], names[1:])):
        if not accs:
            continue
        mats = {pq: m.compute() for pq, m in accs.items()}
        write_csv(osp.join(out, f'cka_{kind}.csv'), ['p_a', 'p_b', 'layer_a', 'layer_b', 'cka'],
                  [[p, q, la, lb, f'{float(mats[(p, q)][i, j]):.6f}'] for (p, q) in mats
                   for i, la in enumerate(labels) for j, lb in enumerate(labels)])
        n = len(a.patch)
        fig, axes = plt.subplots(n, n, figsize=(2.6 * n + 1, 2.6 * n), squeeze=False)
        for i, p in enumerate(a.patch):
            for j, q in enumerate(a.patch):
                ax = axes[i][j]
                if j < i:
                    ax.axis('off')
                    continue
                im = ax.imshow(mats[(p, q)].numpy(), vmin=0, vmax=1, cmap='magma', origin='lower')
                ax.set_title(f'p{p} (rows) vs p{q} (cols)', fontsize=8)
                ticks = range(0, len(labels), max(1, len(labels) // 6))
                ax.set_xticks(list(ticks), [labels[t] for t in ticks], fontsize=6, rotation=90)
                ax.set_yticks(list(ticks), [labels[t] for t in ticks], fontsize=6)
        fig.colorbar(im, ax=axes, shrink=0.6, label='linear CKA')
        fig.suptitle(f'CKA of {"token maps (common grid)" if kind == "tokens" else "class token"}, '
                     f'layer x layer, per patch pair')
        fig.savefig(osp.join(out, f'cka_{kind}.png'), dpi=110)
        plt.close(fig)
        print(f'wrote {osp.join(out, f"cka_{kind}.png")}')

    def vs_ref(accs, p, n_layers):
        pq = (p, a.ref) if (p, a.ref) in accs else (a.ref, p)
        return accs[pq].compute().diagonal()[:n_layers]
    rows, curves = [], {}
    for p in a.patch:
        tok = vs_ref(res['cka_tok'], p, len(names))
        cls = vs_ref(res['cka_cls'], p, len(names) - 1) if res['cka_cls'] else None
        curves[p] = (tok, cls)
        for i, n in enumerate(names):
            c = '' if cls is None or i == 0 else f'{float(cls[i - 1]):.6f}'
            rows.append([p, a.ref, n, f'{float(tok[i]):.6f}', c])
        rows.append([p, a.ref, 'pooled output', f'{float(vs_ref(res["cka_pool"], p, 1)[0]):.6f}', ''])
    write_csv(osp.join(out, 'cka_vs_ref.csv'), ['p', 'p_ref', 'layer', 'cka_tokens', 'cka_cls'], rows)
    fig, axes = plt.subplots(1, 2 if res['cka_cls'] else 1, figsize=(11 if res['cka_cls'] else 6, 3.8),
                             squeeze=False)
    for p in a.patch:
        if p == a.ref:
            continue
        tok, cls = curves[p]
        axes[0][0].plot(range(len(names)), tok.numpy(), 'o-', ms=3, label=f'p{p}')
        if cls is not None:
            axes[0][1].plot(range(1, len(names)), cls.numpy(), 'o-', ms=3, label=f'p{p}')
    for k, ax in enumerate(axes[0]):
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
        ax.set_ylim(0, 1.02)
        ax.set_ylabel(f'CKA vs p{a.ref}')
        ax.set_title('token maps (common grid)' if k == 0 else 'class token')
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    save_fig(fig, osp.join(out, 'cka_vs_ref.png'))


def overlay(ax, img, heat, patch, title):
    ax.imshow(img.numpy(), cmap='gray' if img.ndim == 2 else None)
    h = to_pixels(heat[None], (patch, patch))[0].numpy()
    ax.imshow(h, cmap='inferno', alpha=0.6, vmin=h.min(), vmax=max(h.max(), h.min() + 1e-12))
    ax.set_title(title, fontsize=8)
    ax.axis('off')


def out_attention(res, a, out, images, shown):
    plt = plt_module()
    idx = sorted({k[0] for k in res['attn']})
    rows = [(i, li, h) for i in idx for li in res['layers'] for h in res['heads']]
    write_csv(osp.join(out, 'attention.csv'), ['image', 'patch', 'layer', 'head', 'row', 'col', 'weight'],
              [[images[i][0], p, li, h, r, c, f'{float(v):.6f}'] for (i, li, h) in rows for p in a.patch
               for (r, c), v in _cells(res['attn'][(i, p, li, h)])])
    fig, axes = plt.subplots(len(rows), len(a.patch) + 1, figsize=(2.2 * (len(a.patch) + 1), 2.3 * len(rows)),
                             squeeze=False)
    for r, (i, li, h) in enumerate(rows):
        axes[r][0].imshow(shown[i].numpy(), cmap='gray' if shown[i].ndim == 2 else None)
        axes[r][0].set_title(f'{images[i][0]}\nblock {li}, head {h}', fontsize=7)
        axes[r][0].axis('off')
        for c, p in enumerate(a.patch):
            g = res['grids'][p]
            overlay(axes[r][c + 1], shown[i], res['attn'][(i, p, li, h)], p, f'p{p} ({g[0]}x{g[1]})')
    save_fig(fig, osp.join(out, 'attention.png'))
    if res['roll']:
        write_csv(osp.join(out, 'attention_rollout.csv'), ['image', 'patch', 'row', 'col', 'weight'],
                  [[images[i][0], p, r, c, f'{float(v):.6f}'] for i in idx for p in a.patch
                   for (r, c), v in _cells(res['roll'][(i, p)])])
        fig, axes = plt.subplots(len(idx), len(a.patch) + 1, figsize=(2.2 * (len(a.patch) + 1), 2.3 * len(idx)),
                                 squeeze=False)
        for r, i in enumerate(idx):
            axes[r][0].imshow(shown[i].numpy(), cmap='gray' if shown[i].ndim == 2 else None)
            axes[r][0].set_title(f'{images[i][0]}\nrollout', fontsize=7)
            axes[r][0].axis('off')
            for c, p in enumerate(a.patch):
                overlay(axes[r][c + 1], shown[i], res['roll'][(i, p)], p, f'p{p} rollout')
        save_fig(fig, osp.join(out, 'attention_rollout.png'))


def _cells(m):
    for r in range(m.shape[0]):
        for c in range(m.shape[1]):
            yield (r, c), m[r, c]


def out_correspondence(res, a, out, images, shown):
    plt = plt_module()
    rows = [[n, a.ref, q, hits, count, f'{hits / count:.6f}', f'{chance:.6f}']
            for (n, q), (hits, count, chance) in res['corr'].items()]
    write_csv(osp.join(out, 'correspondence.csv'),
              ['layer', 'p_query', 'p_target', 'hits', 'tokens', 'fraction', 'chance'], rows)
    last = res['names'][-1]
    print(f'correspondence at {last} (query p{a.ref}):')
    for (n, q), (hits, count, chance) in res['corr'].items():
        if n == last:
            print(f'  p{a.ref} -> p{q}: {hits / count:.3f} (chance {chance:.3f})')
    idx = sorted({k[0] for k in res['sim']})
    if not idx:
        return
    qr, qc = res['query_token']
    write_csv(osp.join(out, 'correspondence_maps.csv'),
              ['image', 'layer', 'p_query', 'query_row', 'query_col', 'p_target', 'row', 'col', 'cosine'],
              [[images[i][0], res['corr_layer'], a.ref, qr, qc, q, r, c, f'{float(v):.6f}']
               for i in idx for q in a.patch for (r, c), v in _cells(res['sim'][(i, q)])])
    fig, axes = plt.subplots(len(idx), len(a.patch), figsize=(2.3 * len(a.patch), 2.4 * len(idx)), squeeze=False)
    gr = res['grids'][a.ref]
    for r, i in enumerate(idx):
        for c, q in enumerate(a.patch):
            ax = axes[r][c]
            overlay(ax, shown[i], res['sim'][(i, q)], q, f'p{q}' + (' (query)' if q == a.ref else ''))
            ax.add_patch(plt.Rectangle((qc * a.ref - 0.5, qr * a.ref - 0.5), a.ref, a.ref, fill=False, ec='cyan',
                                       lw=1.2))
        axes[r][0].set_title(f'{images[i][0]}: p{a.ref} token ({qr},{qc}) of {gr[0]}x{gr[1]}', fontsize=7)
    fig.suptitle(f'cosine similarity to the boxed p{a.ref} token ({res["corr_layer"]})', fontsize=9)
    save_fig(fig, osp.join(out, 'correspondence.png'))


def main(argv=None):
    a = parse_args(argv)
    from flexitransfer.apis import init_model, load_config
    from flexitransfer.deploy import infer_img_size
    for f in (a.config, a.checkpoint):
        if not osp.isfile(f):
            sys.exit(f'not found: {f}')
    cfg = load_config(a.config)
    model = init_model(cfg, a.checkpoint, a.device)  # strict: a missing tensor is an error naming it
    mods = flexi_modules(model)
    if not mods:
        sys.exit(f'{a.config}: the model ({type(model).__name__}) holds no FlexiViT whose patch size can be set')
    if a.module >= len(mods):
        sys.exit(f'--module {a.module}: the model holds {len(mods)} FlexiViT(s)')
    backbone = mods[a.module]
    raw = load_images(cfg, a, backbone.in_channels)
    if len(raw) < 4:
        sys.exit(f'only {len(raw)} images: the analysis needs at least 4')
    size = tuple(a.img_size) if a.img_size else infer_img_size(cfg) or tuple(raw[0][1].shape[-2:])
    for p in a.patch:
        try:
            check_patch_size(size, (p, p))
        except ValueError as e:
            sys.exit(f'--patch {p} at analysis size {size[0]}x{size[1]} (--img-size): {e}')
    prepped = [preprocess(model, img, size) for _, img in raw]
    images = [(name, x) for (name, _), (x, _) in zip(raw, prepped)]
    shown = [d for _, d in prepped]
    out = a.out or osp.join('work_dirs', 'analysis', osp.splitext(osp.basename(a.config))[0])
    os.makedirs(out, exist_ok=True)
    print(f'{len(images)} images at {size[0]}x{size[1]}, patch sizes {a.patch} (ref {a.ref}), '
          f'{backbone.num_layers} blocks')
    with torch.no_grad():
        res = analyze(model, backbone, images, a, size)
    if 'cka' in a.what:
        out_cka(res, a, out)
    if 'attention' in a.what:
        out_attention(res, a, out, images, shown)
    if 'correspondence' in a.what:
        out_correspondence(res, a, out, images, shown)


if __name__ == '__main__':
    main()
