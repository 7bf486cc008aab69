"""The open-vocabulary experiment at toy scale (``tools/reproduce_openvocab.py``).

OWL-ViT's protocol, small: the detector starts from the tiny LiT (image + text towers trained on
toy captions that name every class), trains its boxes with one class held out (its boxes removed,
its images kept, its name never a training query), and is evaluated on that class from its text
query. Two experiments (one config each):

* ``composite`` (configs/det/tiny_owl_openvocab.py): 12 colour+shape classes, 'yellow triangle'
  held out; its words are seen in other classes ("yellow circle", "red triangle");
* ``colour`` (configs/det/tiny_owl_openvocab_colour.py): 4 colour classes, 'yellow' held out: a
  novel attribute, no seen class shares it.

Each is trained three ways: ``lit`` (the result: LiT init, class held out), ``scratch`` (the
control: same data, no LiT: is LiT what helps?) and ``lit_all`` (the upper bound: LiT init, the
class's boxes kept). Every run is evaluated at several patch sizes on the held-out class, with
all classes queried ("all", the standard protocol) and with its name alone ("alone"), against
the chance level of the same boxes with permuted scores, and with the share of its boxes that
some prediction of the image localises (IoU >= 0.5, whatever the score: do the boxes exist at
all, apart from whether the query ranks them); the seen classes' mean AP is shown beside it.
The LiT checkpoint is trained first if it is missing; a run whose final checkpoint exists is
only evaluated.

    python tools/reproduce_openvocab.py [--experiments composite colour] [--seeds 0 1]
                                        [--patch 12 16 24] [--out OUT | --docs]

:func:`run_openvocab` prints a Markdown table and writes OUT.md (headed by its provenance), OUT.csv and
OUT.png (AP x 100; mean over seeds, min-max).
"""
import contextlib
import copy
import io
import os
import os.path as osp
import subprocess
import sys
from typing import Sequence

import numpy as np
from mmengine.config import Config

from ..reporting import save_figure, write_csv, write_markdown

EXPERIMENTS = {'composite': 'configs/det/tiny_owl_openvocab.py', 'colour': 'configs/det/tiny_owl_openvocab_colour.py'}
RUNS = ('lit', 'scratch', 'lit_all')
KEYS = ('ap', 'ap50', 'alone', 'chance', 'recall', 'seen', 'seen50')
LIT_CONFIG = 'configs/retrieval/tiny_lit_flexi.py'
ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))  # the repository (configs/, tools/)


class StepFailed(RuntimeError):
    """A training run of the study (a subprocess) failed; the message holds the end of its log."""


