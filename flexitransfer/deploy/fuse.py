"""Transformer fusions in an exported graph: each block's attention as one ``Attention`` (or
``MultiHeadAttention``) node, LayerNorm, skip-LayerNorm and bias-GELU fused (ONNX Runtime's
``onnxruntime.transformers`` optimizer, BERT/ViT patterns).

The optimizer matches the attention of BERT / HF ViT: separate q, k, v projections, ``q @ k^T / sqrt(d)``,
softmax, ``@ v``. timm's blocks project q, k and v with one ``qkv`` linear layer and call
``scaled_dot_product_attention``, which exports as a pattern it does not know; so while a model is
exported, :func:`fusable_attention` swaps each block's attention for :class:`SplitQKVAttention`
(the same weights split in three, the same function up to fp32 rounding), and :func:`fuse_onnx`
rewrites the written file. The fused graph runs in ONNX Runtime only (``com.microsoft`` ops).
"""
from __future__ import annotations

import collections
import contextlib
import io
import logging
import math
from typing import Dict, Iterator

import torch
import torch.nn as nn

ATTENTION_OPS = ('Attention', 'MultiHeadAttention')
FUSED_OPS = ATTENTION_OPS + ('SkipLayerNormalization', 'LayerNormalization', 'BiasGelu', 'FastGelu', 'Gelu')


class SplitQKVAttention(nn.Module):
    """timm's ``Attention`` (no q/k norm, no gate) with separate q, k, v projections and the
    softmax written out: the form ONNX Runtime's attention fusion recognises."""

    def __init__(self, attn: nn.Module):
        super().__init__()
        dim, ad = attn.qkv.in_features, attn.attn_dim
        bias = attn.qkv.bias is not None
        self.num_heads, self.head_dim = attn.num_heads, attn.head_dim
        self.q, self.k, self.v = (nn.Linear(dim, ad, bias=bias).to(attn.qkv.weight) for _ in range(3))
        with torch.no_grad():
            for i, lin in enumerate((self.q, self.k, self.v)):
                lin.weight.copy_(attn.qkv.weight[i * ad:(i + 1) * ad])
                if bias:
                    lin.bias.copy_(attn.qkv.bias[i * ad:(i + 1) * ad])
        self.proj = attn.proj
        self.sqrt_d = math.sqrt(self.head_dim)

    def _heads(self, t: torch.Tensor, b: int, n: int) -> torch.Tensor:
        return t.view(b, n, self.num_heads, self.head_dim).permute(0, 2, 1, 3)

    def forward(self, x: torch.Tensor, attn_mask=None, is_causal: bool = False) -> torch.Tensor:
        if attn_mask is not None or is_causal:
            raise ValueError('SplitQKVAttention (the export form) has no mask')
        b, n, _ = x.shape
        q, k, v = (self._heads(f(x), b, n) for f in (self.q, self.k, self.v))
        scores = torch.matmul(q, k.transpose(-1, -2)) / self.sqrt_d
        out = torch.matmul(scores.softmax(dim=-1), v)
        return self.proj(out.permute(0, 2, 1, 3).reshape(b, n, self.num_heads * self.head_dim))


def splittable(attn: nn.Module) -> bool:
    """Whether ``attn`` is a timm attention that :class:`SplitQKVAttention` reproduces."""
    return (hasattr(attn, 'qkv') and hasattr(attn, 'attn_dim') and getattr(attn, 'gate', None) is None
            and all(isinstance(getattr(attn, n, nn.Identity()), nn.Identity) for n in ('q_norm', 'k_norm', 'norm')))


@contextlib.contextmanager
def fusable_attention(model: nn.Module) -> Iterator[int]:
    """Every FlexiViT block's attention in the fusable form for the duration of the block (in place,
    restored after); yields how many were swapped."""
    from ..models.backbones.flexivit import FlexiViT
    swapped = []
    for m in model.modules():
        if isinstance(m, FlexiViT):
            for blk in m.blocks:
                if splittable(blk.attn):
                    swapped.append((blk, blk.attn))
    for blk, attn in swapped:
        blk.attn = SplitQKVAttention(attn)
    try:
        yield len(swapped)
    finally:
        for blk, attn in swapped:
            blk.attn = attn


def op_counts(model_or_path) -> Dict[str, int]:
    """Op-type counts of an ONNX graph (a path or a ModelProto).

    Args:
        model_or_path (str | onnx.ModelProto): the graph.

    Returns:
        dict[str, int]: op type -> number of nodes.
    """
    import onnx
    m = onnx.load(model_or_path) if isinstance(model_or_path, str) else model_or_path
    return dict(collections.Counter(n.op_type for n in m.graph.node))


def fuse_onnx(path: str, num_heads: int, hidden_size: int, attention_op: str = 'Attention',
              blocks: int = 0) -> Dict[str, int]:
    """Rewrite ``path`` with the transformer fusions; returns the op counts of the result.

    ``attention_op='Attention'`` (packed qkv weights; int8 quantises it to ``QAttention``) or
    ``'MultiHeadAttention'`` (q, k, v projections stay MatMuls). The skip-LayerNorm fusion checks
    shapes with ONNX Runtime's symbolic shape inference, which fails on some heads outside the
    transformer (LiT's normalised embedding); if fewer than ``blocks`` attention nodes come out, the
    fusions run again without it (pre-norm residual adds have equal shapes; ``tools/resize_deploy.py``
    and the tests check every exported graph against PyTorch).

    Args:
        path (str): the .onnx file (rewritten in place).
        num_heads (int): attention heads of the transformer.
        hidden_size (int): its width.
        attention_op (str): 'Attention' or 'MultiHeadAttention'. Default: 'Attention'.
        blocks (int): attention nodes expected (0: no second try). Default: 0.

    Returns:
        dict[str, int]: op type -> number of nodes of the fused graph.

    Raises:
        ValueError: an unknown ``attention_op``.
    """
    import onnx
    if attention_op not in ATTENTION_OPS:
        raise ValueError(f'attention_op must be one of {ATTENTION_OPS}, got {attention_op!r}')
    m = _optimize(path, num_heads, hidden_size, attention_op, shape_inference=True)
    if op_counts(m).get(attention_op, 0) < blocks:
        m2 = _optimize(path, num_heads, hidden_size, attention_op, shape_inference=False)
        if op_counts(m2).get(attention_op, 0) > op_counts(m).get(attention_op, 0):
            m = m2
    if not any(o.domain == 'com.microsoft' for o in m.opset_import):  # the fused ops' domain, for tools that check
        m.opset_import.append(onnx.helper.make_opsetid('com.microsoft', 1))
    onnx.save(m, path)
    return op_counts(m)


def _optimize(path, num_heads, hidden_size, attention_op, shape_inference):
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model
    opts = FusionOptions('vit')
    opts.use_multi_head_attention = attention_op == 'MultiHeadAttention'
    opts.enable_shape_inference = shape_inference
    loggers = [logging.getLogger(n) for n in ('onnxruntime.transformers', 'fusion_skiplayernorm', 'fusion_base',
                                                'onnx_model', 'fusion_attention')]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:  # (its shape inference prints a failure to stdout)
        with contextlib.redirect_stdout(io.StringIO()):
            return optimize_model(path, model_type='vit', num_heads=num_heads, hidden_size=hidden_size,
                                  optimization_options=opts, opt_level=0).model
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)
