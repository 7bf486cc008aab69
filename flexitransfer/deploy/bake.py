"""Bake a patch size into a task model: kernel and position embedding resized once.

The deployed model is an ordinary FlexiViT whose stored kernel is p x p and
whose position grid is (H/p, W/p): at that patch and image size its forward
does no resize work, and it computes what the flexible model computes there.
"""
from __future__ import annotations

import copy
from typing import Optional, Tuple

import torch.nn as nn

from ..engine.patch_size import flexi_modules, walk_backbone_cfgs
from ..models.backbones.flexivit import check_patch_size
from ..ops import to_2tuple


def _replace(root: nn.Module, old: nn.Module, new: nn.Module) -> None:
    for name, mod in root.named_modules():
        for cname, child in mod.named_children():
            if child is old:
                setattr(mod, cname, new)
                return
    raise RuntimeError('module to replace not found')


def bake_model(model: nn.Module, patch_size, img_size) -> nn.Module:
    """A copy of ``model`` with every (unlocked) FlexiViT baked at ``patch_size`` for ``img_size``
    (:meth:`FlexiViT.bake <flexitransfer.models.backbones.flexivit.FlexiViT.bake>`).

    Args:
        model (nn.Module): a task model (or a FlexiViT), at ``patch_size``.
        patch_size (int | tuple[int, int]): the patch to bake in.
        img_size (int | tuple[int, int]): the deployment input size (H, W), a multiple of the patch.

    Returns:
        nn.Module: the baked copy (``model`` is unchanged).

    Raises:
        ValueError: ``model`` holds no FlexiViT, or the patch does not divide the image size.
    """
    model = copy.deepcopy(model)
    mods = flexi_modules(model)
    if not mods:
        raise ValueError(f'{type(model).__name__} has no FlexiViT to deploy')
    for m in mods:
        baked = m.bake(patch_size, img_size)
        if m is model:
            return baked
        _replace(model, m, baked)
    return model


def infer_img_size(cfg) -> Optional[Tuple[int, int]]:
    """The input size a config's model sees at test time (sliding window or fixed size).

    Args:
        cfg (mmengine.Config): the model's config.

    Returns:
        tuple[int, int] | None: (H, W): the sliding window's crop, the config's ``img_size`` /
        ``input_size``, or the data preprocessor's fixed ``size``; None when the config names none.
    """
    model = cfg.get('model', {})
    tc = model.get('test_cfg') or {}
    if tc.get('mode') == 'slide' and tc.get('crop_size'):
        return to_2tuple(tc['crop_size'])
    for key in ('img_size', 'input_size'):
        if cfg.get(key):
            return to_2tuple(cfg[key])
    dp = model.get('data_preprocessor') or {}
    if dp.get('size'):
        return to_2tuple(dp['size'])
    return None


def deploy_config(cfg, patch_size, img_size, checkpoint: str):
    """The config of the deployed model: FlexiViT stored at the target patch/grid, tested at it.

    Args:
        cfg (mmengine.Config): the trained model's config (not changed).
        patch_size (int | tuple[int, int]): the baked patch.
        img_size (int | tuple[int, int]): the deployment input size (H, W).
        checkpoint (str): the baked checkpoint (the config's ``load_from``).

    Returns:
        mmengine.Config: the deployed config: every FlexiViT at the patch and grid (no pretrained
        loading), no random patch-size hook, validation and test at that patch.

    Raises:
        ValueError: the config has no FlexiViT, or the patch does not divide the image size.
    """
    cfg = copy.deepcopy(cfg)
    patch = to_2tuple(patch_size)
    grid = check_patch_size(to_2tuple(img_size), patch)
    found = False
    for _, bb in walk_backbone_cfgs(cfg.model):
        bb.update(patch_size=list(patch), base_patch_size=list(patch), base_pos_grid=list(grid),
                  pretrained=None, init_cfg=None)
        found = True
    if not found:
        raise ValueError('config has no FlexiViT backbone to deploy')
    cfg.custom_hooks = [h for h in cfg.get('custom_hooks', []) if h.get('type') != 'RandomPatchSizeHook']
    for key, loop in (('val_cfg', 'MultiPatchValLoop'), ('test_cfg', 'MultiPatchTestLoop')):
        if cfg.get(key) is not None:
            cfg[key] = dict(type=loop, patch_sizes=[patch[0] if patch[0] == patch[1] else list(patch)])
    cfg.load_from = checkpoint
    cfg.resume = False
    return cfg
