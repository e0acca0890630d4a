"""int8 static (QDQ, the layout onnxruntime's QDQ quantizer writes): activations uint8 per tensor
(asymmetric, ranges from calibration), weights int8 symmetric per output channel.

  X  -> QuantizeLinear(X, sx, zx) -> DequantizeLinear(., sx, zx) -> op     (one pair per X)
  Wq -> DequantizeLinear(Wq, w_scale [C], w_zero int8 zeros [C], axis) -> op
axis = 1 for MatMul weights [K, N] (and Gemm transB=0), 0 for Conv [M, C/g, kh, kw] and Gemm
transB=1. Biases (Conv's B, Gemm's C, Add nodes) stay float; op outputs are not re-quantized.
Scale rule: range [min(lo, 0), max(hi, 0)], sx = (hi - lo) / 255, zx = clip(rint(-lo / sx),
0, 255) (a range of width 0 gets sx = 1, zx = 0).
"""

from __future__ import annotations

import numpy as np

from ember.quantize.dynamic import quantize_weight_int8
from ember.quantize.select import Decision, display_name


def activation_qparams(lo, hi):
    """(scale float32, zero point uint8) of the uint8 range covering [lo, hi] and 0."""
    lo, hi = np.float32(min(float(lo), 0.0)), np.float32(max(float(hi), 0.0))
    scale = np.float32((hi - lo) / np.float32(255.0))
    if not scale > 0 or not np.isfinite(scale):
        return np.float32(1.0), np.uint8(0)
    zp = np.clip(np.rint(-lo / scale), 0, 255)
    return scale, np.uint8(zp)


def apply(ed, layers, config, ranges):
    """Inserts Q/DQ around each layer; ranges: {activation name: (lo, hi)} -> [Decision]."""
    if not layers:
        return []
    acts = {}                       # x -> dequantized name
    weights = {}                    # (w, axis) -> dequantized weight name
    decisions = []
    for L in layers:
        n = L.node
        if L.x not in acts:
            scale, zp = activation_qparams(*ranges[L.x])
            sx = ed.add_init(f"{L.x}_scale", np.array(scale, np.float32))
            zx = ed.add_init(f"{L.x}_zero_point", np.array(zp, np.uint8))
            xq, xdq = ed.fresh(f"{L.x}_QuantizeLinear"), ed.fresh(f"{L.x}_DequantizeLinear")
            ed.add_node(n, "QuantizeLinear", [L.x, sx, zx], [xq], f"{L.x}/QuantizeLinear")
            ed.add_node(n, "DequantizeLinear", [xq, sx, zx], [xdq], f"{L.x}/DequantizeLinear")
            acts[L.x] = xdq
        axis = 1 if L.kn else 0
        key = (L.w, axis)
        if key not in weights:
            w = ed.const_array(L.w)
            wq, ws = quantize_weight_int8(w, config.per_channel, axis=axis)
            names = [ed.add_init(f"{L.w}_int8", wq), ed.add_init(f"{L.w}_scale", ws),
                     ed.add_init(f"{L.w}_zero_point", np.zeros(ws.shape, np.int8))]
            wdq = ed.fresh(f"{L.w}_DequantizeLinear")
            ed.add_node(n, "DequantizeLinear", names, [wdq], f"{L.w}/DequantizeLinear", axis=axis)
            weights[key] = wdq
        # The op itself keeps its name, attributes and outputs: only its two inputs change.
        n.input[0] = acts[L.x]
        n.input[1] = weights[key]
        ed.touch(L.w)
        decisions.append(Decision(display_name(n), n.op_type, True, "", "int8-static",
                                  tuple(L.shape), n.output[0]))
    return decisions
