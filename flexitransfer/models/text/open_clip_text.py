"""A reusable text tower: open_clip's ``TextTransformer`` with its bundled BPE tokenizer.

No hub access: the vocabulary ships inside open_clip, and weights come from a
local checkpoint (an open_clip / OpenAI CLIP state dict, or a CustomTextCLIP one
with ``text.*`` keys). Used by LiT retrieval and meant for open-vocabulary
detection heads as well.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence, Union

import torch
from mmengine.model import BaseModule
from mmengine.registry import MODELS
from open_clip.tokenizer import SimpleTokenizer
from open_clip.transformer import QuickGELU, TextTransformer
from torch import nn


def load_open_clip_text_state(path: str) -> dict:
    """Text-tower tensors from a CLIP checkpoint file, with TextTransformer names."""
    from ...converters.reader import read_checkpoint  # every layout: .safetensors, .pth/.bin, hub directories
    if not os.path.exists(path):
        raise FileNotFoundError(f'open_clip text checkpoint not found: {path!r} (save a CLIP state dict with '
                                f'torch.save(model.state_dict(), path) where the hub is reachable)')
    sd = read_checkpoint(path).state_dict
    sd = {k.replace('module.', '', 1): v for k, v in sd.items()}
    if any(k.startswith('text.') for k in sd):  # CustomTextCLIP
        return {k[5:]: v for k, v in sd.items() if k.startswith('text.')}
    keep = ('token_embedding.', 'positional_embedding', 'transformer.', 'ln_final.', 'text_projection')
    out = {k: v for k, v in sd.items() if k.startswith(keep)}
    if 'token_embedding.weight' not in out:
        raise KeyError(f'{path!r} holds no CLIP text tower (no token_embedding.weight)')
    return out


@MODELS.register_module()
class OpenCLIPTextTower(BaseModule):
    """Args mirror open_clip's ``CLIPTextCfg``; ``checkpoint`` is loaded in ``init_weights``."""

    def __init__(self, width: int = 512, heads: int = 8, layers: int = 12, context_length: int = 77,
                 vocab_size: int = 49408, output_dim: int = 512, mlp_ratio: float = 4.0, quick_gelu: bool = False,
                 checkpoint: Optional[str] = None, init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        self.text = TextTransformer(context_length=context_length, vocab_size=vocab_size, width=width, heads=heads,
                                    layers=layers, mlp_ratio=mlp_ratio, output_dim=output_dim,
                                    act_layer=QuickGELU if quick_gelu else nn.GELU)
        self.tokenizer = SimpleTokenizer(context_length=context_length)
        self.context_length = context_length
        self.output_dim = output_dim
        self.checkpoint = checkpoint

    def init_weights(self):
        if self.checkpoint:
            missing, unexpected = self.text.load_state_dict(load_open_clip_text_state(self.checkpoint), strict=False)
            missing = [k for k in missing if k != 'attn_mask']
            if missing or unexpected:
                raise ValueError(f'text checkpoint does not fit the tower: missing {missing[:8]}, '
                                 f'unexpected {unexpected[:8]} (check width/heads/layers/context_length)')

    def tokenize(self, texts: Union[str, Sequence[str]]) -> torch.Tensor:
        return self.tokenizer(list(texts) if not isinstance(texts, str) else texts, self.context_length)

    def forward(self, texts: Union[Sequence[str], torch.Tensor]) -> torch.Tensor:
        """Text features (B, output_dim), not normalised. Takes strings or token ids."""
        tokens = texts if isinstance(texts, torch.Tensor) else self.tokenize(texts)
        return self.text(tokens.to(self.text.positional_embedding.device))
