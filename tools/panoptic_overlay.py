"""Save a panoptic prediction as a coloured PNG overlay (and, optionally, as a COCO panoptic id PNG).

    python tools/panoptic_overlay.py CONFIG CHECKPOINT IMG [IMG ...] [--patch P] [--out DIR] [--alpha 0.5]
                                     [--save-ids]

Runs the model of a panoptic config (its test pipeline, without the annotation loader) at patch
size P on each image and writes DIR/<image>_p<P>.png: the image blended with the prediction,
stuff in its class colour (the config's palette), every thing instance in a shade of its class
colour, instance borders white, VOID black, enlarged (nearest) to >= 480 px (``--upscale K``
sets the factor), with a legend of the classes present. ``--alpha 1`` writes the pure colour map.
``--save-ids`` also writes DIR/<image>_p<P>_ids.png in the COCO panoptic PNG encoding
(id = R + 256 G + 256^2 B, id = label + 1000 * instance, 0 = VOID).
"""
import _bootstrap  # noqa: F401

import argparse
import os
import os.path as osp

import numpy as np
from PIL import Image

from flexitransfer.apis import inference_model, init_model, load_config
from flexitransfer.reporting import add_legend, display_scale, font

INSTANCE_OFFSET = 1000  # mmdet's encoding of pred_panoptic_seg: label + instance * INSTANCE_OFFSET


def colorize(pan: np.ndarray, palette, num_things: int, num_classes: int) -> np.ndarray:
    """(H, W) mmdet panoptic map -> (H, W, 3) uint8 colours: stuff = palette colour, things = a
    deterministic shade of it per instance, VOID = black, thing borders white."""
    out = np.zeros(pan.shape + (3,), np.uint8)
    for v in np.unique(pan):
        label, inst = int(v) % INSTANCE_OFFSET, int(v) // INSTANCE_OFFSET
        if label >= num_classes:
            continue
        rgb = np.array(palette[label], np.float64)
        if label < num_things:
            rng = np.random.default_rng(inst)
            rgb = np.clip(rgb * rng.uniform(0.6, 1.0) + rng.uniform(-25, 25, 3), 0, 255)
        out[pan == v] = rgb.astype(np.uint8)
    things = (pan % INSTANCE_OFFSET < num_things)
    edge = np.zeros(pan.shape, bool)
    edge[:-1] |= (pan[:-1] != pan[1:]) & (things[:-1] | things[1:])
    edge[:, :-1] |= (pan[:, :-1] != pan[:, 1:]) & (things[:, :-1] | things[:, 1:])
    out[edge] = 255
    return out


def legend(pan, classes, things, palette):
    """[(name, colour)] of the classes in ``pan``; things with their instance count."""
    labels = pan % INSTANCE_OFFSET
    out = []
    for c in sorted(set(np.unique(labels).tolist()) & set(range(len(classes)))):
        n = len(np.unique(pan[labels == c]))
        name = f'{classes[c]}: {n} instance{"s" * (n > 1)}' if c < len(things) else f'{classes[c]} (stuff)'
        out.append((name, palette[c]))
    return out + ([('VOID', (0, 0, 0))] if (labels >= len(classes)).any() else [])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('config')
    p.add_argument('checkpoint')
    p.add_argument('images', nargs='+')
    p.add_argument('--patch', type=int, help='patch size (default: the model\'s own)')
    p.add_argument('--out', default='work_dirs/panoptic_overlay')
    p.add_argument('--alpha', type=float, default=0.5, help='weight of the colour map (1 = colour map only)')
    p.add_argument('--save-ids', action='store_true', help='also write the COCO panoptic id PNG')
    p.add_argument('--upscale', type=int, default=0, help='enlarge K times (nearest); 0: small images to >= 480 px')
    a = p.parse_args()
    cfg = load_config(a.config)
    model = init_model(cfg, a.checkpoint, patch_size=a.patch)  # strict: a missing tensor is an error naming it
    meta = cfg.test_dataloader.dataset.get('metainfo') or {}
    classes, things = meta.get('classes'), meta.get('thing_classes')
    palette = meta.get('palette')
    if not (classes and things and palette):
        from mmdet.datasets import CocoPanopticDataset
        classes, things = CocoPanopticDataset.METAINFO['classes'], CocoPanopticDataset.METAINFO['thing_classes']
        palette = CocoPanopticDataset.METAINFO['palette']
    os.makedirs(a.out, exist_ok=True)
    ptag = f'_p{a.patch}' if a.patch else ''
    for path in a.images:
        pred = inference_model(model, path)
        pan = pred.pred_panoptic_seg.sem_seg[0].cpu().numpy().astype(np.int64)
        img = np.asarray(Image.open(path).convert('RGB').resize(pan.shape[::-1]), np.float64)
        col = colorize(pan, palette, len(things), len(classes)).astype(np.float64)
        over = np.clip((1 - a.alpha) * img + a.alpha * col, 0, 255).astype(np.uint8)
        stem = osp.join(a.out, osp.splitext(osp.basename(path))[0] + ptag)
        k = a.upscale or display_scale(*pan.shape[::-1])
        shown = Image.fromarray(over).resize((pan.shape[1] * k, pan.shape[0] * k), Image.NEAREST)
        add_legend(shown, legend(pan, classes, things, palette), font(max(12, min(shown.size) // 32)),
                   f'patch {a.patch or "(model)"}').save(stem + '.png')
        msg = f'wrote {stem}.png ({len(np.unique(pan))} segments)'
        if a.save_ids:
            ids = np.where(pan % INSTANCE_OFFSET >= len(classes), 0, pan)
            Image.fromarray(np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], -1).astype(np.uint8)).save(
                stem + '_ids.png')
            msg += f' and {stem}_ids.png'
        print(msg)


if __name__ == '__main__':
    main()
