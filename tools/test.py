"""Evaluate a checkpoint, once per patch size, and print one table (metrics in percent, COCO AP too).

    python tools/test.py CONFIG CHECKPOINT [--patch 8 16 30] [--work-dir DIR] [--out-json F] [--verbose]
                         [--cfg-options k=v ...] [--launcher none|pytorch|slurm]

The terminal shows a short header, the progress and the table; mmengine's whole log (environment,
config, hooks) is in the work dir's log file (``--verbose`` prints it here too).
"""
import _bootstrap

import argparse
import json
import numbers

from mmengine.config import DictAction


def parse_args():
    p = argparse.ArgumentParser(description='Test a flexitransfer model at one or several patch sizes')
    p.add_argument('config')
    p.add_argument('checkpoint')
    p.add_argument('--patch', type=int, nargs='+', help='patch sizes to evaluate (default: the config\'s)')
    p.add_argument('--work-dir')
    p.add_argument('--out-json', help='write {"table": [...], "metrics": {...}} here')
    p.add_argument('--cfg-options', nargs='+', action=DictAction)
    p.add_argument('--verbose', action='store_true', help="mmengine's whole log on the terminal too")
    _bootstrap.add_launcher_args(p)
    return _bootstrap.parse_with_launcher(p)


def main():
    args = parse_args()
    _bootstrap.require_config(args.config)  # wrong paths: one line, before the heavy imports
    _bootstrap.require_checkpoint(args.checkpoint)
    from flexitransfer.apis import build_test_runner, default_work_dir, load_config, prepare_test_cfg
    from flexitransfer.engine import check_datasets_nonempty, init_distributed, validate_patch_config
    from flexitransfer.engine.console import header
    from flexitransfer.engine.validate import check_patch_fits
    from flexitransfer.engine.workers import shut_down_workers
    cfg = load_config(args.config, args.cfg_options)
    cfg.launcher = args.launcher
    if args.patch:
        check_patch_fits(cfg, args.patch, args.config)
    cfg = prepare_test_cfg(cfg, patch_sizes=args.patch,
                           work_dir=args.work_dir or cfg.get('work_dir') or default_work_dir(args.config))
    validate_patch_config(cfg, args.config)
    init_distributed(cfg, args.launcher)
    runner = build_test_runner(cfg, args.checkpoint, strict=True, prepared=True, quiet=not args.verbose)
    print(header(runner, args.config, f"test at {cfg.test_cfg.get('patch_sizes') or 'the model default'}"), flush=True)
    check_datasets_nonempty(runner, ('test',))  # a missing data folder or an empty test set: one line
    metrics = runner.test()
    shut_down_workers(runner, ('test',))  # killed at exit, they would leave /tmp/pymp-* folders
    loop = runner.test_loop
    if args.out_json:
        num = lambda v: float(v) if isinstance(v, numbers.Real) and not isinstance(v, (int, bool)) else v
        table = [{k: num(v) for k, v in row.items()} for row in getattr(loop, 'last_table', [])]
        with open(args.out_json, 'w') as f:
            json.dump({'table': table, 'metrics': {k: float(v) for k, v in metrics.items()
                                                   if isinstance(v, numbers.Real)}}, f, indent=2)


if __name__ == '__main__':
    main()
