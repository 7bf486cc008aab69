"""The analysis sweep over a trained model: images from the config's test set (or files), the
same images at every patch size, CKA / attention / correspondence numbers, then the figures and
CSVs (:mod:`.figures`). ``tools/analyze.py`` is argparse + :func:`run_analysis`.

:func:`run_analysis` takes typed keyword arguments and raises ``FileNotFoundError`` / ``ValueError``
naming the argument (as the tool's flag) and the fix; the sweep and the figures read them from one
:class:`AnalysisOptions`.
"""
import copy
import glob
import os
import os.path as osp
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

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


@dataclass(frozen=True)
class AnalysisOptions:
    """What :func:`analyze` and the figures (:mod:`.figures`) compute and draw; see :func:`run_analysis`."""
    patch: List[int]
    ref: int
    what: Tuple[str, ...] = WHAT
    layers: Tuple[int, ...] = (-1,)
    heads: Tuple[str, ...] = ('mean',)
    rollout: bool = False
    show: int = 4
    query: Tuple[float, float] = (0.5, 0.5)
    corr_layer: Optional[str] = None
    batch_size: int = 16
    device: str = 'cpu'


def check_options(patch: Sequence[int], ref: int, what: Sequence[str], num_images: int, batch_size: int,
                  query: Sequence[float], heads: Sequence[str]) -> None:
    """The checks that need no model (``tools/analyze.py`` makes them too, before importing torch).

    Raises:
        ValueError: the first argument that does not fit, named by its flag.
    """
    if ref not in patch:
        raise ValueError(f'--ref {ref} must be one of --patch {list(patch)}')
    if len(set(patch)) != len(patch):
        raise ValueError(f'--patch has repeated sizes: {list(patch)}')
    if not set(what) <= set(WHAT):
        raise ValueError(f'--what {list(what)}: choose from {list(WHAT)}')
    if ('cka' in what or 'correspondence' in what) and len(patch) < 2:
        raise ValueError('CKA and correspondence compare patch sizes: give at least two to --patch')
    if num_images < 4:
        raise ValueError('--num-images must be at least 4 (the unbiased HSIC needs 4 examples per minibatch)')
    if batch_size < 4:
        raise ValueError('--batch-size must be at least 4 (the unbiased HSIC needs 4 examples per minibatch)')
    if not (0 <= query[0] < 1 and 0 <= query[1] < 1):
        raise ValueError(f'--query takes fractions in [0, 1), got {list(query)}')
    if list(heads) not in (['mean'], ['all']) and not all(str(h).isdigit() for h in heads):
        raise ValueError(f"--heads takes 'mean', 'all' or head indices, got {list(heads)}")


def expand_images(patterns):
    """The files of ``patterns`` (paths or glob patterns), in order.

    Raises:
        FileNotFoundError: a path that is not a file, or nothing matched.
    """
    files = []
    for pat in patterns:
        hits = sorted(glob.glob(pat)) if any(c in pat for c in '*?[') else [pat]
        for f in hits:
            if not osp.isfile(f):
                raise FileNotFoundError(f'--images: {f!r} is not a file')
            files.append(f)
    if not files:
        raise FileNotFoundError(f'--images: no file matches {list(patterns)}')
    return files


def load_images(cfg, config: str, images: Optional[Sequence[str]], num_images: int, in_channels: int):
    """Raw images as the test pipeline gives them (uint8 CHW, BGR for colour), and their names: the files
    of ``images``, else ``num_images`` spread evenly over the test set of ``cfg`` (loaded from ``config``)."""
    if images:
        import mmcv
        out = []
        for f in expand_images(images)[:num_images]:
            img = mmcv.imread(f, flag='grayscale' if in_channels == 1 else 'color')
            img = torch.from_numpy(img[..., None] if img.ndim == 2 else img).permute(2, 0, 1).contiguous()
            out.append((osp.basename(f), img))
        return out
    from mmengine.registry import DATASETS
    if not cfg.get('test_dataloader'):
        raise ValueError(f'{config} has no test_dataloader: pass --images FILE ...')
    ds = DATASETS.build(copy.deepcopy(cfg.test_dataloader.dataset))
    out = []
    n = min(num_images, len(ds))
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
def analyze(model, backbone, images, a: AnalysisOptions, size):
    """The sweep's numbers: every image batch at every patch size of ``a`` through ``backbone``.

    Args:
        model: the model holding ``backbone`` (its patch size is set on it).
        backbone: the FlexiViT analysed.
        images: ``[(name, preprocessed CHW tensor)]``.
        a: what to compute.
        size: the analysis size (H, W).

    Returns:
        A dict of the CKA accumulators, correspondence counts, attention / similarity maps and grids
        (what :mod:`.figures` draws).

    Raises:
        ValueError: ``a.corr_layer``, ``a.layers`` or ``a.heads`` that the model does not have.
    """
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
        raise ValueError(f'--corr-layer {corr_layer!r} is not one of {names}')
    if any(not -backbone.num_layers <= i < backbone.num_layers for i in a.layers):
        raise ValueError(f'--layers {list(a.layers)}: the model has {backbone.num_layers} blocks '
                         f'(indices 0..{backbone.num_layers - 1} or negative from the end)')
    layers = [i % backbone.num_layers for i in a.layers]
    heads = None if list(a.heads) == ['mean'] else list(range(backbone.num_heads)) if list(a.heads) == ['all'] \
        else [int(h) for h in a.heads]
    if heads and max(heads) >= backbone.num_heads:
        raise ValueError(f'--heads {list(a.heads)}: the model has {backbone.num_heads} heads')
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
                res['cka_pool'][(p, q)].update([recs[p].final[:, npt:].mean(1)],
                                               [recs[q].final[:, npt:].mean(1)])
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


