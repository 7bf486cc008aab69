"""Check a config's patch sizes against its input sizes when the config is built.

A patch size that is 0, negative, larger than the crop or does not divide it would
otherwise fail at the first iteration that draws it (maybe iteration 3 000), deep inside
the backbone. ``validate_patch_config`` finds every patch size a config will use
(``RandomPatchSizeHook.patch_sizes`` / ``probs`` / ``eval_patch_size``, the multi-patch
loops' ``patch_sizes``, the backbones' ``patch_size``) and every input size it fixes (crops,
fixed resizes, ``data_preprocessor.size``, sliding windows, pad divisors), and raises one
error naming the config entry, the problem and the fix.
"""
from __future__ import annotations

from math import gcd
from typing import List, Optional, Sequence, Tuple

from .patch_size import normalize_probs, walk_backbone_cfgs

Size2 = Tuple[int, int]


def _pair(v) -> Optional[Size2]:
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, int):
        return (v, v)
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        return (int(v[0]), int(v[1]))
    return None


def check_patch_value(p, where: str) -> Size2:
    """A patch size must be a positive int or a pair of positive ints."""
    pair = _pair(p)
    if pair is None or min(pair) <= 0:
        raise ValueError(f'{where}: invalid patch size {p!r}; a patch size is a positive integer (e.g. 16) or a pair '
                         f'(h, w) of positive integers')
    return pair


def _pipeline_size(pipeline) -> Tuple[Optional[Size2], Optional[str], List[Tuple[int, str]]]:
    """The fixed (h, w) a pipeline ends with (or None), where it comes from, and its pad divisors."""
    size, where, divisors = None, None, []
    for i, t in enumerate(pipeline or []):
        if not isinstance(t, dict):
            continue
        typ = t.get('type')
        if typ in ('Resize', 'RandomResize', 'RandomChoiceResize', 'RandomRescale'):
            wh = _pair(t.get('scale')) if typ == 'Resize' and t.get('keep_ratio') is False else None
            size, where = ((wh[1], wh[0]), f'pipeline[{i}] {typ}.scale') if wh else (None, None)
        elif typ in ('RandomCrop', 'CenterCrop') and _pair(t.get('crop_size')):
            size, where = _pair(t['crop_size']), f'pipeline[{i}] {typ}.crop_size'
        elif typ in ('InceptionCrop', 'RandomResizedCrop') and _pair(t.get('size', t.get('scale'))):
            size, where = _pair(t.get('size', t.get('scale'))), f'pipeline[{i}] {typ}.size'
        elif typ == 'Pad':
            if _pair(t.get('size')):
                size, where = _pair(t['size']), f'pipeline[{i}] Pad.size'
            if isinstance(t.get('size_divisor'), int):
                divisors.append((t['size_divisor'], f'pipeline[{i}] Pad.size_divisor'))
    return size, where, divisors


def _stage_constraints(cfg, stage: str):
    """(fixed size, where) and [(divisor, where)] of the inputs the model sees in 'train' or 'test'."""
    loader = cfg.get(f'{stage}_dataloader') or {}
    dataset = loader.get('dataset') or {}
    while isinstance(dataset, dict) and 'dataset' in dataset and 'pipeline' not in dataset:  # wrappers
        dataset = dataset['dataset']
    size, where, divisors = _pipeline_size(dataset.get('pipeline') if isinstance(dataset, dict) else None)
    model = cfg.get('model') or {}
    dp = model.get('data_preprocessor') or {}
    if stage == 'train':
        if _pair(dp.get('size')):
            size, where = _pair(dp['size']), 'model.data_preprocessor.size'
        for key in ('size_divisor', 'pad_size_divisor'):
            if isinstance(dp.get(key), int):
                divisors.append((dp[key], f'model.data_preprocessor.{key}'))
    else:
        tdp = dp.get('test_cfg') or {}
        if _pair(tdp.get('size')):
            size, where = _pair(tdp['size']), 'model.data_preprocessor.test_cfg.size'
        for key, src in (('size_divisor', tdp), ('pad_size_divisor', dp)):
            if isinstance(src.get(key), int):
                divisors.append((src[key], 'model.data_preprocessor.' + ('test_cfg.' if src is tdp else '') + key))
        tc = model.get('test_cfg') or {}
        if tc.get('mode') == 'slide' and _pair(tc.get('crop_size')):
            size, where = _pair(tc['crop_size']), 'model.test_cfg.crop_size (sliding window)'
            divisors = []  # windows have exactly that size
    return size, where, divisors