def sh(args, log):
    """Run a tool of this repo (python TOOL ...), its output in ``log``.

    Args:
        args: the tool and its arguments (``['tools/train.py', CONFIG, ...]``), run from the repository root.
        log: the file that receives its stdout and stderr.

    Raises:
        StepFailed: the tool exited non-zero; the message names the command, its exit status and the
            end of its log.
    """
    with open(log, 'w') as f:
        rc = subprocess.call([sys.executable] + args, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    if rc:
        with open(log) as f:
            tail = f.read()[-3000:]
        raise StepFailed(f'{" ".join(args)} failed (exit {rc}); end of {log}:\n{tail}')


def ensure_data(cfg):
    """The toy data of the detector and of the LiT, generated where missing (kinds found by root)."""
    from flexitransfer.datasets.toy import TOY_DATASETS, ensure_toy
    kind_of = {t.root: k for k, t in TOY_DATASETS.items()}
    lit_root = Config.fromfile(osp.join(ROOT, LIT_CONFIG)).data_root
    for root in (cfg.train_dataloader.dataset.data_root, lit_root):
        ensure_toy(kind_of[root], base=ROOT)


def ensure_lit(cfg):
    ckpt = cfg.lit_checkpoint
    if not osp.isfile(osp.join(ROOT, ckpt)):
        print(f'{ckpt} missing: training the tiny LiT ({LIT_CONFIG}, a few minutes)', flush=True)
        os.makedirs(osp.join(ROOT, 'work_dirs'), exist_ok=True)
        sh(['tools/train.py', LIT_CONFIG], osp.join(ROOT, 'work_dirs', 'tiny_lit_flexi_train.log'))
    return ckpt


def run_cfg(cfg, run: str, seed: int) -> Config:
    """The config of one run: ``lit`` as given, ``scratch`` without the LiT init, ``lit_all`` with the
    held-out class's boxes kept."""
    cfg = copy.deepcopy(cfg)
    if run == 'scratch':
        cfg.load_from = None
    if run == 'lit_all':
        cfg.train_dataloader.dataset.metainfo = dict(classes=tuple(cfg.val_dataloader.dataset.metainfo.classes))
    cfg.randomness = dict(seed=seed)
    return cfg


def train(cfg, work_dir: str) -> str:
    """Train (skipped when the final checkpoint exists) and return the final checkpoint."""
    final = osp.join(work_dir, f'iter_{cfg.train_cfg.max_iters}.pth')
    if osp.isfile(osp.join(ROOT, final)):
        print(f'  {final} exists: not retrained', flush=True)
        return final
    os.makedirs(osp.join(ROOT, work_dir), exist_ok=True)
    cfg_file = osp.join(work_dir, 'config.py')
    cfg.dump(osp.join(ROOT, cfg_file))
    sh(['tools/train.py', cfg_file, '--work-dir', work_dir], osp.join(ROOT, work_dir, 'train.log'))
    return final


def evaluate(cfg, ckpt: str, patches, seed: int):
    """{patch: {metric: value}} of one trained detector (AP x 100, recall in %), metrics as in KEYS."""
    from mmengine.runner import Runner
    from pycocotools.coco import COCO

    from flexitransfer.apis import init_model
    from flexitransfer.engine import set_patch_size
    from flexitransfer.evaluation.open_vocab import box_ap, box_recall, detect_dataset, shuffle_scores
    model = init_model(cfg, osp.join(ROOT, ckpt))  # strict: a missing tensor is an error naming it
    dl_cfg = copy.deepcopy(cfg.test_dataloader)
    dl_cfg.update(num_workers=0, persistent_workers=False)
    dl_cfg.dataset.data_root = osp.join(ROOT, dl_cfg.dataset.data_root)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints while indexing
        loader = Runner.build_dataloader(dl_cfg)
        gt = COCO(osp.join(ROOT, cfg.test_evaluator.ann_file))
    name_to_cat = {c['name']: c['id'] for c in gt.loadCats(gt.getCatIds())}
    classes = tuple(cfg.test_dataloader.dataset.metainfo.classes)
    held = [name_to_cat[c] for c in cfg.held_out]
    seen = [name_to_cat[c] for c in classes if c not in cfg.held_out]
    out = {}
    for p in patches:
        set_patch_size(model, p)
        every = detect_dataset(model, loader, classes, name_to_cat)
        alone = detect_dataset(model, loader, tuple(cfg.held_out), name_to_cat)
        held_all, seen_all = box_ap(gt, every, held), box_ap(gt, every, seen)
        out[p] = dict(ap=held_all['AP'] * 100, ap50=held_all['AP50'] * 100,
                      alone=box_ap(gt, alone, held)['AP'] * 100,
                      chance=box_ap(gt, shuffle_scores(alone, seed), held)['AP'] * 100,
                      recall=box_recall(gt, alone, held) * 100, seen=seen_all['AP'] * 100,
                      seen50=seen_all['AP50'] * 100)
    return out


def lit_image_auc(cfg, lit_ckpt: str, patches):
    """Does the LiT init itself know the held-out class? Zero-shot, image level, on the detection
    validation images: ROC AUC of cos(image, prompt-ensembled name) for "the image holds the class"."""
    import mmcv
    import torch
    import torch.nn.functional as F
    from sklearn.metrics import roc_auc_score

    from flexitransfer.apis import init_model
    from flexitransfer.engine import set_patch_size
    lit = init_model(osp.join(ROOT, LIT_CONFIG), osp.join(ROOT, lit_ckpt))
    ds = cfg.test_dataloader.dataset
    with contextlib.redirect_stdout(io.StringIO()):
        from pycocotools.coco import COCO
        gt = COCO(osp.join(ROOT, cfg.test_evaluator.ann_file))
    held = set(gt.getCatIds(catNms=list(cfg.held_out)))
    ids = sorted(gt.getImgIds())
    y = np.array([any(a['category_id'] in held for a in gt.loadAnns(gt.getAnnIds(imgIds=i))) for i in ids])
    imgs = [mmcv.imread(osp.join(ROOT, ds.data_root, ds.data_prefix['img'], gt.loadImgs(i)[0]['file_name']),
                        channel_order='rgb') for i in ids]
    x = (torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() - 127.5) / 127.5
    out = {}
    with torch.no_grad():
        text = lit.encode_text([t.format(n) for n in cfg.held_out for t in cfg.model.templates])
        q = F.normalize(text.mean(0), dim=0)
        for p in patches:
            set_patch_size(lit, p)
            out[p] = float(roc_auc_score(y, (lit.encode_image(x) @ q).numpy()))
    return out


def fmt(vals):
    vals = np.asarray(vals)
    return f'{vals.mean():.1f}' if len(vals) == 1 else f'{vals.mean():.1f} ({vals.min():.1f}-{vals.max():.1f})'


def run_openvocab(experiments: Sequence[str] = tuple(EXPERIMENTS), runs: Sequence[str] = RUNS,
                  seeds: Sequence[int] = (0, 1), patch: Sequence[int] = (12, 16, 24),
                  work_dir: str = 'work_dirs/openvocab', out: str = 'work_dirs/openvocab/openvocab') -> str:
    """Train (or reuse) every (experiment, run, seed), evaluate at ``patch``, write OUT.md / .csv / .png.

    Args:
        experiments: names in ``EXPERIMENTS`` (``composite``, ``colour``).
        runs: names in ``RUNS`` (``lit``, ``scratch``, ``lit_all``).
        seeds: training seeds of every run (the table shows their mean and min-max).
        patch: evaluation patch sizes.
        work_dir: the runs' work directories go under it (relative to the repository root).
        out: OUT, without the extension (relative to the repository root).

    Returns:
        The Markdown printed (table and notes; OUT.md holds it under its provenance line).

    Raises:
        ValueError: an unknown experiment or run name.
        StepFailed: a training subprocess failed.
    """
    for name, given, known in (('experiment', experiments, EXPERIMENTS), ('run', runs, RUNS)):
        bad = [g for g in given if g not in known]
        if bad:
            raise ValueError(f'unknown {name}(s) {bad}: choose from {list(known)}')
    experiments, runs, seeds, patch = list(experiments), list(runs), list(seeds), list(patch)
    results = {}  # (experiment, run) -> {patch: {metric: [per seed]}}
    lit_auc = {}
    for exp in experiments:
        cfg = Config.fromfile(osp.join(ROOT, EXPERIMENTS[exp]))
        ensure_data(cfg)
        lit_auc[exp] = lit_image_auc(cfg, ensure_lit(cfg), patch)
        print(f'[{exp}] the LiT init at image level, "{", ".join(cfg.held_out)}" present or not, zero-shot AUC: '
              + ', '.join(f'p{p} {v:.3f}' for p, v in lit_auc[exp].items()), flush=True)
        for run in runs:
            for seed in seeds:
                wd = osp.join(work_dir, exp, f'{run}_seed{seed}')
                print(f'[{exp}] {run} seed {seed}: training ({wd})', flush=True)
                rcfg = run_cfg(cfg, run, seed)
                ckpt = train(rcfg, wd)
                res = evaluate(rcfg, ckpt, patch, seed)
                for p, m in res.items():
                    for k, v in m.items():
                        results.setdefault((exp, run), {}).setdefault(p, {}).setdefault(k, []).append(v)
                print('  ' + '  '.join(f'p{p}: held-out AP {m["ap"]:.1f} / AP50 {m["ap50"]:.1f} '
                                       f'(alone {m["alone"]:.1f}, chance {m["chance"]:.1f}, boxes found '
                                       f'{m["recall"]:.0f}%), seen AP {m["seen"]:.1f}'
                                       for p, m in res.items()), flush=True)

    held = {exp: ', '.join(Config.fromfile(osp.join(ROOT, EXPERIMENTS[exp])).held_out) for exp in experiments}
    head = ('| experiment (held out) | run | patch | held-out AP | held-out AP50 | chance AP (same boxes, permuted '
            'scores) | held-out boxes found (IoU>=0.5, any score) | seen classes AP | seen AP50 |')
    lines = [head, '|' + '---|' * 9]
    rows, diff = [], 0.0
    for (exp, run), per_p in results.items():
        for p, m in per_p.items():
            lines.append(f'| {exp} ({held[exp]}) | {run} | {p} | {fmt(m["ap"])} | {fmt(m["ap50"])} | '
                         f'{fmt(m["chance"])} | {fmt(m["recall"])}% | {fmt(m["seen"])} | {fmt(m["seen50"])} |')
            rows.append([exp, held[exp], run, p] + [f'{np.mean(m[k]):.2f}' for k in KEYS])
            diff = max(diff, float(np.max(np.abs(np.subtract(m['ap'], m['alone'])))))
    probe = [f'{exp}: LiT image-level zero-shot AUC of "{held[exp]}" on the validation images: '
             + ', '.join(f'p{p} {v:.3f}' for p, v in lit_auc[exp].items()) for exp in experiments]
    note = (f'COCO box AP x 100 on the validation set, all classes queried; mean over seeds {seeds} (min-max). '
            f'lit: LiT init, class held out; scratch: no LiT, class held out (same recipe otherwise); lit_all: LiT '
            f'init, class trained (upper bound). Held-out AP with its query alone: at most {diff:.4f} from the '
            f'all-queried AP over every run and patch (scores are per-query sigmoids: only the top-100 cut differs).')
    table = '\n'.join(lines)
    note = note + '\n\n' + '\n'.join(f'- {x}' for x in probe)
    print('\n' + table + '\n\n' + note)
    write_csv(osp.join(ROOT, out + '.csv'), rows, ['experiment', 'held_out', 'run', 'patch', 'ap', 'ap50',
                                                   'ap_alone', 'ap_chance', 'box_recall', 'seen_ap',
                                                   'seen_ap50'])  # KEYS' order
    write_markdown(osp.join(ROOT, out + '.md'), table + '\n\n' + note)
    plot(results, experiments, held, out)
    print(f'wrote {out}.md, .csv, .png')
    return table + '\n\n' + note


def plot(results, experiments, held, out):
    save_figure(lambda fig, axes: _draw(axes[0], results, experiments, held), osp.join(ROOT, out + '.png'),
                1, len(experiments), size=(5.5, 3.8), dpi=120)


def _draw(axes, results, experiments, held):
    for ax, exp in zip(axes, experiments):
        runs = [r for r in RUNS if (exp, r) in results]
        patches = sorted(results[(exp, runs[0])])
        x = np.arange(len(patches))
        w = 0.8 / (len(runs) + 1)
        for i, r in enumerate(runs):
            ax.bar(x + i * w, [np.mean(results[(exp, r)][p]['ap']) for p in patches], w, label=f'{r}: held-out AP')
        ax.bar(x + len(runs) * w, [np.mean(results[(exp, runs[0])][p]['chance']) for p in patches], w,
               color='0.7', label=f'{runs[0]}: chance')
        ax.set_xticks(x + w * len(runs) / 2, [f'p={p}' for p in patches])
        ax.set_ylabel('box AP x 100 (held-out class)')
        ax.set_title(f'{exp}: "{held[exp]}" held out')
        ax.legend(fontsize=7)
