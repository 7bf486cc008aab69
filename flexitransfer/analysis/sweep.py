"""The analysis sweep over a trained model: images from the config's test set (or files), the
same images at every patch size, CKA / attention / correspondence numbers, then the figures and
CSVs (:mod:`.figures`). ``tools/analyze.py`` is argparse + :func:`run_analysis`.

``opts`` is the tool's argument namespace (``patch``, ``ref``, ``what``, ``images``, ``num_images``,
``img_size``, ``layers``, ``heads``, ``rollout``, ``show``, ``query``, ``corr_layer``, ``batch_size``,
``module``, ``device``, ``out``): every field is documented in ``tools/analyze.py --help``.
"""
import copy
import glob
import os
import os.path as osp
import sys

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..engine.patch_size import flexi_modules, set_patch_size
from ..models.backbones.flexivit import check_patch_size
from .attention import query_attention, rollout
from .cka import MinibatchCKA
from .correspondence import correspondence, cosine_similarity
from .grid import common_grid, pooled_rows, token_map
from .record import layer_names, record

WHAT = ('cka', 'attention', 'correspondence')


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


def run_analysis(a):
    """The whole sweep for ``a.config`` / ``a.checkpoint``; writes into ``a.out`` (default work_dirs/analysis/<config>)."""
    from ..apis import init_model, load_config
    from ..deploy import infer_img_size
    from .figures import out_attention, out_cka, out_correspondence
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


