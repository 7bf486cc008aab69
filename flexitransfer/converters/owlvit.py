"""OWL-ViT checkpoints in the transformers layout -> ``OWLViTDetector``.

Source names (``OwlViTForObjectDetection.state_dict()``): ``owlvit.vision_model.*``,
``owlvit.text_model.*``, ``owlvit.text_projection``, ``owlvit.visual_projection`` (unused by
detection), ``owlvit.logit_scale`` (unused), ``layer_norm``, ``box_head.dense{0,1,2}``,
``class_head.{dense0,logit_shift,logit_scale}``.

Vision tower -> FlexiViT: CLIP layout (class embedding with its own position embedding, no
patch bias, ``pre_layernorm`` -> ``norm_pre``, ``post_layernorm`` -> the final norm, applied
to every token as the detector does), q/k/v concatenated into timm's ``qkv``. The kernel and
position grid stay at the checkpoint's own size (e.g. 32x32, 24x24 at 768 px), so at its own
patch and image size the FlexiViT reproduces the checkpoint exactly; other patch sizes go
through PI-resize of the kernel and bilinear resize of the grid (``flexitransfer.ops``).

Text tower -> open_clip ``TextTransformer`` (``OpenCLIPTextTower.text``). Both are the CLIP
text transformer: token + learned position embeddings, pre-LN residual blocks with a causal
mask, final LayerNorm, the feature of the EOT token (argmax of the token ids, EOT = 49407 is
the largest id) and a bias-free projection (transformers ``Linear`` weight = open_clip's
``text_projection`` transposed). Padding: transformers also passes a padding mask, which
changes nothing at or before EOT under the causal mask, so the pooled features agree.
"""
from __future__ import annotations

from typing import Dict

import torch

from .common import Converted, _arch, _square_grid

_ACTS = {'quick_gelu': 'quick_gelu', 'gelu': 'gelu', 'gelu_new': 'gelu_tanh', 'gelu_pytorch_tanh': 'gelu_tanh'}


def _cfg_get(cfg, section: str, key: str, default):
    if cfg is None:
        return default
    sub = cfg.get(section) if isinstance(cfg, dict) else getattr(cfg, section, None)
    if sub is None:
        return default
    val = sub.get(key) if isinstance(sub, dict) else getattr(sub, key, None)
    return default if val is None else val


def _layers(sd: dict, prefix: str) -> int:
    n = 0
    while f'{prefix}encoder.layers.{n}.layer_norm1.weight' in sd:
        n += 1
    return n


