"""Anytime cascade over patch sizes for a FlexiViT classifier: calibrate, report, save the thresholds.

    python tools/cascade.py CONFIG CKPT --patch 24 12 6 [--target-acc 97 | --budget-gflops 0.05]
                            [--score maxprob|margin] [--out work_dirs/cascade/NAME] [--latency-runs 20]

The thresholds are calibrated on the config's val split (or, without one, on the even-indexed half
of its test split, reporting on the odd half), then the cascade is reported on the test split:
top-1, mean GFLOPs and mean latency per image (batch-1 per-stage latencies measured interleaved in
this process, weighted by the fraction of images reaching each stage), the fraction stopping at each
stage, and OUT.{md,csv,png}: a Pareto table / plot against every single fixed patch size. The
thresholds go to CKPT's directory as ``<ckpt stem>.cascade.json`` (``--thresholds`` to change).
"""
import _bootstrap  # noqa: F401

import argparse
import json
import os.path as osp

import torch
from mmengine.runner import Runner

from flexitransfer.adaptive.run import batches_from_loader, run_cascade, study_table
from flexitransfer.apis import init_model, load_config


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('config')
    ap.add_argument('checkpoint')
    ap.add_argument('--patch', type=int, nargs='+', required=True, help='stage patch sizes, coarse to fine')
    goal = ap.add_mutually_exclusive_group(required=True)
    goal.add_argument('--target-acc', type=float, help='top-1 (%%) to reach on the calibration split, at least compute')
    goal.add_argument('--budget-gflops', type=float, help='mean GFLOPs per image; best calibration accuracy within it')
    ap.add_argument('--score', choices=['maxprob', 'margin'], default='maxprob')
    ap.add_argument('--compare', type=int, nargs='*', default=None,
                    help='fixed patch sizes to compare against (default: the stage patches)')
    ap.add_argument('--out', help='prefix of the table / CSV / plot (default work_dirs/cascade/<config name>)')
    ap.add_argument('--thresholds', help='where the thresholds JSON goes (default beside the checkpoint)')
    ap.add_argument('--latency-runs', type=int, default=20, help='0 skips the latency measurement')
    ap.add_argument('--onnx', action='store_true',
                    help='also deploy the cascade through ONNX (one graph per stage, beside the thresholds) '
                         'and check it')
    ap.add_argument('--exporter', choices=['dynamo', 'torchscript'], default='dynamo')
    ap.add_argument('--device', default='cpu')
    a = ap.parse_args()
    if sorted(a.patch, reverse=True) != a.patch or len(set(a.patch)) != len(a.patch):
        ap.error(f'--patch lists the stages coarse to fine (decreasing), got {a.patch}')
    cfg = load_config(a.config)
    model = init_model(cfg, a.checkpoint, device=a.device)
    test = batches_from_loader(model, Runner.build_dataloader(cfg.test_dataloader))
    if cfg.get('val_dataloader'):
        val, split = batches_from_loader(model, Runner.build_dataloader(cfg.val_dataloader)), 'val split'
        if cfg.val_dataloader.get('dataset') == cfg.test_dataloader.get('dataset'):
            split += ' (NOTE: the config\'s val and test splits are the same data: the report is not held out)'
    else:  # no val split: calibrate on one half of the test split, report on the other
        x = torch.cat([b[0] for b in test])
        y = torch.cat([b[1] for b in test])
        val, test = [(x[0::2], y[0::2])], [(x[1::2], y[1::2])]
        split = 'even half of the test split (the config has no val split; the report uses the odd half)'
    name = osp.splitext(osp.basename(a.config))[0]
    out = a.out or osp.join('work_dirs', 'cascade', name)
    thr_path = a.thresholds or osp.splitext(a.checkpoint)[0] + '.cascade.json'
    study = run_cascade(model, val, test, a.patch, a.target_acc, a.budget_gflops, a.score, out, thr_path,
                        a.latency_runs, extra_patches=a.compare or ())
    cal = study['calibration']
    print(f'calibrated on the {split} ({study["n_val"]} images): '
          f'thresholds {[round(t, 4) for t in study["thresholds"]]} '
          f'({a.score}); there top-1 {cal["accuracy"]:.2f}% at {cal["gflops"]:.4g} GFLOPs'
          + ('' if cal['met'] else ' -- the goal was NOT reachable; closest kept'))
    print(f'test ({study["n_test"]} images):\n' + study_table(study))
    print('latency: batch-1 per-stage medians measured interleaved in this process, weighted by the fraction '
          'of images reaching each stage (compare ratios, not absolute ms, on a loaded machine)')
    print(f'wrote {", ".join(study["files"])} and {thr_path}')
    print(json.dumps({'thresholds': study['thresholds'], 'test': study['chosen']}, default=float))
    if a.onnx:
        from flexitransfer.deploy.cascade import check_cascade_onnx
        onnx_dir = osp.splitext(thr_path)[0] + '_onnx'
        diff, same = check_cascade_onnx(model, a.patch, study['thresholds'], a.score, test[0][0], onnx_dir,
                                        a.exporter)
        print(f'wrote the ONNX cascade to {onnx_dir} (one graph per stage + cascade.json); ONNX Runtime vs '
              f'PyTorch on {test[0][0].shape[0]} test images: max abs diff of logits {diff:.3g}, same stopping '
              f'stage for {same:.1%} of them')


if __name__ == '__main__':
    main()
