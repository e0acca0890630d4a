"""Importer table for the tensor op family: op type -> {since_version: handler}."""
from __future__ import annotations

from ember.onnx_ops import _reduce_axes_attr, _same


def table() -> dict:
    S, R = _same, _reduce_axes_attr
    return {
        # axes moved from attribute to input at 18; ReduceMin 12/13/20 add types (20: bool,
        # and the empty-set result +inf).
        "ReduceMin": {11: R, 12: R, 13: R, 18: S, 20: S},
        "ReduceProd": {11: R, 13: R, 18: S},
        "ReduceL2": {11: R, 13: R, 18: S},
        # 12 adds select_last_index; 13 adds bfloat16.
        "ArgMax": {11: S, 12: S, 13: S}, "ArgMin": {11: S, 12: S, 13: S},
        "Tile": {6: S, 13: S},
        # 13: bfloat16; 18: axes input; 19: wrap mode; later versions add types.
        "Pad": {v: S for v in (11, 13, 18, 19, 21, 23, 24, 25)},
        "DepthToSpace": {11: S, 13: S, 28: S},
        "SpaceToDepth": {1: S, 13: S, 28: S},  # 28: mode (DCR/CRD), as DepthToSpace
        "GatherElements": {11: S, 13: S},
        # 16 adds reduction add/mul, 18 max/min.
        "ScatterElements": {11: S, 13: S, 16: S, 18: S},
        "ScatterND": {11: S, 13: S, 16: S, 18: S},
        "OneHot": {11: S, 28: S},  # 28 adds bfloat16
        "Einsum": {12: S, 28: S},  # 28 adds bfloat16
    }