def convert_owlvit(state_dict: dict, config=None) -> Converted:
    """Returns (detector state dict, ``OWLViTDetector`` kwargs (backbone, text_tower, merge_norm_eps),
    extras). ``config``: the transformers ``OwlViTConfig`` or its ``config.json`` dict (heads,
    activation, eps); without it heads = width // 64 and the activation is QuickGELU (every released
    OWL-ViT).

    Args:
        state_dict (dict): the transformers ``OwlViTForObjectDetection`` state dict.
        config (transformers.OwlViTConfig | dict, optional): its config (or ``config.json`` dict).

    Returns:
        tuple: ``(state_dict, kwargs, extras)``: the ``OWLViTDetector``'s tensors, its arguments, and
        tensors no module takes.

    Raises:
        KeyError: not an ``OwlViTForObjectDetection`` state dict.
    """
    sd_in = {k.replace('module.', '', 1): v for k, v in state_dict.items()}
    need = ['owlvit.vision_model.embeddings.patch_embedding.weight',
            'owlvit.text_model.embeddings.token_embedding.weight',
            'owlvit.text_projection.weight', 'layer_norm.weight', 'box_head.dense0.weight', 'class_head.dense0.weight']
    missing = [k for k in need if k not in sd_in]
    if missing:
        raise KeyError(f'not a transformers OwlViTForObjectDetection state dict: missing {missing} '
                       f'(keys start {sorted(sd_in)[:5]})')
    t = sd_in.__getitem__
    out: Dict[str, torch.Tensor] = {}

    # ---------------------------------------------------------------- vision
    v = 'owlvit.vision_model.'
    kernel = t(v + 'embeddings.patch_embedding.weight')
    dims = kernel.shape[0]
    pe = t(v + 'embeddings.position_embedding.weight')
    vl = _layers(sd_in, v)
    bb = {'patch_embed.weight': kernel, 'cls_token': t(v + 'embeddings.class_embedding').reshape(1, 1, dims),
          'cls_pos_embed': pe[:1].reshape(1, 1, dims), 'pos_embed': pe[1:].reshape(1, -1, dims),
          'norm_pre.weight': t(v + 'pre_layernorm.weight'), 'norm_pre.bias': t(v + 'pre_layernorm.bias'),
          'norm.weight': t(v + 'post_layernorm.weight'), 'norm.bias': t(v + 'post_layernorm.bias')}
    for i in range(vl):
        p, q = f'{v}encoder.layers.{i}.', f'blocks.{i}.'
        for a, b in (('layer_norm1', 'norm1'), ('layer_norm2', 'norm2'), ('self_attn.out_proj', 'attn.proj'),
                     ('mlp.fc1', 'mlp.fc1'), ('mlp.fc2', 'mlp.fc2')):
            bb[q + b + '.weight'], bb[q + b + '.bias'] = t(p + a + '.weight'), t(p + a + '.bias')
        for s in ('weight', 'bias'):
            bb[q + 'attn.qkv.' + s] = torch.cat([t(p + f'self_attn.{n}_proj.{s}') for n in 'qkv'])
    out.update({'backbone.' + k: x for k, x in bb.items()})
    vact = _cfg_get(config, 'vision_config', 'hidden_act', 'quick_gelu')
    if vact not in _ACTS:
        raise ValueError(f'OWL-ViT vision hidden_act {vact!r} is not supported ({sorted(_ACTS)})')
    veps = float(_cfg_get(config, 'vision_config', 'layer_norm_eps', 1e-5))
    backbone = dict(type='FlexiViT', arch=_arch(dims, vl, int(_cfg_get(config, 'vision_config', 'num_attention_heads',
                                                                         max(1, dims // 64))),
                                                bb['blocks.0.mlp.fc1.weight'].shape[0]),
                    patch_size=tuple(kernel.shape[-2:]), base_patch_size=tuple(kernel.shape[-2:]),
                    base_pos_grid=_square_grid(pe.shape[0] - 1, 'position_embedding'), with_cls_token=True,
                    pos_embed_cls=True, patch_bias=False, pre_norm=True, final_norm=True, act=_ACTS[vact],
                    norm_eps=veps)

    # ------------------------------------------------------------------ text
    x = 'owlvit.text_model.'
    tok = t(x + 'embeddings.token_embedding.weight')
    width = tok.shape[1]
    tl = _layers(sd_in, x)
    tx = {'token_embedding.weight': tok, 'positional_embedding': t(x + 'embeddings.position_embedding.weight'),
          'ln_final.weight': t(x + 'final_layer_norm.weight'), 'ln_final.bias': t(x + 'final_layer_norm.bias'),
          'text_projection': t('owlvit.text_projection.weight').T.contiguous()}
    for i in range(tl):
        p, q = f'{x}encoder.layers.{i}.', f'transformer.resblocks.{i}.'
        for a, b in (('layer_norm1', 'ln_1'), ('layer_norm2', 'ln_2'), ('self_attn.out_proj', 'attn.out_proj'),
                     ('mlp.fc1', 'mlp.c_fc'), ('mlp.fc2', 'mlp.c_proj')):
            tx[q + b + '.weight'], tx[q + b + '.bias'] = t(p + a + '.weight'), t(p + a + '.bias')
        tx[q + 'attn.in_proj_weight'] = torch.cat([t(p + f'self_attn.{n}_proj.weight') for n in 'qkv'])
        tx[q + 'attn.in_proj_bias'] = torch.cat([t(p + f'self_attn.{n}_proj.bias') for n in 'qkv'])
    out.update({'text_tower.text.' + k: y for k, y in tx.items()})
    tact = _cfg_get(config, 'text_config', 'hidden_act', 'quick_gelu')
    if tact not in ('quick_gelu', 'gelu'):
        raise ValueError(f'OWL-ViT text hidden_act {tact!r}: the open_clip tower supports quick_gelu or gelu')
    teps = float(_cfg_get(config, 'text_config', 'layer_norm_eps', 1e-5))
    if abs(teps - 1e-5) > 1e-12:
        raise ValueError(f'OWL-ViT text layer_norm_eps {teps}: open_clip\'s text LayerNorm uses 1e-5')
    text_tower = dict(type='OpenCLIPTextTower', width=width,
                      heads=int(_cfg_get(config, 'text_config', 'num_attention_heads', max(1, width // 64))),
                      layers=tl, context_length=tx['positional_embedding'].shape[0], vocab_size=tok.shape[0],
                      output_dim=tx['text_projection'].shape[1],
                      mlp_ratio=tx['transformer.resblocks.0.mlp.c_fc.weight'].shape[0] / width,
                      quick_gelu=tact == 'quick_gelu')

    # ----------------------------------------------------------------- heads
    for k in ('layer_norm.weight', 'layer_norm.bias'):
        out[k] = t(k)
    for k, y in sd_in.items():
        if k.startswith(('box_head.', 'class_head.')):
            out[k] = y
    extras = {k: sd_in[k] for k in ('owlvit.visual_projection.weight', 'owlvit.logit_scale') if k in sd_in}
    kwargs = dict(backbone=backbone, text_tower=text_tower, merge_norm_eps=veps)
    return out, kwargs, extras


def save_owlvit(converted: Converted, dst: str) -> None:
    """mmengine-style checkpoint (``state_dict`` with detector keys, ``meta`` with the model kwargs).

    Args:
        converted (tuple): :func:`convert_owlvit`'s result.
        dst (str): the checkpoint file to write.
    """
    import os
    sd, kw, extras = converted
    meta = {'owlvit_detector_kwargs': kw, 'converted_from': 'owlvit'}
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    torch.save({'state_dict': {k: v.contiguous() for k, v in sd.items()},
                'extras': {k: v.contiguous() for k, v in extras.items()}, 'meta': meta}, dst)
