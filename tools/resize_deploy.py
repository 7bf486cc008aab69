"""Deploy a trained model at one patch size: kernel and position embedding resized once.

    python tools/resize_deploy.py CONFIG CHECKPOINT --patch 8 [--img-size H W] [--out DIR] [--export-timm]
                                  [--onnx [--onnx-target tensor|backbone] [--exporter dynamo|torchscript]]
                                  [--int8] [--compile] [--tol 1e-4] [--cfg-options k=v ...]

Writes DIR/<config>_p8.py and DIR/<config>_p8.pth: a normal config + checkpoint (use them
with tools/test.py, tools/benchmark.py, ...) whose FlexiViT stores the p x p kernel and the
(H/p, W/p) position grid, so inference does no resize work. Then verifies itself: the
deployed model, rebuilt from those files, gives the flexible model's outputs at that patch
(max abs difference printed; non-zero exit above --tol), and prints the speed ratio measured
in this process. ``--export-timm`` also writes a timm VisionTransformer state dict of the
backbone and checks it.

``--onnx`` exports the deployed model to DIR/<config>_p8.onnx (``--onnx-target tensor``: the
task output of ``model(x, mode='tensor')``, e.g. logits or LiT image embeddings; ``backbone``:
the FlexiViT's feature maps) and checks it with ONNX Runtime against PyTorch on random inputs
and on the config's first test images (max abs diff printed; non-zero exit above --tol).
``--int8`` (implies --onnx) also writes DIR/<config>_p8_int8.onnx (dynamic int8 linear layers,
ONNX Runtime's quantiser) and measures the task metric on the config's test set with PyTorch,
ONNX Runtime fp32 and int8, through the same dataset and metric code as tools/test.py,
printed side by side with the int8 metric drop. The exported graph carries ONNX Runtime's
transformer fusions (one Attention node per block, skip-LayerNorm, bias-GELU; counts printed);
int8 is per-channel with reduced-range weights (no u8s8 saturation on AVX2 without VNNI), its
attention quantised (QAttention), LayerNorm and softmax in float. ``--compile`` also checks
torch.compile of the deployed model (max abs diff and speed-up vs eager, printed).

The workflow is ``flexitransfer.deploy.bake_checkpoint`` (same arguments, from Python; it returns
what it wrote and measured).
"""
import _bootstrap  # noqa: F401

import argparse
import sys

from mmengine.config import DictAction

from flexitransfer.apis import load_config
from flexitransfer.deploy import EXPORT_TARGETS, EXPORTERS, VerificationError, bake_checkpoint
from flexitransfer.engine.validate import check_patch_fits


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('config')
    p.add_argument('checkpoint')
    p.add_argument('--patch', type=int, nargs='+', required=True, help='one size, or H W')
    p.add_argument('--img-size', type=int, nargs=2, metavar=('H', 'W'),
                   help='deployment input size (default: the config\'s test crop / input size)')
    p.add_argument('--out', default=None, help='output folder (default: work_dirs/deploy)')
    p.add_argument('--export-timm', action='store_true')
    p.add_argument('--onnx', action='store_true', help='export to ONNX and check it with ONNX Runtime')
    p.add_argument('--onnx-target', choices=EXPORT_TARGETS, default='tensor',
                   help="tensor: the task output (model(x, mode='tensor')); backbone: the FlexiViT's outputs")
    p.add_argument('--exporter', choices=EXPORTERS, default='dynamo',
                   help="torch.onnx.export(dynamo=True) (default) or the TorchScript-based exporter")
    p.add_argument('--int8', action='store_true', help='also write a dynamic-int8 graph and compare test metrics')
    p.add_argument('--compile', action='store_true',
                   help='also check torch.compile of the deployed model (max abs diff, speed-up vs eager)')
    p.add_argument('--tol', type=float, default=1e-4)
    p.add_argument('--runs', type=int, default=30)
    p.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings (e.g. data_root)')
    a = p.parse_args()
    patch = a.patch[0] if len(a.patch) == 1 else tuple(a.patch[:2])
    check_patch_fits(load_config(a.config, a.cfg_options), [patch], a.config, img_size=a.img_size)
    try:
        bake_checkpoint(a.config, a.checkpoint, patch, img_size=a.img_size, out_dir=a.out, export_timm=a.export_timm,
                        onnx=a.onnx, onnx_target=a.onnx_target, exporter=a.exporter, int8=a.int8, compile=a.compile,
                        tol=a.tol, runs=a.runs, cfg_options=a.cfg_options)
    except VerificationError as e:  # measured and printed above: the verdict is one line, not a traceback
        sys.exit(f'resize_deploy.py: error: {e}')


if __name__ == '__main__':
    main()
