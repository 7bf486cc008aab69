"""Deploy a trained model at one patch size: kernel and position embedding resized once.

    python tools/resize_deploy.py CONFIG CHECKPOINT --patch 8 [--img-size H W] [--out DIR] [--export-timm]

Writes DIR/<config>_p8.py and DIR/<config>_p8.pth: a normal config + checkpoint (use them
with tools/test.py, tools/benchmark.py, ...) whose FlexiViT stores the p x p kernel and the
(H/p, W/p) position grid, so inference does no resize work. Then verifies itself: the
deployed model, rebuilt from those files, gives the flexible model's outputs at that patch
(max abs difference printed; non-zero exit above --tol), and prints the speed ratio measured
in this process. ``--export-timm`` also writes a timm VisionTransformer state dict of the
backbone and checks it.
"""
import argparse
import os
import os.path as osp
import sys

import _bootstrap  # noqa: F401
import torch
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope
from mmengine.runner import load_checkpoint

from flexitransfer.deploy import (bake_model, deploy_config, infer_img_size, max_abs_diff, to_timm_vit,
                                  walk_backbone_cfgs)
from flexitransfer.engine import flexi_modules, set_patch_size
from flexitransfer.utils import interleaved_median_ms


def build(cfg, checkpoint):
    for _, bb in walk_backbone_cfgs(cfg.model):
        bb['pretrained'] = None
    model = MODELS.build(cfg.model)
    load_checkpoint(model, checkpoint, map_location='cpu', logger='silent')
    return model.eval()


def forward(model, x):
    return model(x, mode='tensor')


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('config')
    p.add_argument('checkpoint')
    p.add_argument('--patch', type=int, nargs='+', required=True, help='one size, or H W')
    p.add_argument('--img-size', type=int, nargs=2, metavar=('H', 'W'),
                   help='deployment input size (default: the config\'s test crop / input size)')
    p.add_argument('--out', default=None, help='output folder (default: work_dirs/deploy)')
    p.add_argument('--export-timm', action='store_true')
    p.add_argument('--tol', type=float, default=1e-4)
    p.add_argument('--runs', type=int, default=30)
    a = p.parse_args()
    patch = a.patch[0] if len(a.patch) == 1 else tuple(a.patch[:2])
    cfg = Config.fromfile(a.config)
    init_default_scope(cfg.get('default_scope', 'mmengine'))
    img = tuple(a.img_size) if a.img_size else infer_img_size(cfg)
    if img is None:
        sys.exit('cannot tell the deployment image size from the config: pass --img-size H W')
    out_dir = a.out or osp.join('work_dirs', 'deploy')
    os.makedirs(out_dir, exist_ok=True)
    ptag = str(patch) if isinstance(patch, int) else f'{patch[0]}x{patch[1]}'
    stem = osp.join(out_dir, f'{osp.splitext(osp.basename(a.config))[0]}_p{ptag}')

    flexible = build(cfg, a.checkpoint)
    set_patch_size(flexible, patch)
    deployed = bake_model(flexible, patch, img)
    torch.save({'state_dict': deployed.state_dict(),
                'meta': {'deployed_patch': patch, 'img_size': list(img), 'source_checkpoint': a.checkpoint}},
               stem + '.pth')
    dcfg = deploy_config(cfg, patch, img, osp.abspath(stem + '.pth'))
    dcfg.dump(stem + '.py')
    print(f'wrote {stem}.py and {stem}.pth (patch {ptag}, image {img[0]}x{img[1]})')

    # verify through the normal build path: config + checkpoint from disk
    reloaded = build(Config.fromfile(stem + '.py'), stem + '.pth')
    torch.manual_seed(0)
    x = torch.randn(2, 3, *img)
    with torch.no_grad():
        diff = max_abs_diff(forward(flexible, x), forward(reloaded, x))
        bb_f, bb_d = flexi_modules(flexible)[0], flexi_modules(reloaded)[0]
        bdiff = max_abs_diff(bb_f(x), bb_d(x))
        print(f'max abs diff deployed vs flexible at patch {ptag}: task output {diff:.3g}, backbone {bdiff:.3g}')
        x1 = x[:1]
        t_flex, t_dep = interleaved_median_ms(lambda t: forward(flexible, t), lambda t: forward(reloaded, t),
                                               x1, a.runs)
        print(f'forward (batch 1, median of {a.runs}): flexible {t_flex:.2f} ms, deployed {t_dep:.2f} ms, '
              f'ratio deployed/flexible {t_dep / t_flex:.3f}')
        if a.export_timm:
            timm_vit = to_timm_vit(bb_d, img)
            torch.save(timm_vit.state_dict(), stem + '_timm.pth')
            tdiff = max_abs_diff(timm_vit.forward_features(x), bb_d.forward_features(x))
            print(f'wrote {stem}_timm.pth (timm VisionTransformer, patch {ptag}, img_size {img}); '
                  f'max abs diff of tokens vs deployed: {tdiff:.3g}')
            diff = max(diff, tdiff)
    if max(diff, bdiff) > a.tol:
        sys.exit(f'verification failed: max abs diff {max(diff, bdiff):.3g} > tol {a.tol}')


if __name__ == '__main__':
    main()
