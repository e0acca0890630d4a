"""The ONNX op table: which (op type, since_version) pairs ember accepts, and how each
converts to ember's op, which always takes the NEWEST ONNX form of the op.

A node is accepted only when `onnx.defs.get_schema(op, opset).since_version` is listed here,
so a later ONNX version with new semantics is refused until someone reviews it. Versions
below opset 11 (ember's floor) are not listed. Every version reachable from opsets
11..28 is listed for every op (tests/unit/test_import.py checks this); none is rejected.
"""
from __future__ import annotations

import numpy as np

# ONNX TensorProto.DataType -> ember/numpy dtype name. bfloat16 travels as uint16 bits.
ONNX_DTYPES = {
    1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64",
    9: "bool", 10: "float16", 11: "float64", 16: "bfloat16",
}


# ---- handlers ---------------------------------------------------------------------------
# A handler gets the parsed node `n` (op_type, name, since, inputs/outputs as value ids with
# -1 for absent, attrs as converted Python values) and a builder `b` with
# b.node(op, inputs, outputs, attrs), b.const(hint, array) -> value id, b.temp(hint) -> id.

def _same(n, b):
    """The ONNX form at this version is ember's form: pass inputs and attributes through."""
    b.node(n.op_type, n.inputs, n.outputs, n.attrs)


def _drop(*names):
    """Pass through, minus attributes that cannot change the result in ember."""
    def handler(n, b):
        b.node(n.op_type, n.inputs, n.outputs, {k: v for k, v in n.attrs.items() if k not in names})
    return handler


def _attr_to_input(attr, position):
    """Older form with an int list attribute that later became an int64 input (axes, split)."""
    def handler(n, b):
        attrs = dict(n.attrs)
        vals = attrs.pop(attr, None)
        inputs = list(n.inputs)
        if vals is not None:
            while len(inputs) < position:
                inputs.append(-1)
            inputs.insert(position, b.const(f"{n.name}/{attr}", np.asarray(vals, dtype=np.int64)))
        b.node(n.op_type, inputs, n.outputs, attrs)
    return handler


def _reduce_axes_attr(n, b):
    # Before axes became an input, an absent or empty axes attribute meant "all axes"; the
    # new form with no axes input and noop_with_empty_axes=0 means the same.
    attrs = dict(n.attrs)
    axes = attrs.pop("axes", None)
    inputs = list(n.inputs)
    if axes:
        inputs.append(b.const(f"{n.name}/axes", np.asarray(axes, dtype=np.int64)))
    b.node(n.op_type, inputs, n.outputs, attrs)


def _softmax_legacy(n, b):
    # Before opset 13, (Log)Softmax flattened the input to 2-D at `axis` (default 1) and
    # normalised each row; ember implements that behind legacy_axis_2d.
    attrs = {"axis": int(n.attrs.get("axis", 1)), "legacy_axis_2d": 1}
    b.node(n.op_type, n.inputs, n.outputs, attrs)


def _constant_of_shape(n, b):
    value = n.attrs.get("value")
    if value is None or value.dtype != "bfloat16":
        attrs = {} if value is None else {"value": value.array}
        b.node("ConstantOfShape", n.inputs, n.outputs, attrs)
        return
    # A tensor attribute cannot carry the bfloat16 flag: fill in float32 and cast, which is
    # exact (every bfloat16 is a float32).
    f32 = (value.array.astype(np.uint32) << 16).view(np.float32)
    tmp = b.temp(f"{n.name}/f32")
    b.node("ConstantOfShape", n.inputs, [tmp], {"value": f32}, name=f"{n.name}/fill")
    b.node("Cast", [tmp], n.outputs, {"to": 16})


# Cast/CastLike: `saturate` applies only to float8 targets and `round_mode` only to
# float8e8m0, neither of which is an ember dtype (other targets are refused in checks).
_cast = _drop("saturate", "round_mode")

# Dropout 10 has a `ratio` attribute (11 and 12 moved it to an input); in inference, which
# is all ember runs, the op is the identity whatever the ratio, so it is dropped.
_dropout10 = _drop("ratio")