def _divisors(n: int) -> List[int]:
    """The patch sizes (>= 2) that divide ``n``."""
    return [d for d in range(2, n + 1) if n % d == 0]


def _suggest(h: int, w: int) -> str:
    good = [d for d in _divisors(gcd(h, w)) if d >= 4]  # divisors of the gcd are <= min(h, w)
    if not good:
        return 'a crop whose sides share divisors >= 4'
    return f'patch sizes that divide {h}x{w}: {good}'


def _check_against(p: Size2, where_p: str, size, where_s, divisors, config: str) -> None:
    if size is not None:
        h, w = size
        if p[0] > h or p[1] > w:
            raise ValueError(f'{config}: {where_p}: patch size {p[0]}x{p[1]} is larger than the input {h}x{w} '
                             f'({where_s}); use a smaller patch ({_suggest(h, w)}) or a larger crop')
        if h % p[0] or w % p[1]:
            raise ValueError(f'{config}: {where_p}: patch size {p[0]}x{p[1]} does not divide the input {h}x{w} '
                             f'({where_s}); use {_suggest(h, w)}, or change the crop to a multiple of the patch')
        return
    for d, where_d in divisors:
        if d % p[0] or d % p[1]:
            raise ValueError(f'{config}: {where_p}: patch size {p[0]}x{p[1]} does not divide the pad divisor {d} '
                             f'({where_d}), so padded inputs need not divide by it; use a divisor that every patch '
                             f'size divides (their lcm, e.g. 240 for 8..48) or drop that patch size')


def validate_patch_config(cfg, config: str = 'config') -> None:
    """Raise ``ValueError`` (naming the entry, the problem and the fix) for an unusable patch size in ``cfg``."""
    train, test = [], []
    backbones = list(walk_backbone_cfgs(cfg.get('model') or {}))
    for path, bb in backbones:
        where = 'model.' + '.'.join(map(str, path)) + '.patch_size'
        if 'patch_size' in bb:
            p = check_patch_value(bb['patch_size'], f'{config}: {where}')
            test.append((p, where))
    hooks = [(i, h) for i, h in enumerate(cfg.get('custom_hooks') or [])
             if isinstance(h, dict) and h.get('type') == 'RandomPatchSizeHook']
    for i, h in hooks:
        where = f'custom_hooks[{i}] RandomPatchSizeHook'
        sizes = h.get('patch_sizes')
        if sizes is not None:
            if not isinstance(sizes, (list, tuple)) or not sizes:
                raise ValueError(f'{config}: {where}.patch_sizes must be a non-empty list, got {sizes!r}')
            for p in sizes:
                train.append((check_patch_value(p, f'{config}: {where}.patch_sizes'), f'{where}.patch_sizes'))
            try:
                normalize_probs(list(sizes), h.get('probs'))
            except ValueError as e:
                raise ValueError(f'{config}: {where}.probs: {e}') from None
        if h.get('eval_patch_size') is not None:
            test.append((check_patch_value(h['eval_patch_size'], f'{config}: {where}.eval_patch_size'),
                         f'{where}.eval_patch_size'))
    if not hooks:  # fixed-patch training: the backbones' own patch sizes
        train += test
    for key in ('val_cfg', 'test_cfg'):
        for p in (cfg.get(key) or {}).get('patch_sizes') or []:
            test.append((check_patch_value(p, f'{config}: {key}.patch_sizes'), f'{key}.patch_sizes'))
    if cfg.get('train_dataloader') and backbones:
        constraints = _stage_constraints(cfg, 'train')
        for p, where in train:
            _check_against(p, where, *constraints, config)
    if (cfg.get('test_dataloader') or cfg.get('val_dataloader')) and backbones:
        constraints = _stage_constraints(cfg, 'test' if cfg.get('test_dataloader') else 'val')
        for p, where in test:
            if where.endswith('.patch_size') and hooks:
                continue  # the backbone's default is overridden by the loops / hook when they are set
            _check_against(p, where, *constraints, config)


def _describe_dataset(ds) -> str:
    """``Type(data_root=..., ...)`` of a dataset object or config dict."""
    get = ds.get if isinstance(ds, dict) else (lambda k, d=None: getattr(ds, k, d))
    name = get('type') if isinstance(ds, dict) else type(ds).__name__
    parts = [f'{k}={get(k)!r}' for k in ('data_root', 'ann_file', 'data_prefix', 'split')
             if get(k) not in (None, '', {})]
    return f'{name}(' + ', '.join(parts) + ')'


