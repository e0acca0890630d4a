"""Which layers to quantize: every MatMul/Gemm/Conv of the top-level graph is examined and gets a
Decision (quantized, or kept float and why). Weighted layers are those whose weight is a
constant float32 initializer; the others (attention's activation x activation MatMuls, weights
fed as graph inputs) are left alone and recorded as such."""

from __future__ import annotations

import dataclasses
import fnmatch

from ember.quantize.graph import display_name

LAYER_OPS = ("MatMul", "Gemm", "Conv")


@dataclasses.dataclass
class Decision:
    """One examined node: quantized (`format` says into what) or kept float (`reason`)."""

    node: str
    op: str
    quantized: bool
    reason: str = ""            # why it stayed float; empty when quantized
    format: str = ""            # "int8-dynamic" | "int8-static" | "int4" | "int8-embedding"
    weight_shape: tuple = ()
    output: str = ""            # the node's (first) output tensor, the same in both models

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Layer:
    """A weighted layer: node, its activation input, weight initializer and weight layout."""

    node: object
    x: str                      # activation input
    w: str                      # weight initializer
    kn: bool                    # weight stored [K, N] (MatMul, Gemm transB=0) vs [N, K]/[M, ...]
    shape: tuple


def _attr(node, name, default):
    from onnx import helper
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _weighted(ed, node):
    """-> (Layer, None) for a node with a constant float weight, or (None, reason)."""
    op = node.op_type
    if node.domain not in ("", "ai.onnx"):
        return None, "custom domain"
    ins = list(node.input)
    if op == "MatMul":
        if len(ins) != 2:
            return None, "malformed MatMul"
        if ed.is_float_weight(ins[0]) and not ed.is_float_weight(ins[1]):
            return None, "the constant is the left operand (W @ X)"
        if not ed.is_float_weight(ins[1]):
            return None, "activation x activation (B is not a constant float32 initializer)"
        if ed.is_float_weight(ins[0]):
            return None, "both operands are constants"
        w = ed.const_array(ins[1])
        if w.ndim != 2:
            return None, f"weight is {w.ndim}-D, not [K, N]"
        return Layer(node, ins[0], ins[1], True, w.shape), None
    if op == "Gemm":
        if len(ins) < 2:
            return None, "malformed Gemm"
        if not ed.is_float_weight(ins[1]) or ed.is_float_weight(ins[0]):
            return None, "B is not a constant float32 weight (or A is constant)"
        if _attr(node, "transA", 0):
            return None, "transA=1"
        w = ed.const_array(ins[1])
        if w.ndim != 2:
            return None, "malformed Gemm weight"
        return Layer(node, ins[0], ins[1], not _attr(node, "transB", 0), w.shape), None
    if op == "Conv":
        if len(ins) < 2 or not ed.is_float_weight(ins[1]) or ed.is_float_weight(ins[0]):
            return None, "W is not a constant float32 weight"
        w = ed.const_array(ins[1])
        if w.ndim < 3:
            return None, "malformed Conv weight"
        return Layer(node, ins[0], ins[1], False, w.shape), None
    return None, "not a layer op"


def _first_last(ed, layers):
    """(ids of first layers, ids of last layers) by the rule in QuantConfig's docstring."""
    layer_ids = {id(L.node) for L in layers}
    by_id = {id(L.node): L for L in layers}
    downstream = set()              # tensors computed from some weighted layer's output
    first = set()
    for n in ed.nodes:
        if id(n) in layer_ids:
            if by_id[id(n)].x not in downstream:
                first.add(id(n))
            downstream.update(n.output)
        elif any(i in downstream for i in n.input):
            downstream.update(n.output)
    upstream = set()                # tensors some weighted layer's input is computed from
    last = set()
    for n in reversed(ed.nodes):
        if id(n) in layer_ids:
            if not any(o in upstream for o in n.output):
                last.add(id(n))
            upstream.add(by_id[id(n)].x)
        elif any(o in upstream for o in n.output):
            upstream.update(i for i in n.input if i)
    return first, last


def select_layers(ed, config, ops, gemm_scaled=False):
    """-> ([Layer to quantize], [Decision for every examined node], [notes]).

    ops: the layer op types this scheme handles (Conv only for static int8); gemm_scaled: the
    scheme keeps Gemm's alpha/beta (QDQ does), else only alpha = beta = 1 is quantized.
    """
    layers, decisions, notes = [], [], []
    for n in ed.nodes:
        if n.op_type not in LAYER_OPS:
            continue
        layer, reason = _weighted(ed, n)
        if layer is not None:
            layers.append(layer)
        else:
            decisions.append(Decision(display_name(n), n.op_type, False, reason,
                                      output=n.output[0] if n.output else ""))
    first, last = _first_last(ed, layers)
    patterns = list(config.keep_float)
    matched = set()
    chosen = []
    for L in layers:
        n = L.node
        names = [n.name, n.output[0] if n.output else ""]
        hit = [p for p in patterns if any(nm and fnmatch.fnmatchcase(nm, p) for nm in names)]
        matched.update(hit)
        size = 1
        for d in L.shape:
            size *= int(d)
        reason = ""
        if n.op_type not in ops:
            reason = f"{n.op_type} is not quantized by this scheme"
        elif hit:
            reason = f"keep_float ({hit[0]})"
        elif not config.quantize_first_last and id(n) in first:
            reason = "first layer (quantize_first_last=False)"
        elif not config.quantize_first_last and id(n) in last:
            reason = "last layer (quantize_first_last=False)"
        elif size < config.min_weight_elements:
            reason = (f"tiny: {size} weight elements < "
                      f"min_weight_elements={config.min_weight_elements}")
        elif n.op_type == "Gemm" and not gemm_scaled and (
                _attr(n, "alpha", 1.0) != 1.0 or _attr(n, "beta", 1.0) != 1.0):
            reason = "Gemm with alpha or beta != 1"
        if reason:
            decisions.append(Decision(display_name(n), n.op_type, False, reason, "",
                                      tuple(L.shape), n.output[0]))
        else:
            chosen.append(L)
    for p in patterns:
        if p not in matched:
            notes.append(f"keep_float pattern {p!r} matched no weighted layer")
    return chosen, decisions, notes


def embedding_tables(ed):
    """Gather nodes reading a float32 2-D initializer table on axis 0: [(node, table name)]."""
    out = []
    for n in ed.nodes:
        if n.op_type != "Gather" or n.domain not in ("", "ai.onnx") or len(n.input) != 2:
            continue
        if _attr(n, "axis", 0) != 0 or not ed.is_float_weight(n.input[0]):
            continue
        if ed.const_array(n.input[0]).ndim == 2 and not ed.is_float_weight(n.input[1]):
            out.append((n, n.input[0]))
    return out
