"""Figures and CSVs of the analysis sweep (:mod:`.sweep`): CKA heat maps, attention overlays,
cross-scale correspondence maps. Written through :mod:`flexitransfer.reporting`."""
import math
import os.path as osp
import textwrap

from ..reporting import write_csv as _write_csv
from .grid import to_pixels


def write_csv(path, header, rows):
    _write_csv(path, rows, header)
    print(f'wrote {path}')


def plt_module():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def save_fig(fig, path):
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    fig.savefig(path, dpi=130, bbox_inches='tight')
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
        fig, axes = plt.subplots(n, n, figsize=(3.0 * n + 1.2, 3.0 * n), squeeze=False, layout='constrained')
        ticks = _ticks(len(labels), 12)  # at most 12 names per axis, on the diagonal cells only: none collide
        lo = min(0.9, max(0.0, math.floor(10 * min(float(m.min()) for m in mats.values())) / 10))  # what varies
        for i, p in enumerate(a.patch):
            for j, q in enumerate(a.patch):
                ax = axes[i][j]
                if j < i:
                    ax.axis('off')
                    continue
                im = ax.imshow(mats[(p, q)].numpy(), vmin=lo, vmax=1, cmap='magma', origin='lower')
                ax.set_title(f'p{p} (rows) vs p{q} (cols)', fontsize=9)
                ax.set_xticks(ticks, [labels[t] for t in ticks] if i == j else [], fontsize=7, rotation=90)
                ax.set_yticks(ticks, [labels[t] for t in ticks] if i == j else [], fontsize=7)
        fig.colorbar(im, ax=axes, shrink=0.6, label='linear CKA')
        fig.suptitle(f'CKA of {"token maps (common grid)" if kind == "tokens" else "class token"}, '
                     f'layer x layer, per patch pair')
        fig.savefig(osp.join(out, f'cka_{kind}.png'), dpi=110, bbox_inches='tight')
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


def _ticks(n: int, most: int):
    """Every k-th of ``n`` label indices (at most ``most`` of them, evenly spaced), the last one included."""
    step = -(-n // most)
    return sorted(set(range(0, n, step)) | {n - 1})


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
    fig, axes = plt.subplots(len(idx), len(a.patch), figsize=(2.6 * len(a.patch), 2.9 * len(idx)), squeeze=False,
                             layout='constrained')
    gr = res['grids'][a.ref]
    for r, i in enumerate(idx):
        for c, q in enumerate(a.patch):
            ax = axes[r][c]
            overlay(ax, shown[i], res['sim'][(i, q)], q, f'p{q}' + (' (query)' if q == a.ref else ''))
            ax.add_patch(plt.Rectangle((qc * a.ref - 0.5, qr * a.ref - 0.5), a.ref, a.ref, fill=False, ec='cyan',
                                       lw=1.2))
        # the image and the query as the row's label, left of it: no title wider than its axis
        axes[r][0].text(-0.05, 0.5, f'{images[i][0]}\nquery: p{a.ref} token ({qr},{qc}) of {gr[0]}x{gr[1]}',
                        transform=axes[r][0].transAxes, rotation=90, ha='right', va='center', fontsize=8)
    fig.suptitle(textwrap.fill(f'cosine similarity to the boxed p{a.ref} token ({res["corr_layer"]})',
                               max(30, int(14 * 2.6 * len(a.patch)))), fontsize=10)
    save_fig(fig, osp.join(out, 'correspondence.png'))