def _empty(stage: str, what: str) -> ValueError:
    return ValueError(f'{stage}_dataloader: the dataset {what} has no samples; check data_root / data_prefix / '
                      f'ann_file (and img_suffix / seg_map_suffix), or generate toy data with tools/make_toy_data.py')


def _dataset_cfgs(ds, where: str):
    """``(where, dataset config)`` of a dataset config, through its wrappers (Concat / Repeat / ...)."""
    if not isinstance(ds, dict):
        return
    if isinstance(ds.get('datasets'), (list, tuple)):
        for i, d in enumerate(ds['datasets']):
            yield from _dataset_cfgs(d, f'{where}.datasets.{i}')
    elif isinstance(ds.get('dataset'), dict):
        yield from _dataset_cfgs(ds['dataset'], f'{where}.dataset')
    else:
        yield where, ds


def _local(path) -> bool:
    return isinstance(path, str) and bool(path) and '://' not in path


def _missing_in_dataset(ds) -> Optional[Tuple[str, str, str]]:
    """The first path of a dataset config that does not exist: (its config key, the path, what it is)."""
    import os.path as osp
    root = ds.get('data_root')
    if _local(root) and not osp.isdir(root):
        return 'data_root', root, 'the folder'
    root = root if _local(root) else ''
    join = lambda p: p if osp.isabs(p) or not root else osp.join(root, p)  # mmengine's rule
    ann = ds.get('ann_file')
    if _local(ann) and not osp.exists(join(ann)):
        return 'ann_file', join(ann), 'the annotation file'
    prefix = ds.get('data_prefix')
    for key, p in (prefix.items() if isinstance(prefix, dict) else [('', prefix)]):
        if _local(p) and not osp.exists(join(p)):
            return 'data_prefix' + (f'.{key}' if key else ''), join(p), 'the folder'
    return None


def _toy_kind(path: str) -> Optional[str]:
    """The ``tools/make_toy_data.py`` kind whose default folder ``path`` is (or lies in)."""
    import os.path as osp

    from ..datasets.toy import TOY_DATASETS
    path = osp.normpath(osp.abspath(path))
    for kind, t in TOY_DATASETS.items():
        root = osp.normpath(osp.abspath(t.root))
        if path == root or path.startswith(root + osp.sep):
            return kind
    return None


def _shown(path: str) -> str:
    import os
    import os.path as osp
    return repr(path) + ('' if osp.isabs(path) else f' (from {os.getcwd()})')


def check_data_paths(cfg, stages: Sequence[str] = ('train', 'val', 'test'), config: str = 'config') -> None:
    """Fail clearly, before any dataset is built, when a data folder or annotation file is missing.

    OpenMMLab's datasets otherwise end in a bare ``[Errno 2] ... images/training``. Checks each
    stage's ``<stage>_dataloader.dataset`` (through dataset wrappers): ``data_root``, then
    ``ann_file`` and ``data_prefix`` under it; and the ``<stage>_evaluator``'s ``ann_file`` /
    ``seg_prefix`` (COCO, panoptic and LVIS metrics read them). Remote paths (``s3://``) are skipped.

    Args:
        cfg: a Config or dict holding ``<stage>_dataloader`` / ``<stage>_evaluator`` entries.
        stages: the stages to check ('train', 'val', 'test'); absent ones are skipped.
        config: the config file, for the message.

    Raises:
        FileNotFoundError: naming the config, the entry, the missing path and the fix.
    """
    import os.path as osp
    for stage in stages:
        loader = cfg.get(f'{stage}_dataloader')
        for where, ds in _dataset_cfgs(loader.get('dataset') if isinstance(loader, dict) else None,
                                       f'{stage}_dataloader.dataset'):
            missing = _missing_in_dataset(ds)
            if missing is None:
                continue
            key, path, what = missing
            kind = _toy_kind(path)
            toy = f'generate the toy data: python tools/make_toy_data.py {kind}' if kind else \
                'try the toy data first (python tools/make_toy_data.py --list)'
            under = '' if key == 'data_root' else f' under data_root={ds.get("data_root")!r}'
            raise FileNotFoundError(f'{config}: {where}.{key}: {what} {_shown(path)} does not exist{under}; point '
                                    f'the config at the data with --cfg-options {where}.data_root=DIR (likewise '
                                    f'for the other dataloaders), or {toy}')
        evaluators = cfg.get(f'{stage}_evaluator')
        evaluators = evaluators if isinstance(evaluators, (list, tuple)) else [evaluators]
        for i, ev in enumerate(e for e in evaluators if isinstance(e, dict)):
            where = f'{stage}_evaluator' + (f'.{i}' if len(evaluators) > 1 else '')
            for key in ('ann_file', 'seg_prefix'):
                if _local(ev.get(key)) and not osp.exists(ev[key]):
                    raise FileNotFoundError(f'{config}: {where}.{key}: {_shown(ev[key])} does not exist; point it at '
                                            f'the data\'s annotations with --cfg-options {where}.{key}=PATH (the '
                                            f'evaluator does not follow the dataloader\'s data_root)')


