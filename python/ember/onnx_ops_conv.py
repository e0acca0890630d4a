"""Importer table for the conv op family: op type -> {since_version: handler}."""
from __future__ import annotations


def table() -> dict:
    from ember.onnx_ops import _same as S
    # Conv / ConvTranspose 22 add bfloat16 only; 11 is the form ember implements.
    return {
        "Conv": {11: S, 22: S},
        "ConvTranspose": {11: S, 22: S},
    }
