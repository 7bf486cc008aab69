"""Train any flexitransfer config (mmseg / mmdet / own scope), the OpenMMLab way.

    python tools/train.py configs/seg/ade20k_flexi_b.py [--work-dir DIR] [--resume [CKPT]] [--amp]
                          [--cfg-options k=v ...] [--launcher none|pytorch|slurm] [--[no-]preflight]

    torchrun --nproc_per_node 2 tools/train.py CONFIG --launcher pytorch   # CPU (gloo) or GPUs (nccl)

Preemption-safe: checkpoints are written atomically; --resume skips a checkpoint that does not read
(a kill mid-write) for the newest one that does; SIGTERM (Slurm, spot instances) saves a checkpoint
after the current iteration and exits with code 143 (run the same command with --resume).
"""
import _bootstrap

import argparse
import os.path as osp
import sys

from mmengine.config import DictAction

PREEMPTED_EXIT_CODE = 143  # 128 + SIGTERM, what a shell reports for a job SIGTERM killed


def parse_args():
    p = argparse.ArgumentParser(description='Train a flexitransfer model')
    p.add_argument('config', help='config file')
    p.add_argument('--work-dir', help='where logs and checkpoints go (default: work_dirs/<config name>)')
    p.add_argument('--resume', nargs='?', const='auto', default=None,
                   help='resume from CKPT, or from the latest checkpoint in the work dir if none is given')
    p.add_argument('--amp', action='store_true', help='automatic mixed precision')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config entries, key=value')
    p.add_argument('--verbose', action='store_true', help="mmengine's whole log on the terminal too (it is always "
                                                          "in the work dir's log file)")
    p.add_argument('--preflight', action=argparse.BooleanOptionalAction, default=None,
                   help='one training step at the smallest patch first, stopping at iteration 0 if it does not fit '
                        'in memory (default: on CUDA)')
    _bootstrap.add_launcher_args(p)
    return _bootstrap.parse_with_launcher(p)


def build_cfg(args):
    from flexitransfer.apis import load_config
    from flexitransfer.engine import amp_optim_wrapper
    cfg = load_config(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    cfg.work_dir = args.work_dir or cfg.get('work_dir') or osp.join(
        'work_dirs', osp.splitext(osp.basename(args.config))[0])
    if args.amp:  # fp16 + dynamic loss scale on CUDA; bf16 on a CPU (engine/amp.py)
        if cfg.optim_wrapper.get('type', 'OptimWrapper') != 'OptimWrapper':
            print(f'--amp: the config already sets optim_wrapper.type={cfg.optim_wrapper.type!r}')
        amp_optim_wrapper(cfg.optim_wrapper)
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume:
        cfg.resume, cfg.load_from = True, args.resume
    return cfg


def main():
    args = parse_args()
    _bootstrap.require_config(args.config)  # wrong paths: one line, before the heavy imports
    _bootstrap.require_checkpoint(None if args.resume == 'auto' else args.resume, '--resume checkpoint')
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner

    from flexitransfer.engine import (
        check_checkpoint,
        check_datasets_nonempty,
        init_distributed,
        make_preemptible,
        memory_preflight,
        preemptible,
        validate_patch_config,
    )
    from flexitransfer.engine.console import header, quiet_runner
    from flexitransfer.engine.validate import check_data_paths
    from flexitransfer.engine.workers import shut_down_workers
    cfg = build_cfg(args)
    for line in make_preemptible(cfg):  # atomic checkpoint hook; --resume: the newest checkpoint that reads
        print(line, flush=True)
    _bootstrap.require_checkpoint(cfg.get('load_from'), 'load_from checkpoint')  # before the config dump
    validate_patch_config(cfg, args.config)  # bad patch sizes fail now, not at the iteration that draws them
    check_data_paths(cfg, ('train', 'val'), args.config)  # a missing data folder: one line, before the header
    init_distributed(cfg, args.launcher)  # before the Runner: mmengine's own start-up needs CUDA
    runner_cls = RUNNERS.get(cfg.runner_type) if 'runner_type' in cfg else Runner  # a scope's own runner
    runner = (runner_cls if args.verbose else quiet_runner(runner_cls)).from_cfg(cfg)
    hook = next((h for h in cfg.get('custom_hooks') or [] if h.get('type') == 'RandomPatchSizeHook'), None)
    print(header(runner, args.config, f"train: random of {hook['patch_sizes']}" if hook and hook.get('patch_sizes')
                 else 'train: the model default'), flush=True)
    if cfg.get('load_from'):  # a resumed run needs every tensor; an initialisation may be partial
        check_checkpoint(runner.model, cfg.load_from, require_all=bool(cfg.get('resume')))
    with preemptible() as run:  # before the dataloaders fork workers: SIGTERM saves, then stops the run
        check_datasets_nonempty(runner, ('train', 'val'))
        report = memory_preflight(runner, enabled=args.preflight)  # the heaviest step, before iteration 0
        if report:
            print(report, flush=True)
        runner.train()
    shut_down_workers(runner)  # persistent loader workers: no pymp-* folders left in /tmp
    if run.checkpoint:
        sys.exit(PREEMPTED_EXIT_CODE)


if __name__ == '__main__':
    main()
