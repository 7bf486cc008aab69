"""Run the README's quick start, task by task, and record what it gave on this machine.

    python tools/quickstart.py [--tasks seg lit panoptic det cls digits] [--retrain] [--docs [--drop-other-machines]]

Each task: make its toy data when missing (``datasets.toy.ensure_toy``, as ``tools/make_toy_data.py``),
train its tiny config with ``tools/train.py`` (skipped when the checkpoint exists, unless ``--retrain``),
test it with ``tools/test.py --out-json`` at the quick start's patches; ``digits`` runs
``tools/reproduce_digits.py``. Prints one table and writes
OUT.md / OUT.csv, and each task's whole test table as OUT_<task>.md / .csv (default
``work_dirs/quickstart/quickstart``; ``--docs``: ``docs/results/quickstart``,
where the rows of this machine replace its earlier rows and other machines' rows are kept). The
README's "What you should see" table quotes that file: the range of each number over the machines.
"""
import _bootstrap  # noqa: F401

import argparse
import csv
import json
import os
import os.path as osp
import time

from main_job import ROOT, run  # the main job's '+ command' subprocess runner, from the repo root

# task: (toy data kind, config, checkpoint, patches, metric column of tools/test.py's table, its name here)
TASKS = {
    'seg': ('seg', 'configs/seg/tiny_seg_flexi.py', 'iter_300.pth', [8, 12, 24, 40], 'mIoU', 'mIoU'),
    'upernet': ('seg', 'configs/seg/tiny_seg_upernet.py', 'iter_300.pth', [8, 12, 24], 'mIoU', 'mIoU'),
    'lit': ('captions', 'configs/retrieval/tiny_lit_flexi.py', 'epoch_25.pth', [6, 10, 12, 20, 30], 'mean_R@1',
            'mean R@1'),
    'panoptic': ('panoptic', 'configs/panoptic/tiny_panoptic_flexi.py', 'iter_200.pth', [8, 12, 16, 24], 'PQ', 'PQ'),
    'det': ('det', 'configs/det/tiny_owl_det.py', 'iter_300.pth', [12, 16, 24], 'bbox_mAP', 'AP'),
    'cls': ('cls', 'configs/cls/tiny_cls_flexi.py', 'epoch_8.pth', [6, 12, 30], 'top1', 'top-1'),
}
COLS = ['task', 'patch', 'metric', 'value', 'machine', 'threads', 'seconds']


def column(row: dict, metric: str):
    """The value of ``metric`` in a row of tools/test.py's table (its column names carry the dataset prefix)."""
    keys = [k for k in row if k.split('/')[-1] == metric]
    if not keys:
        raise KeyError(f'no {metric!r} column in {sorted(row)}')
    return row[keys[0]]


def task_rows(name: str, retrain: bool, threads: int, tag: str, out_prefix: str):
    """Train (unless its checkpoint exists) and test one task; writes OUT_PREFIX_<task>.md/.csv (the whole
    test table) and returns the headline rows."""
    from flexitransfer.datasets.toy import ensure_toy
    from flexitransfer.reporting import write_table
    kind, cfg, ckpt_name, patches, metric, label = TASKS[name]
    work = osp.join('work_dirs', osp.splitext(osp.basename(cfg))[0])
    ckpt = osp.join(work, ckpt_name)
    t0 = time.time()
    ensure_toy(kind, ROOT)  # as tools/make_toy_data.py KIND, when the folder is missing
    if retrain or not osp.isfile(osp.join(ROOT, ckpt)):
        run('tools/train.py', cfg, '--work-dir', work)
    out = osp.join(ROOT, 'work_dirs', 'quickstart', f'{name}.json')
    os.makedirs(osp.dirname(out), exist_ok=True)
    run('tools/test.py', cfg, ckpt, '--patch', *map(str, patches), '--work-dir', work, '--out-json', out)
    secs = time.time() - t0
    table = json.load(open(out))['table']
    write_table(osp.join(ROOT, f'{out_prefix}_{name}'), table, formats={k: '{:.2f}' for k in table[0]
                                                                         if k not in ('patch', 'tokens')})
    return [dict(task=name, patch=r['patch'], metric=label, value=round(float(column(r, metric)), 2),
                 machine=tag, threads=threads, seconds=round(secs)) for r in table]


def digits_rows(threads: int, tag: str):
    t0 = time.time()
    out = 'work_dirs/quickstart/digits'
    run('tools/reproduce_digits.py', '--out', out)
    with open(osp.join(ROOT, out + '.csv'), newline='') as f:
        rows = list(csv.DictReader(line for line in f if not line.startswith('#')))
    secs = round(time.time() - t0)
    return [dict(task='digits', patch=int(r['patch']), metric='top-1', value=float(r['FlexiViT']), machine=tag,
                 threads=1, seconds=secs) for r in rows]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--tasks', nargs='+', default=[*TASKS, 'digits'], choices=[*TASKS, 'digits'])
    ap.add_argument('--retrain', action='store_true', help='train again even where the checkpoint exists')
    ap.add_argument('--out', default='work_dirs/quickstart/quickstart', help='OUT.md and OUT.csv')
    ap.add_argument('--docs', action='store_true', help='merge into docs/results/quickstart.* (the README\'s)')
    ap.add_argument('--drop-other-machines', action='store_true',
                    help="with --docs: also drop other machines' rows of TASKS (their model or recipe changed)")
    a = ap.parse_args()
    import torch

    from flexitransfer.reporting import cpu_name, write_table
    out = 'docs/results/quickstart' if a.docs else a.out
    threads, tag = torch.get_num_threads(), cpu_name()
    rows = []
    for name in a.tasks:
        rows += digits_rows(threads, tag) if name == 'digits' else task_rows(name, a.retrain, threads, tag, out)
    old = osp.join(ROOT, out + '.csv')
    if a.docs and osp.isfile(old):  # keep the other machines' rows
        with open(old, newline='') as f:
            kept = [r for r in csv.DictReader(line for line in f if not line.startswith('#'))
                    if r['task'] not in a.tasks or (r['machine'] != tag and not a.drop_other_machines)]
        rows = kept + rows
    print(write_table(osp.join(ROOT, out), rows, COLS))


if __name__ == '__main__':
    main()
