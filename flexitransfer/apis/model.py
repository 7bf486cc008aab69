"""Build a model from a config and a checkpoint: the one way in (as mmdet's ``init_detector`` /
mmseg's ``init_model``), strict by default."""
from __future__ import annotations

import copy
import os.path as osp
from typing import Optional, Union

import torch
import torch.nn as nn
from mmengine.config import Config

from ..engine.checkpoint import load_weights
from ..engine.patch_size import set_patch_size


def load_config(config: Union[str, Config], cfg_options: Optional[dict] = None) -> Config:
    """A Config from a path (or a copy of a Config), ``cfg_options`` merged; a missing file is one line.

    Args:
        config (str | os.PathLike | mmengine.Config): a config file, or a Config (copied, not changed).
        cfg_options (dict, optional): dotted keys -> values to merge in (``--cfg-options``).

    Returns:
        mmengine.Config: the config.

    Raises:
        FileNotFoundError: no such config file.
        TypeError: ``config`` is neither a path nor a Config.
    """
    if isinstance(config, (str, bytes)) or hasattr(config, '__fspath__'):
        path = str(config)
        if not osp.isfile(path):
            raise FileNotFoundError(f'config file not found: {path!r}; configs live under configs/<task>/ '
                                    f'(e.g. configs/seg/tiny_seg_flexi.py)')
        cfg = Config.fromfile(path)
    elif isinstance(config, Config):
        cfg = copy.deepcopy(config)
    else:
        raise TypeError(f'config must be a file path or an mmengine Config, got {type(config).__name__}')
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def without_pretrained(model_cfg) -> None:
    """Drop the loading of pretrained parts (backbones, text towers, teachers) from a model config in
    place: a trained checkpoint holds every tensor, and the pretrained files need not exist.

    Args:
        model_cfg (dict): a config's ``model`` (changed in place).
    """
    stack = [model_cfg]  # every FlexiViT (locked ones too) and text tower, wherever it sits
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get('type') == 'OpenCLIPTextTower':
                node['checkpoint'] = None
            if node.get('type') == 'FlexiViT':
                node['pretrained'] = None
            stack.extend(node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend(node)


def _scope(cfg: Config) -> str:
    from mmengine.registry import init_default_scope
    scope = cfg.get('default_scope', 'mmengine')
    init_default_scope(scope)
    return scope


def _dataset_meta(cfg: Config, meta: dict):
    if meta.get('dataset_meta'):
        return meta['dataset_meta']
    for key in ('test_dataloader', 'val_dataloader'):
        ds = (cfg.get(key) or {}).get('dataset') or {}
        if ds.get('metainfo'):
            return dict(ds['metainfo'])
    ds = (cfg.get('test_dataloader') or {}).get('dataset') or {}
    if isinstance(ds.get('type'), str):  # the dataset class's own classes / palette (mmseg's ADE20KDataset, ...)
        from mmengine.registry import DATASETS
        cls = DATASETS.get(ds['type'])
        if cls is not None and getattr(cls, 'METAINFO', None):
            return copy.deepcopy(dict(cls.METAINFO))
    return None


def init_model(config: Union[str, Config], checkpoint: Optional[str] = None, device: Union[str, torch.device] = 'cpu',
               patch_size=None, strict: bool = True, cfg_options: Optional[dict] = None) -> nn.Module:
    """A model ready for inference: built from ``config`` in its default scope, weights from
    ``checkpoint`` (strict: a missing or unexpected tensor is an error naming it; ``strict=False``
    loads what fits, on purpose), on ``device``, in eval mode, at ``patch_size`` (default: the
    config's). Without a checkpoint the model is initialised as for training (pretrained parts
    loaded). The config is kept as ``model.cfg`` and the classes as ``model.dataset_meta``, as
    mmdet's / mmseg's ``init_*`` do, so their inferencers and ``inference_*`` take the model.

    Args:
        config (str | mmengine.Config): the config file or Config.
        checkpoint (str, optional): the trained weights. Default: none (initialised as for training).
        device (str | torch.device): where the model goes. Default: 'cpu'.
        patch_size (int | tuple[int, int], optional): the patch its FlexiViTs run at. Default: the config's.
        strict (bool): every tensor of the model must be in the checkpoint and no other. Default: True.
        cfg_options (dict, optional): config overrides, as :func:`load_config`'s.

    Returns:
        nn.Module: the task model, in eval mode, with ``cfg`` and ``dataset_meta`` set.
    """
    from mmengine.registry import MODELS
    cfg = load_config(config, cfg_options)
    _scope(cfg)
    if checkpoint is not None:
        without_pretrained(cfg.model)
    model = MODELS.build(cfg.model)
    meta = {}
    if checkpoint is not None:
        meta = load_weights(model, checkpoint, strict=strict)
    else:
        model.init_weights()
    model.cfg = cfg
    model.dataset_meta = _dataset_meta(cfg, meta)
    if patch_size is not None:
        set_patch_size(model, patch_size)
    return model.to(device).eval()
