"""Dynamic int8 quantisation of an exported graph's linear layers (ONNX Runtime's quantiser).

Weights of every MatMul / Gemm with a constant right-hand side (attention projection, MLP,
heads) and of every fused ``Attention`` node (its packed qkv projection; the node becomes
``QAttention``) are stored as int8, one scale per output channel; activations are quantised to
uint8 per call (dynamic), so no calibration data is needed. Convolutions (patch embedding),
LayerNorm / skip-LayerNorm, GELU and softmax stay fp32. Quantise the fused graph
(``export_onnx(fuse=True)``, the default), so attention runs as one quantised node.

``reduce_range`` (default on) stores 7-bit weights: the AVX2 u8 x s8 kernels (``vpmaddubsw``) of
CPUs without VNNI add two u8 x s8 products in int16, which saturates with full-range weights
and costs accuracy; with 7 bits the sums fit.
"""
from __future__ import annotations

import collections
import logging
import os
from typing import Dict

from .export import META_PREFIX

QUANTIZED_OPS = ('MatMul', 'Gemm', 'Attention')
INT8_OPS = ('MatMulInteger', 'DynamicQuantizeMatMul', 'QAttention', 'QGemm')


def quantize_int8(src: str, dst: str, per_channel: bool = True, reduce_range: bool = True) -> Dict[str, int]:
    """Write the int8 version of ``src`` to ``dst``; returns the op-type counts of the result.

    ``per_channel`` keeps one weight scale per output channel (more accurate, same speed);
    ``reduce_range`` uses 7-bit weights (no int16 saturation in the AVX2 u8 x s8 kernels of
    CPUs without VNNI; see the module doc).

    Args:
        src (str): the fp32 .onnx file (best the fused one of :func:`export_onnx`).
        dst (str): the int8 .onnx file to write (``src``'s metadata kept, ``precision`` added).
        per_channel (bool): one weight scale per output channel. Default: True.
        reduce_range (bool): 7-bit weights. Default: True.

    Returns:
        dict[str, int]: op type -> number of nodes of the int8 graph.

    Raises:
        FileNotFoundError: no ``src``.
        RuntimeError: nothing in ``src`` was quantised.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    if not os.path.isfile(src):
        raise FileNotFoundError(f'ONNX file to quantise not found: {src!r}')
    quiet = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # the quantiser warns about optional pre-processing
    try:
        quantize_dynamic(src, dst, op_types_to_quantize=list(QUANTIZED_OPS), per_channel=per_channel,
                         reduce_range=reduce_range, weight_type=QuantType.QInt8,
                         extra_options={'MatMulConstBOnly': True,  # fused com.microsoft ops: no ONNX shape inference
                                        'DefaultTensorType': onnx.TensorProto.FLOAT})
    finally:
        logging.getLogger().setLevel(quiet)
    src_m, m = onnx.load(src), onnx.load(dst)
    keep = {p.key: p.value for p in m.metadata_props}
    del m.metadata_props[:]
    for p in src_m.metadata_props:  # the output nesting etc. travel with the graph
        keep[p.key] = p.value
    keep[META_PREFIX + 'precision'] = 'int8-dynamic'
    keep[META_PREFIX + 'int8'] = f'per_channel={per_channel}, reduce_range={reduce_range}'
    for k, v in keep.items():
        q = m.metadata_props.add()
        q.key, q.value = k, v
    onnx.save(m, dst)
    counts = collections.Counter(n.op_type for n in m.graph.node)
    if not any(counts.get(k) for k in INT8_OPS):
        raise RuntimeError(f'{src}: the quantiser found no linear layer to quantise (op types: {dict(counts)})')
    return dict(counts)