def check_datasets_nonempty(runner, stages: Sequence[str]) -> None:
    """Build the loops of ``stages`` ('train', 'val', 'test') now and fail clearly on a missing data
    folder (:func:`check_data_paths`, before any dataset is built) or an empty dataset.

    Otherwise an empty OpenMMLab dataset dies in mmengine's serialisation ("need at least one
    array to concatenate"), an unserialised one makes the infinite sampler spin forever, and an
    empty test set ends in a metric dividing by zero. pycocotools' prints while a COCO metric reads
    its annotations go to the runner's log, not the terminal.

    Args:
        runner: an mmengine Runner whose loops are not built yet.
        stages: the stages to build and check.

    Raises:
        FileNotFoundError: a missing data folder or annotation file.
        ValueError: an empty dataset.
    """
    import contextlib
    import io
    pending = {}
    for stage in stages:
        if getattr(runner, f'_{stage}_loop', None) is not None:
            pending[f'{stage}_dataloader'] = getattr(runner, f'_{stage}_dataloader', None)
            pending[f'{stage}_evaluator'] = getattr(runner, f'_{stage}_evaluator', None)
    check_data_paths(pending, stages, getattr(getattr(runner, 'cfg', None), 'filename', None) or 'config')
    for stage in stages:
        if getattr(runner, f'_{stage}_loop', None) is None:
            continue
        loader_cfg = getattr(runner, f'_{stage}_dataloader', None)
        try:
            with contextlib.redirect_stdout(io.StringIO()) as said:  # pycocotools' "loading annotations..."
                loop = getattr(runner, f'{stage}_loop')  # builds the loop and its dataloader, once
            if said.getvalue().strip():
                runner.logger.info(said.getvalue().rstrip())
        except ValueError as e:
            if 'need at least one array to concatenate' not in str(e):
                raise
            ds_cfg = loader_cfg.get('dataset', {}) if isinstance(loader_cfg, dict) else {}
            raise _empty(stage, _describe_dataset(ds_cfg)) from e
        dataset = getattr(getattr(loop, 'dataloader', None), 'dataset', None)
        if dataset is not None and len(dataset) == 0:
            raise _empty(stage, _describe_dataset(dataset))


def check_patch_fits(cfg, patch_sizes: Sequence, config: Optional[str] = None, flag: str = '--patch',
                     img_size=None) -> None:
    """The one check of the patch sizes a user asks for (``tools/test.py --patch``, ``tools/resize_deploy.py
    --patch``) against the test input of the Config ``cfg`` (or against ``img_size`` (h, w) when given): a
    ``ValueError`` naming the patch, the input size and the valid patch sizes, so every tool says the same
    for the same mistake. A patch is an int or an (h, w) pair."""
    config = config or 'the config'
    if img_size is not None:
        size, where, divisors = (int(img_size[0]), int(img_size[1])), '--img-size', []
    else:
        size, where, divisors = _stage_constraints(cfg, 'test' if cfg.get('test_dataloader') else 'val')
    for p in patch_sizes:
        ph, pw = check_patch_value(p, f'{flag} {p}')
        tag = str(ph) if ph == pw else f'{ph}x{pw}'
        if size is not None:
            h, w = size
            if ph <= h and pw <= w and h % ph == 0 and w % pw == 0:
                continue
            what, valid = f'the input {h}x{w} of {config} ({where})', _divisors(gcd(h, w))
        else:
            bad = [(d, wd) for d, wd in divisors if d % ph or d % pw]
            if not bad:
                continue
            d, wd = bad[0]
            what = f'the test input of {config}, padded to a multiple of {d} ({wd})'
            valid = _divisors(gcd(*[d for d, _ in divisors]))
        raise ValueError(f'{flag} {tag}: patch size {tag} does not divide {what}; valid patch sizes: '
                         f'{", ".join(map(str, valid))}')
