"""Importer table for the rnn op family: op type -> {since_version: handler}."""
from __future__ import annotations

from ember.onnx_ops import _same


_RNN_ACTIVATIONS = ("Sigmoid", "Tanh", "Relu", "Softsign", "Softplus")


def _rnn(n, b):
    # LSTM/GRU 7 lack `layout` (= 0); 14 adds it, 22 adds bfloat16. ember's op takes the
    # activation names joined by commas (its attributes hold no string lists).
    attrs = dict(n.attrs)
    if "activations" in attrs:
        attrs["activations"] = ",".join(attrs["activations"])
    b.node(n.op_type, n.inputs, n.outputs, attrs)


def table() -> dict:
    return {
        "TopK": {11: _same, 24: _same},  # 24 adds bfloat16
        "LSTM": {7: _rnn, 14: _rnn, 22: _rnn},
        "GRU": {7: _rnn, 14: _rnn, 22: _rnn},
        # Resize 11: roi and scales required (may be empty), tf_half_pixel_for_nn; 13: both
        # optional; 18: antialias, axes, keep_aspect_ratio_policy; 19: half_pixel_symmetric.
        "Resize": {11: _same, 13: _same, 18: _same, 19: _same},
    }


def check(n):
    """Per-node support checks for this family: a reason string, or None."""
    if n.op_type in ("LSTM", "GRU"):
        for a in ("activation_alpha", "activation_beta"):  # only parametrised activations read them
            if a in n.attrs:
                return a
        bad = [f for f in n.attrs.get("activations", ()) if f not in _RNN_ACTIVATIONS]
        if bad:
            return "activations " + ",".join(bad)
    if n.op_type == "Resize":
        if n.attrs.get("antialias", 0) and n.attrs.get("mode", "nearest") == "nearest":
            return "antialias=1 with mode=nearest"
    return None
