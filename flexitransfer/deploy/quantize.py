"""Dynamic int8 quantisation of an exported graph's linear layers (ONNX Runtime's quantiser).

Weights of every MatMul / Gemm with a constant right-hand side (the linear layers: qkv,
attention projection, MLP, heads) are stored as int8; activations are quantised to uint8
per call (dynamic), so no calibration data is needed. Attention's activation x activation
products, convolutions (patch embedding), LayerNorm and softmax stay fp32.
"""
from __future__ import annotations

import collections
import logging
import os
from typing import Dict

from .export import META_PREFIX

QUANTIZED_OPS = ('MatMul', 'Gemm')


def quantize_int8(src: str, dst: str, per_channel: bool = True, reduce_range: bool = False) -> Dict[str, int]:
    """Write the int8 version of ``src`` to ``dst``; returns the op-type counts of the result.

    ``per_channel`` keeps one weight scale per output channel (more accurate, same speed);
    ``reduce_range`` uses 7-bit weights, which avoids int16 saturation in the AVX2 u8 x s8
    kernels of CPUs without VNNI if a large accuracy drop shows up.
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
                         extra_options={'MatMulConstBOnly': True})
    finally:
        logging.getLogger().setLevel(quiet)
    src_m, m = onnx.load(src), onnx.load(dst)
    keep = {p.key: p.value for p in m.metadata_props}
    del m.metadata_props[:]
    for p in src_m.metadata_props:  # the output nesting etc. travel with the graph
        keep[p.key] = p.value
    keep[META_PREFIX + 'precision'] = 'int8-dynamic'
    for k, v in keep.items():
        q = m.metadata_props.add()
        q.key, q.value = k, v
    onnx.save(m, dst)
    counts = collections.Counter(n.op_type for n in m.graph.node)
    if not (counts.get('MatMulInteger') or counts.get('DynamicQuantizeMatMul')):
        raise RuntimeError(f'{src}: the quantiser found no linear layer to quantise (op types: {dict(counts)})')
    return dict(counts)