def _table():
    S = _same
    t = {
        # elementwise binary. Versions after 7 only add types (13: bfloat16, 14: 8/16-bit
        # ints; Pow 12/15: exponent types; Equal 19: string).
        "Add": {7: S, 13: S, 14: S}, "Sub": {7: S, 13: S, 14: S},
        "Mul": {7: S, 13: S, 14: S}, "Div": {7: S, 13: S, 14: S},
        "Pow": {7: S, 12: S, 13: S, 15: S},
        "Min": {8: S, 12: S, 13: S}, "Max": {8: S, 12: S, 13: S},
        "Sum": {8: S, 13: S}, "Mean": {8: S, 13: S},
        "Equal": {11: S, 13: S, 19: S}, "Less": {9: S, 13: S}, "Greater": {9: S, 13: S},
        "LessOrEqual": {12: S, 16: S}, "GreaterOrEqual": {12: S, 16: S},
        "And": {7: S}, "Or": {7: S}, "Xor": {7: S},
        # classification: 13 and 20 add types.
        "IsNaN": {9: S, 13: S, 20: S}, "IsInf": {10: S, 20: S},
        # unary: later versions add types only.
        "Sqrt": {6: S, 13: S}, "Exp": {6: S, 13: S}, "Log": {6: S, 13: S},
        "Neg": {6: S, 13: S}, "Abs": {6: S, 13: S}, "Reciprocal": {6: S, 13: S},
        "Erf": {9: S, 13: S}, "Tanh": {6: S, 13: S}, "Sigmoid": {6: S, 13: S},
        "Relu": {6: S, 13: S, 14: S}, "Gelu": {20: S}, "Softplus": {1: S, 22: S},
        "Sin": {7: S, 22: S}, "Cos": {7: S, 22: S}, "Not": {1: S},
        # Identity 14/16 add sequence and optional types (ember runs the tensor case only).
        "Identity": {v: S for v in (1, 13, 14, 16, 19, 21, 23, 24, 25)},
        "Dropout": {10: _dropout10, 12: S, 13: S, 22: S},
        "Clip": {11: S, 12: S, 13: S},  # 11 moved min/max from attributes to inputs
        "Where": {9: S, 16: S},
        "Cast": {v: _cast for v in (9, 13, 19, 21, 23, 24, 25, 28)},
        "CastLike": {v: _cast for v in (15, 19, 21, 23, 24, 25)},
        # linear algebra and normalisation
        "MatMul": {9: S, 13: S}, "Gemm": {11: S, 13: S},
        "LayerNormalization": {17: S}, "RMSNormalization": {23: S},
        "Softmax": {11: _softmax_legacy, 13: S}, "LogSoftmax": {11: _softmax_legacy, 13: S},
        # reductions: axes moved from attribute to input (ReduceSum at 13, others at 18);
        # ReduceMax 12 and 20 add types (20 also defines the empty-set result as -inf).
        "ReduceSum": {11: _reduce_axes_attr, 13: S},
        "ReduceMean": {11: _reduce_axes_attr, 13: _reduce_axes_attr, 18: S},
        "ReduceMax": {11: _reduce_axes_attr, 12: _reduce_axes_attr, 13: _reduce_axes_attr,
                      18: S, 20: S},
        "CumSum": {11: S, 14: S},  # 14 adds types

        # shape and data movement. Versions after the listed semantic changes add types.
        "Reshape": {v: S for v in (5, 13, 14, 19, 21, 23, 24, 25)},  # 14: allowzero
        "Flatten": {v: S for v in (11, 13, 21, 23, 24, 25)},
        "Transpose": {v: S for v in (1, 13, 21, 23, 24, 25)},
        "Squeeze": {11: _attr_to_input("axes", 1), **{v: S for v in (13, 21, 23, 24, 25)}},
        "Unsqueeze": {11: _attr_to_input("axes", 1), **{v: S for v in (13, 21, 23, 24, 25)}},
        "Concat": {11: S, 13: S},
        # Split 11: `split` attribute -> input; 13: input; 18: adds num_outputs (without it,
        # ember splits evenly into as many outputs as the node has).
        "Split": {11: _attr_to_input("split", 1), 13: S, 18: S},
        "Slice": {11: S, 13: S},
        "Gather": {11: S, 13: S},
        "GatherND": {11: S, 12: S, 13: S},  # 12 adds batch_dims
        "Expand": {8: S, 13: S},
        "Shape": {v: S for v in (1, 13, 15, 19, 21, 23, 24, 25)},  # 15: start/end
        "Size": {v: S for v in (1, 13, 19, 21, 23, 24, 25)},
        "Range": {11: S, 27: S},  # 27: stash_type (fp16/bf16 accumulate in float by default)
        "Trilu": {14: S},
        "ConstantOfShape": {v: _constant_of_shape for v in (9, 20, 21, 23, 24, 25)},
    }
    # Op families with tables of their own (they import the handlers above).
    from ember import (onnx_ops_control, onnx_ops_conv, onnx_ops_nn, onnx_ops_quant,
                       onnx_ops_rnn, onnx_ops_tensor)
    for family in (onnx_ops_conv, onnx_ops_nn, onnx_ops_tensor, onnx_ops_rnn, onnx_ops_control,
                   onnx_ops_quant):
        t.update(family.table())
    return t


OPS = _table()
# Ops of other domains ember imports (com.microsoft MatMulNBits): domain -> op -> versions.
from ember.onnx_ops_quant import CONTRIB_OPS  # noqa: E402
# Constant is not an ember op: the importer turns it into a graph constant.
CONSTANT_VERSIONS = (11, 12, 13, 19, 21, 23, 24, 25)


def check_node(n):
    """Extra per-node support checks: a reason string when ember cannot run the node."""
    from ember import onnx_ops_quant, onnx_ops_rnn
    if (reason := onnx_ops_rnn.check(n)) is not None:
        return reason
    if (reason := onnx_ops_quant.check(n)) is not None:
        return reason
    if n.op_type in ("Cast",):
        to = n.attrs.get("to")
        if to not in ONNX_DTYPES:
            return f"to={_onnx_type_name(to)}"
    return None


def _onnx_type_name(code):
    try:
        from onnx import TensorProto
        return TensorProto.DataType.Name(int(code))
    except Exception:
        return str(code)


def supported_ops(domain="ai.onnx"):
    """op type -> the since_versions ember accepts (ascending) in this domain: the ONNX ops
    by default, or another domain's ("com.microsoft": MatMulNBits)."""
    if domain not in ("", "ai.onnx"):
        return {op: sorted(vs) for op, vs in CONTRIB_OPS.get(domain, {}).items()}
    out = {op: sorted(vs) for op, vs in OPS.items()}
    out["Constant"] = list(CONSTANT_VERSIONS)
    return out
