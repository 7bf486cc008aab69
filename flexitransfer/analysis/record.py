"""Record what a FlexiViT computes inside: the residual stream after every attention and
every MLP sub-block, and every block's attention probabilities.

Forward hooks only, so the model runs its own forward (timm ``Block``):
``x = x + attn(norm1(x)); x = x + mlp(norm2(x))``. The stream after the attention
sub-block is the input of ``norm2``; after the MLP it is the block's output. Attention
probabilities are recomputed from the attention module's input and its ``qkv`` weights
(``attention_probs``), because timm's fused attention (SDPA) never materialises them.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import torch
import torch.nn as nn


def attention_probs(attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Softmax attention (B, heads, N, N) of a timm ``Attention`` module on its input ``x`` (B, N, C).

    The same maths as the module's unfused path: qkv projection, per-head q/k norms,
    scaled dot product, softmax over keys (attention dropout is not applied: eval).
    """
    b, n, _ = x.shape
    qkv = attn.qkv(x).reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k, _ = qkv.unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    return ((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)


def layer_names(num_layers: int) -> List[str]:
    """Names of the recorded representations, in order: the embedded tokens, then per block
    the stream after attention and after the MLP."""
    return ['embed'] + [f'{i}.{part}' for i in range(num_layers) for part in ('attn', 'mlp')]


@dataclass
class Record:
    tokens: 'OrderedDict[str, torch.Tensor]' = field(default_factory=OrderedDict)  # name -> (B, [1+]N, D)
    attn: List[torch.Tensor] = field(default_factory=list)                        # per block (B, H, L, L)
    final: torch.Tensor = None                                                     # after the final norm
    grid: Tuple[int, int] = None
    num_prefix: int = 0


@torch.no_grad()
def record(backbone: nn.Module, x: torch.Tensor, attention: bool = True) -> Record:
    """Run ``backbone.forward_features(x)`` at its current patch size and record its insides.

    ``backbone`` is a ``FlexiViT`` (set its patch size with ``flexitransfer.engine.set_patch_size``).
    """
    rec = Record(num_prefix=backbone.num_prefix_tokens)
    handles = []
    store: Dict[str, torch.Tensor] = {}

    def keep(name):
        def pre_hook(_m, args):
            store[name] = args[0].detach()
        return pre_hook

    def keep_out(name):
        def hook(_m, _args, out):
            store[name] = out.detach()
        return hook

    attn_store: Dict[int, torch.Tensor] = {}

    def keep_attn(i):
        def pre_hook(m, args):
            attn_store[i] = attention_probs(m, args[0]).detach()
        return pre_hook

    try:
        handles.append(backbone.blocks[0].register_forward_pre_hook(keep('embed')))
        for i, blk in enumerate(backbone.blocks):
            handles.append(blk.norm2.register_forward_pre_hook(keep(f'{i}.attn')))
            handles.append(blk.register_forward_hook(keep_out(f'{i}.mlp')))
            if attention:
                handles.append(blk.attn.register_forward_pre_hook(keep_attn(i)))
        rec.final = backbone.forward_features(x).detach()
    finally:
        for h in handles:
            h.remove()
    rec.grid = backbone.grid_size(x.shape[-2:])
    for name in layer_names(len(backbone.blocks)):
        rec.tokens[name] = store[name]
    rec.attn = [attn_store[i] for i in sorted(attn_store)]
    return rec
