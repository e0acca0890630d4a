"""The warning an Engine gives when quantized nodes survive its fusion passes unfused."""

from __future__ import annotations

import warnings

# ONNX quantization ops that ember's fusion passes fold into integer kernels (QMatMul, Q4MatMul);
# one still in the graph after the passes runs on its reference (or float) path. The same list
# as quant_leftovers() in cpp/src/graph/fuse_quant.cpp, which Session.quant_fallbacks() reports.
QUANT_OPS = frozenset({"DequantizeLinear", "QuantizeLinear", "DynamicQuantizeLinear",
                       "MatMulInteger", "QLinearMatMul", "ConvInteger", "QLinearConv",
                       "MatMulNBits"})


class QuantFallbackWarning(UserWarning):
    """Part of a quantized pattern was not fused into an integer kernel: it runs as a slower
    reference/float path. Engine.quant_fallbacks lists the nodes as (name, op)."""


def warn_fallbacks(fallbacks, stacklevel=3) -> None:
    if not fallbacks:
        return
    listed = ", ".join(f"{name!r} ({op})" for name, op in fallbacks)
    warnings.warn(f"[engine] {len(fallbacks)} quantized node(s) are not fused into integer "
                  f"kernels and run on a slower reference path: {listed}",
                  QuantFallbackWarning, stacklevel=stacklevel)
