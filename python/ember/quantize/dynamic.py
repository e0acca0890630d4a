"""int8 dynamic (W8A8): per-token activation scales computed in the graph, per-channel weights.

For MatMul(X, W) with W [K, N] (Gemm: transB=1 weights are transposed here, alpha = beta = 1):
  weights  w_scale[n] = max(max_k |W[k, n]| / 127, FLT_MIN); Wq = clip(rint(W / w_scale), ±127)
  per X    s  = Max(Div(ReduceMax(Abs(X), axes=[-1], keepdims=1), 127), FLT_MIN)
           xq = Cast(Clip(Round(Div(X, s)), -127, 127), INT8)       (shared by X's readers)
  per op   y  = Mul(Mul(Cast(MatMulInteger(xq, Wq), FLOAT), s), w_scale)
where y is the original output (a Gemm's C is added after: y = Add(that, C)). This exact node
shape is what ember's C++ fusion pass matches into one QMatMul kernel; onnxruntime runs it as is.
"""

from __future__ import annotations

import numpy as np

from ember.quantize.graph import default_opset
from ember.quantize.select import Decision, display_name

FLT_MIN = np.float32(np.finfo(np.float32).tiny)


def quantize_weight_int8(w, per_channel=True, axis=1):
    """Symmetric int8 along `axis` (the output channels) -> (Wq int8, scale float32 [channels]).

    scale = max(amax / 127, FLT_MIN) in float32; Wq = clip(round-half-even(W / scale), ±127).
    per_channel=False uses one scale (the tensor's amax) repeated for every channel.
    """
    w = np.asarray(w, dtype=np.float32)
    other = tuple(a for a in range(w.ndim) if a != axis)
    amax = np.abs(w).max(axis=other) if w.size else np.zeros(w.shape[axis], np.float32)
    if not per_channel:
        amax = np.full_like(amax, amax.max() if amax.size else 0.0)
    scale = np.maximum(amax.astype(np.float32) / np.float32(127.0), FLT_MIN).astype(np.float32)
    bshape = [1] * w.ndim
    bshape[axis] = -1
    q = np.clip(np.rint(w / scale.reshape(bshape)), -127, 127).astype(np.int8)
    return q, scale


def _activation_quant(ed, before, x, consts):
    """Emits the shared per-token quantizer of x -> (xq name, s name)."""
    from onnx import TensorProto

    base = f"{x}/quant"
    a, am, s0, s, xd, xr, xc, xq = (ed.fresh(f"{x}_{sfx}") for sfx in (
        "abs", "absmax", "scale0", "scale", "div", "round", "clip", "q"))
    ed.add_node(before, "Abs", [x], [a], f"{base}/Abs")
    if default_opset(ed.model) >= 18:
        ed.add_node(before, "ReduceMax", [a, consts["axes"]], [am], f"{base}/ReduceMax",
                    keepdims=1)
    else:
        ed.add_node(before, "ReduceMax", [a], [am], f"{base}/ReduceMax", axes=[-1], keepdims=1)
    ed.add_node(before, "Div", [am, consts["c127"]], [s0], f"{base}/Div_127")
    ed.add_node(before, "Max", [s0, consts["cmin"]], [s], f"{base}/Max")
    ed.add_node(before, "Div", [x, s], [xd], f"{base}/Div")
    ed.add_node(before, "Round", [xd], [xr], f"{base}/Round")
    ed.add_node(before, "Clip", [xr, consts["cneg127"], consts["c127"]], [xc], f"{base}/Clip")
    ed.add_node(before, "Cast", [xc], [xq], f"{base}/Cast", to=TensorProto.INT8)
    return xq, s


def apply(ed, layers, config):
    """Rewrites each layer (MatMul / Gemm) as the int8 dynamic pattern -> [Decision]."""
    from onnx import TensorProto

    if not layers:
        return []
    consts = {
        "c127": ed.add_init("quant_c127", np.array(127.0, np.float32)),
        "cneg127": ed.add_init("quant_cneg127", np.array(-127.0, np.float32)),
        "cmin": ed.add_init("quant_flt_min", np.array(FLT_MIN, np.float32)),
    }
    if default_opset(ed.model) >= 18:
        consts["axes"] = ed.add_init("quant_axes_last", np.array([-1], np.int64))
    acts = {}                       # x -> (xq, s)
    weights = {}                    # (w, kn) -> (Wq name, w_scale name)
    decisions = []
    for L in layers:
        n = L.node
        if L.x not in acts:
            acts[L.x] = _activation_quant(ed, n, L.x, consts)
        xq, s = acts[L.x]
        key = (L.w, L.kn)
        if key not in weights:
            w = ed.const_array(L.w)
            wq, ws = quantize_weight_int8(w if L.kn else w.T, config.per_channel, axis=1)
            weights[key] = (ed.add_init(f"{L.w}_int8", wq), ed.add_init(f"{L.w}_scale", ws))
        wq, ws = weights[key]
        y = n.output[0]
        name = n.name or display_name(n)
        acc, accf, y1 = (ed.fresh(f"{y}_{sfx}") for sfx in ("acc", "accf", "xscaled"))
        has_bias = n.op_type == "Gemm" and len(n.input) > 2 and n.input[2]
        y0 = ed.fresh(f"{y}_nobias") if has_bias else y
        ed.replace(n)
        ed.add_node(n, "MatMulInteger", [xq, wq], [acc], name)
        ed.add_node(n, "Cast", [acc], [accf], f"{name}/Cast", to=TensorProto.FLOAT)
        ed.add_node(n, "Mul", [accf, s], [y1], f"{name}/Mul_xscale")
        ed.add_node(n, "Mul", [y1, ws], [y0], f"{name}/Mul_wscale")
        if has_bias:
            ed.add_node(n, "Add", [y0, n.input[2]], [y], f"{name}/Add_bias")
        decisions.append(Decision(display_name(n), n.op_type, True, "", "int8-dynamic",
                                  tuple(L.shape), n.output[0]))
    return decisions