def run_analysis(config: str, checkpoint: str, patch: Sequence[int], ref: Optional[int] = None,
                 what: Sequence[str] = WHAT, images: Optional[Sequence[str]] = None, num_images: int = 64,
                 img_size: Optional[Tuple[int, int]] = None, layers: Sequence[int] = (-1,),
                 heads: Sequence[Union[str, int]] = ('mean',), rollout: bool = False, show: int = 4,
                 query: Tuple[float, float] = (0.5, 0.5), corr_layer: Optional[str] = None, batch_size: int = 16,
                 module: int = 0, device: str = 'cpu', out: Optional[str] = None) -> str:
    """The whole sweep over a trained model; the CSVs and PNGs of ``tools/analyze.py --help`` into ``out``.

    Args:
        config: the model's config file.
        checkpoint: its trained checkpoint (loaded strictly).
        patch: the patch sizes compared.
        ref: the reference patch size (default the first of ``patch``).
        what: any of ``WHAT`` (``cka``, ``attention``, ``correspondence``).
        images: image files or glob patterns (default: ``num_images`` spread over the config's test set).
        num_images: images used for CKA and correspondence (at least 4).
        img_size: the analysis size (H, W) every patch size must divide (default: the config's test
            input size, else the first image's).
        layers: blocks whose attention is drawn (negative: from the end).
        heads: ``('mean',)``, ``('all',)`` or head indices.
        rollout: also draw attention rollout.
        show: images drawn in the attention / correspondence plots (spread over the analysed ones).
        query: query point of the correspondence maps, fractions (y, x) of height and width.
        corr_layer: representation of the correspondence maps (default: the last block's output).
        batch_size: images per forward (at least 4: the unbiased HSIC).
        module: which FlexiViT of the model, if it holds several.
        device: where the model runs.
        out: the output folder (default ``work_dirs/analysis/<config name>``).

    Returns:
        The output folder.

    Raises:
        FileNotFoundError: ``config``, ``checkpoint`` or an image is missing.
        ValueError: an argument that does not fit the options or the model (named by the tool's flag).
    """
    from ..apis import init_model, load_config
    from ..deploy import infer_img_size
    from .figures import out_attention, out_cka, out_correspondence
    patch = list(patch)
    ref = patch[0] if ref is None and patch else ref
    check_options(patch, ref, what, num_images, batch_size, query, [str(h) for h in heads])
    a = AnalysisOptions(patch=patch, ref=ref, what=tuple(what), layers=tuple(layers),
                        heads=tuple(str(h) for h in heads), rollout=rollout, show=show, query=tuple(query),
                        corr_layer=corr_layer, batch_size=batch_size, device=device)
    for f in (config, checkpoint):
        if not osp.isfile(f):
            raise FileNotFoundError(f'not found: {f}')
    cfg = load_config(config)
    model = init_model(cfg, checkpoint, device)  # strict: a missing tensor is an error naming it
    mods = flexi_modules(model)
    if not mods:
        raise ValueError(f'{config}: the model ({type(model).__name__}) holds no FlexiViT whose patch size can be set')
    if module >= len(mods):
        raise ValueError(f'--module {module}: the model holds {len(mods)} FlexiViT(s)')
    backbone = mods[module]
    raw = load_images(cfg, config, images, num_images, backbone.in_channels)
    if len(raw) < 4:
        raise ValueError(f'only {len(raw)} images: the analysis needs at least 4')
    size = tuple(img_size) if img_size else infer_img_size(cfg) or tuple(raw[0][1].shape[-2:])
    for p in patch:
        try:
            check_patch_size(size, (p, p))
        except ValueError as e:
            raise ValueError(f'--patch {p} at analysis size {size[0]}x{size[1]} (--img-size): {e}') from None
    prepped = [preprocess(model, img, size) for _, img in raw]
    named = [(name, x) for (name, _), (x, _) in zip(raw, prepped)]
    shown = [d for _, d in prepped]
    out = out or osp.join('work_dirs', 'analysis', osp.splitext(osp.basename(config))[0])
    os.makedirs(out, exist_ok=True)
    print(f'{len(named)} images at {size[0]}x{size[1]}, patch sizes {patch} (ref {ref}), '
          f'{backbone.num_layers} blocks')
    with torch.no_grad():
        res = analyze(model, backbone, named, a, size)
    if 'cka' in a.what:
        out_cka(res, a, out)
    if 'attention' in a.what:
        out_attention(res, a, out, named, shown)
    if 'correspondence' in a.what:
        out_correspondence(res, a, out, named, shown)
    return out
