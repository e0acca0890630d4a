"""Importer table for the nn op family: op type -> {since_version: handler}."""
from __future__ import annotations


def _batch_norm(n, b):
    # momentum only matters in training; training_mode stays so ember refuses training=1.
    # Versions 9/14/15 differ in training outputs and parameter types only.
    attrs = {k: v for k, v in n.attrs.items() if k != "momentum"}
    outputs = list(n.outputs)
    while len(outputs) > 1 and outputs[-1] == -1:
        outputs.pop()
    b.node(n.op_type, n.inputs, outputs, attrs)


def _group_norm18(n, b):
    # GroupNormalization-18 has scale and bias per group; 21 (ember's form) per channel.
    attrs = dict(n.attrs)
    attrs["legacy_group_affine"] = 1
    b.node(n.op_type, n.inputs, n.outputs, attrs)


def table() -> dict:
    from ember.onnx_ops import _same as S
    return {
        # activations: later versions add types (16: bfloat16 / ints for PRelu) only.
        "LeakyRelu": {6: S, 16: S}, "PRelu": {9: S, 16: S},
        "Elu": {6: S, 22: S}, "Selu": {6: S, 22: S}, "HardSigmoid": {6: S, 22: S},
        "HardSwish": {14: S, 22: S},
        "Floor": {6: S, 13: S}, "Ceil": {6: S, 13: S}, "Round": {11: S, 22: S},
        "Sign": {9: S, 13: S}, "Mod": {10: S, 13: S, 28: S},
        "GlobalAveragePool": {1: S, 22: S}, "GlobalMaxPool": {1: S, 22: S},
        "BatchNormalization": {9: _batch_norm, 14: _batch_norm, 15: _batch_norm},
        "InstanceNormalization": {6: S, 22: S},
        "GroupNormalization": {18: _group_norm18, 21: S},
        # pooling: MaxPool 12 adds int8/uint8; AveragePool 19 adds dilations; 22 adds types.
        "MaxPool": {11: S, 12: S, 22: S}, "AveragePool": {11: S, 19: S, 22: S},
    }
