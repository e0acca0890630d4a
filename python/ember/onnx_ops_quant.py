"""Importer table for the quantization op family: op type -> {since_version: handler}, and
com.microsoft's MatMulNBits, which has no ONNX schema (CONTRIB_OPS, MATMUL_NBITS_SCHEMA).

ember's ops take every attribute of the newest ONNX form, so each version passes through.
What ember cannot run (float8 / 4-bit / 2-bit outputs named by output_dtype, other bit widths
of MatMulNBits, g_idx) is reported by check() through the unsupported-ops path. Tensors of
types ember has no dtype for (int4, uint16, float8 zero points) are refused where they are read.
"""
from __future__ import annotations

import dataclasses

# output_dtype / precision codes ember runs (onnx.TensorProto): the rest has no ember dtype.
_QUANT_OUT = {2: "UINT8", 3: "INT8", 5: "INT16"}
_FLOAT_OUT = {1: "FLOAT", 10: "FLOAT16", 16: "BFLOAT16"}


def _drop_prepacked(n, b):
    # weight_prepacked=0 (the default) says B is in the standard layout: nothing to keep.
    attrs = {k: v for k, v in n.attrs.items() if k != "weight_prepacked"}
    b.node("MatMulNBits", n.inputs, n.outputs, attrs)


def table() -> dict:
    from ember.onnx_ops import _same as S
    v_qdq = (10, 13, 19, 21, 23, 24, 25, 28)
    return {
        # 13: axis (per-axis scales); 19: float8, saturate, scale types; 21: int4/int16,
        # block_size, output_dtype; 23: precision, scale type apart from x; 24, 25, 28: types.
        "QuantizeLinear": {v: S for v in v_qdq},
        "DequantizeLinear": {v: S for v in v_qdq},
        "DynamicQuantizeLinear": {11: S},
        "MatMulInteger": {10: S},
        "QLinearMatMul": {10: S, 21: S},  # 21: float16 / bfloat16 scales, float8
        "ConvInteger": {10: S},
        "QLinearConv": {10: S},
    }


# Domain -> op -> {since_version: handler}: ops outside the ONNX domain that ember imports.
CONTRIB_OPS = {"com.microsoft": {"MatMulNBits": {1: _drop_prepacked}}}


@dataclasses.dataclass(frozen=True)
class _Attr:
    type: int           # onnx.AttributeProto.AttributeType
    required: bool = False


@dataclasses.dataclass(frozen=True)
class ContribSchema:
    """What the importer reads from an onnx OpSchema, for an op onnx.defs does not know."""
    since_version: int
    min_input: int
    max_input: int
    min_output: int
    max_output: int
    attributes: dict


_INT = 2  # AttributeProto.INT
# com.microsoft MatMulNBits-1 (onnxruntime/core/graph/contrib_ops/contrib_defs.cc): inputs A,
# B, scales, zero_points, g_idx, bias; output Y.
MATMUL_NBITS_SCHEMA = ContribSchema(
    1, 3, 6, 1, 1,
    {"K": _Attr(_INT, True), "N": _Attr(_INT, True), "bits": _Attr(_INT),
     "block_size": _Attr(_INT, True), "accuracy_level": _Attr(_INT),
     "weight_prepacked": _Attr(_INT)})


def contrib_schema(domain, op_type, version):
    """The stand-in schema of a contrib op ember imports at this domain version, else None."""
    if domain == "com.microsoft" and op_type == "MatMulNBits" and version == 1:
        return MATMUL_NBITS_SCHEMA
    return None


def check(n):
    """Per-node support checks for this family: a reason string, or None."""
    from ember.onnx_ops import _onnx_type_name as _type_name
    if n.op_type == "QuantizeLinear":
        od = n.attrs.get("output_dtype", 0)
        if od and od not in _QUANT_OUT:
            return f"output_dtype={_type_name(od)}"
        p = n.attrs.get("precision", 0)
        if p and p not in _FLOAT_OUT:
            return f"precision={_type_name(p)}"
    elif n.op_type == "DequantizeLinear":
        od = n.attrs.get("output_dtype", 0)
        if od and od not in _FLOAT_OUT:
            return f"output_dtype={_type_name(od)}"
    elif n.op_type == "MatMulNBits":
        bits = n.attrs.get("bits", 4)
        if bits != 4:
            return f"bits={bits}"  # ember's int4 layout only; ORT also has 2 and 8
        if n.attrs.get("block_size") == 16:
            return "block_size=16"  # Q4G needs a multiple of 32
        if n.attrs.get("weight_prepacked", 0) != 0:
            return f"weight_prepacked={n.attrs['weight_prepacked']}"
        if len(n.in_names) > 4 and n.in_names[4]:
            return "g_idx"  # deprecated act-order indices
    return None
