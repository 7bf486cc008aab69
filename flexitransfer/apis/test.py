"""The test loop as ``tools/test.py`` runs it: prepare the config, build the runner, load the
checkpoint strictly, evaluate once per patch size."""
from __future__ import annotations

import contextlib
import copy
import io
import numbers
import os.path as osp
import sys
import tempfile
import uuid
from typing import Callable, Optional, Sequence

from ..engine.checkpoint import load_state, read_state_dict
from ..engine.console import quiet_runner, unquiet_console
from ..engine.workers import shut_down_workers
from ..evaluation.main_metric import percent_evaluator
from .model import without_pretrained


def default_work_dir(config_path: str) -> str:
    """``work_dirs/<config name>``, mmengine's convention.

    Args:
        config_path (str): the config file.

    Returns:
        str: the work directory.
    """
    return osp.join('work_dirs', osp.splitext(osp.basename(config_path))[0])


def prepare_test_cfg(cfg, patch_sizes: Optional[Sequence] = None, work_dir: Optional[str] = None,
                     data_root: Optional[str] = None, log_level: Optional[str] = None):
    """A copy of ``cfg`` ready for testing: the multi-patch test loop (at ``patch_sizes`` if given),
    no pretrained loading (the checkpoint holds every tensor; it is loaded strictly by
    :func:`build_test_runner`, not by mmengine's lenient ``load_from``), its own visualizer.

    Args:
        cfg (mmengine.Config): the model's config (not changed).
        patch_sizes (Sequence, optional): patch sizes to test at. Default: the config's test loop's.
        work_dir (str, optional): the runner's work directory. Default: the config's, else a temporary one.
        data_root (str, optional): the test set's folder, if not the config's.
        log_level (str, optional): the runner's log level. Default: the config's.

    Returns:
        mmengine.Config: the test config.
    """
    cfg = copy.deepcopy(cfg)
    cfg.work_dir = work_dir or cfg.get('work_dir') or tempfile.mkdtemp(prefix='ft_test_')
    test_cfg = dict(cfg.get('test_cfg') or {})
    if test_cfg.get('type', 'TestLoop') in ('TestLoop', None):
        test_cfg['type'] = 'MultiPatchTestLoop'
    if patch_sizes:
        test_cfg['patch_sizes'] = list(patch_sizes)
    cfg.test_cfg = test_cfg
    cfg.load_from, cfg.resume = None, False
    without_pretrained(cfg.model)
    if data_root:
        cfg.test_dataloader.dataset.data_root = data_root
    if log_level:
        cfg.log_level = log_level
    # A visualizer is a process-wide singleton looked up by name, and mmengine names a default one by the
    # second the runner starts: two test runners in one second (two quick evaluations) would share the
    # first one, whose temporary directory may be gone. One uniquely named visualizer per runner.
    if not isinstance(cfg.get('visualizer'), dict):
        cfg.visualizer = dict(type='Visualizer', vis_backends=[dict(type='LocalVisBackend')])
    cfg.visualizer['name'] = f"{cfg.visualizer.get('name', 'visualizer')}_{uuid.uuid4().hex[:8]}"
    return cfg


def build_test_runner(cfg, checkpoint: str, strict: bool = True, prepared: bool = False, quiet: bool = False,
                      **prepare_kwargs):
    """An mmengine Runner for ``cfg`` (prepared by :func:`prepare_test_cfg` unless ``prepared``) with
    ``checkpoint`` loaded strictly into its model. Its test metrics are in percent (:func:`to_percent`: COCO /
    LVIS AP too). ``quiet``: the console shows progress and tables only (the log file keeps everything).

    Args:
        cfg (mmengine.Config): the model's config.
        checkpoint (str): the trained weights.
        strict (bool): every tensor of the model must be in the checkpoint and no other. Default: True.
        prepared (bool): ``cfg`` is already a test config (from :func:`prepare_test_cfg`). Default: False.
        quiet (bool): keep the runner's set-up messages off the console. Default: False.
        **prepare_kwargs: :func:`prepare_test_cfg`'s arguments (``patch_sizes``, ``work_dir``, ...).

    Returns:
        mmengine.runner.Runner: ``runner.test()`` runs the multi-patch test loop.
    """
    from mmengine.runner import Runner
    weights = read_state_dict(checkpoint)  # a missing / broken file fails before the runner prints its set-up
    if not prepared:
        cfg = prepare_test_cfg(cfg, **prepare_kwargs)
    runner = (quiet_runner(Runner) if quiet else Runner).from_cfg(cfg)
    load_state(runner.model, weights, checkpoint, strict=strict)
    build_loop = runner.build_test_loop

    def build_percent_loop(loop):  # mmengine builds the loop (data, evaluator) lazily, at test(): so do we
        with contextlib.redirect_stdout(io.StringIO() if quiet else sys.stdout) as said:  # pycocotools' "loading..."
            loop = build_loop(loop)
        _log_only(runner, said.getvalue() if quiet else '')
        percent_evaluator(loop.evaluator, runner.logger)  # one unit for every metric (the multi-patch loop's own)
        return loop
    runner.build_test_loop = build_percent_loop
    return runner


def _log_only(runner, text: str) -> None:
    if text.strip():
        runner.logger.info(text.rstrip(), extra={'console': False})


def evaluate(cfg, checkpoint: str, patch_sizes: Optional[Sequence] = None, data_root: Optional[str] = None,
             log_level: str = 'WARNING', strict: bool = True,
             before_test: Optional[Callable] = None, quiet: bool = True) -> dict:
    """Test-set metrics (as ``runner.test()`` returns them, in percent) of ``checkpoint``; ``before_test(runner)``
    may change the loaded model first (e.g. run part of it in ONNX Runtime). ``quiet``: the runner's set-up
    warnings (OpenMMLab deprecations, repeated by every runner) and pycocotools' prints stay off the terminal.

    Args:
        cfg (mmengine.Config): the model's config.
        checkpoint (str): the trained weights.
        patch_sizes (Sequence, optional): patch sizes to test at. Default: the config's test loop's.
        data_root (str, optional): the test set's folder, if not the config's.
        log_level (str): the runner's log level. Default: 'WARNING'.
        strict (bool): every tensor of the model must be in the checkpoint and no other. Default: True.
        before_test (Callable, optional): ``before_test(runner)``, called once the checkpoint is loaded.
        quiet (bool): see above. Default: True.

    Returns:
        dict: metric name -> value in percent: ``p<size>/<name>`` per patch size, and the first patch
        size's also under their plain names.
    """
    with tempfile.TemporaryDirectory(prefix='ft_eval_') as work_dir:
        runner = build_test_runner(cfg, checkpoint, strict=strict, patch_sizes=patch_sizes, work_dir=work_dir,
                                   data_root=data_root, log_level=log_level, quiet=quiet)
        try:
            if before_test is not None:
                before_test(runner)
            metrics = runner.test()
        finally:
            unquiet_console(runner.logger)
            shut_down_workers(runner, ('test',))  # before its work dir goes; killed at exit they leave /tmp/pymp-*
    return {k: float(v) for k, v in metrics.items() if isinstance(v, numbers.Real)}
