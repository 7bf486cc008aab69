"""Open-vocabulary detection demo: text queries in, an image with boxes, labels and scores out (PNG).

    python tools/detect.py IMAGE --queries "red" "blue" --patch 16 [--checkpoint CKPT]
                           [--config configs/det/tiny_owl_det.py] [--score-thr 0.3] [--upscale K] [--out OUT.png]

The model comes from the config (its test pipeline resizes / pads the image); the queries
replace its default queries; ``--patch`` sets the patch size (any p dividing the padded image).
"""
import _bootstrap  # noqa: F401

import argparse
import os
import os.path as osp

from PIL import Image, ImageDraw

PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
           (240, 50, 230), (210, 245, 60), (0, 128, 128), (170, 110, 40)]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('image')
    p.add_argument('--queries', nargs='+', required=True, help='text queries, e.g. "a red circle" "a blue square"')
    p.add_argument('--patch', type=int, default=None, help='patch size (default: the config\'s)')
    p.add_argument('--config', default='configs/det/tiny_owl_det.py')
    p.add_argument('--checkpoint', help='trained / converted weights (default: random init, for a smoke test)')
    p.add_argument('--score-thr', type=float, default=0.3)
    p.add_argument('--max-boxes', type=int, default=20)
    p.add_argument('--upscale', type=int, default=0,
                   help='draw on the image enlarged K times (nearest); 0 (default): small images to >= 480 px')
    p.add_argument('--out', help='output PNG (default: work_dirs/detect/<image>_det.png)')
    p.add_argument('--device', default=None, help='cpu | cuda (default: cuda when available)')
    return p.parse_args()


def draw(image, sample, queries, score_thr, max_boxes, upscale=0):
    from flexitransfer.reporting import display_scale, draw_labels, font
    img = Image.open(image).convert('RGB')
    k = upscale or display_scale(img.width, img.height)  # 0: small images enlarged so labels fit and read
    img = img.resize((img.width * k, img.height * k), Image.NEAREST)
    d = ImageDraw.Draw(img)
    p = sample.pred_instances
    keep = (p.scores >= score_thr).nonzero().flatten()[:max_boxes].tolist()
    lines, labels = [], []
    for i in keep:
        x0, y0, x1, y1 = p.bboxes[i].tolist()
        q = int(p.labels[i])
        c = PALETTE[q % len(PALETTE)]
        box = [round(v * k) for v in (x0, y0, x1, y1)]
        d.rectangle(box, outline=c, width=max(2, round(min(img.size) / 160)))
        labels.append((f'{queries[q]} {float(p.scores[i]):.2f}', box, c))
        lines.append(f'  {queries[q]:<20s} {float(p.scores[i]):.3f} [{x0:.1f}, {y0:.1f}, {x1:.1f}, {y1:.1f}]')
    draw_labels(d, labels, img.size, font(max(12, min(img.size) // 30)))
    return img, lines


def main():
    a = parse_args()
    if not osp.isfile(a.image):
        raise SystemExit(f'image not found: {a.image}')
    if a.upscale < 0:
        raise SystemExit(f'--upscale must be 0 (auto) or a positive integer, got {a.upscale}')
    import torch

    from flexitransfer.apis import inference_model, init_model, load_config
    a.device = a.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    if a.checkpoint and not osp.isfile(a.checkpoint):
        raise SystemExit(f'--checkpoint {a.checkpoint!r} not found')
    cfg = load_config(a.config)
    cfg.model.default_queries = tuple(a.queries)
    # strict: a missing tensor is an error naming it; no checkpoint: random init, a smoke test
    model = init_model(cfg, a.checkpoint, a.device, patch_size=a.patch)
    sample = inference_model(model, a.image, texts=a.queries)
    img, lines = draw(a.image, sample, a.queries, a.score_thr, a.max_boxes, a.upscale)
    out = a.out or osp.join('work_dirs', 'detect', osp.splitext(osp.basename(a.image))[0] + '_det.png')
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    img.save(out)
    grid = model.backbone.grid_size(sample.metainfo['batch_input_shape'])  # the padded input the model saw
    print(f'wrote {out}: {len(lines)} boxes with score >= {a.score_thr} (patch {model.backbone.patch_size[0]}, '
          f'{grid[0]}x{grid[1]} tokens)')
    print('\n'.join(lines))


if __name__ == '__main__':
    main()
