"""Every shipped config parses and builds its model (real ViT-B configs included)."""
import glob
import os.path as osp

import pytest
from conftest import ROOT
from mmengine.config import Config
from mmengine.registry import MODELS, DefaultScope, init_default_scope

from flexitransfer.deploy import walk_backbone_cfgs
from flexitransfer.engine import flexi_modules

CONFIGS = sorted(p for p in glob.glob(osp.join(ROOT, 'configs', '*', '*.py')) if '/_base_/' not in p)


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: osp.relpath(p, osp.join(ROOT, 'configs')))
def test_config_builds(path):
    cfg = Config.fromfile(path)
    DefaultScope._instance_dict.clear()
    init_default_scope(cfg.get('default_scope', 'mmengine'))
    needed = ('test_dataloader', 'test_evaluator', 'test_cfg')
    if 'train_cfg' in cfg:  # a training config (the zero-shot one is test-only)
        needed += ('train_dataloader', 'optim_wrapper', 'val_cfg')
    for key in needed:
        assert key in cfg, f'{path} lacks {key}'
    assert cfg.test_cfg['type'] == 'MultiPatchTestLoop' and cfg.test_cfg['patch_sizes']
    assert list(walk_backbone_cfgs(cfg.model)), 'no FlexiViT in the model'
    model = MODELS.build(cfg.model)  # construction only: init_weights (pretrained files) is not called
    assert flexi_modules(model)
    DefaultScope._instance_dict.clear()
