"""Importer table for control flow and data-dependent shapes: op type -> {since_version: handler}.

If and Loop subgraphs read values of the graphs around them by name (ONNX's outer scope);
ember passes those values as explicit trailing inputs of the node and of each subgraph
(`n.implicit`, in the same order), so the planner sees every dependency.
"""
from __future__ import annotations

from ember.onnx_ops import _same

# 11: branches may differ in shape; 13, 16: sequence and optional types (refused where a
# graph uses them); later versions add element types.
_VERSIONS = (1, 11, 13, 16, 19, 21, 23, 24, 25)


def _if(n, b):
    attrs = {k: b.subgraph(n.attrs[k], n.implicit) for k in ("then_branch", "else_branch")}
    b.node("If", n.inputs + n.implicit_ids, n.outputs, attrs)


def _loop(n, b):
    inputs = list(n.inputs)  # M, cond (either may be absent), v_initial...
    while len(inputs) < 2:
        inputs.append(-1)
    attrs = {"body": b.subgraph(n.attrs["body"], n.implicit), "captured": len(n.implicit)}
    b.node("Loop", inputs + n.implicit_ids, n.outputs, attrs)


def table() -> dict:
    return {
        "If": {v: _if for v in _VERSIONS if v >= 11},
        "Loop": {v: _loop for v in _VERSIONS if v >= 11},
        "NonZero": {9: _same, 13: _same},
    }
