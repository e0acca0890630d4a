"""A BERT encoder folder (HF config.json + model.safetensors) -> a standard ONNX graph.

The graph mirrors transformers' BertModel (absolute positions, post-LN, exact erf GELU) and adds
the sentence-transformers head the folder describes (modules.json, 1_Pooling/config.json):
mean or CLS pooling over the attention mask, then L2 normalisation when a Normalize module is
listed. Opset 17, only ops ember runs; weights are pre-transposed so every projection is one
MatMul + Add. Needs numpy, onnx and safetensors; no torch.

Inputs  input_ids, attention_mask, token_type_ids: int64 [batch, seq]
Outputs last_hidden_state: float32 [batch, seq, hidden]; sentence_embedding: float32 [batch, hidden]
"""
from __future__ import annotations

import json
import math
import os
from typing import TYPE_CHECKING

import numpy as np

from ember.errors import ModelError

if TYPE_CHECKING:
    import onnx

__all__ = ["build_bert_onnx", "BUILDER_VERSION"]

BUILDER_VERSION = 2            # bump when the emitted graph changes: hub rebuilds cached files
OPSET = 17
_MASK_MIN = float(np.finfo(np.float32).min)   # what transformers adds at padded keys


def _read_json(path, what):
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        raise ModelError(f"[bert] {path}: cannot read {what}: {e}") from None
    except ValueError as e:
        raise ModelError(f"[bert] {path}: {what} is not valid JSON: {e}") from None
    if not isinstance(data, (dict, list)):
        raise ModelError(f"[bert] {path}: {what} is not a JSON object")
    return data


def _config(folder):
    path = os.path.join(folder, "config.json")
    cfg = _read_json(path, "config")
    if not isinstance(cfg, dict):
        raise ModelError(f"[bert] {path}: config is not a JSON object")

    def get(key, kind, default=None, positive=True):
        v = cfg.get(key, default)
        if v is None or isinstance(v, bool) or not isinstance(v, kind):
            want = "an integer" if kind is int else "a number"
            raise ModelError(f"[bert] {path}: '{key}' must be {want}, got {v!r}")
        if positive and v <= 0:
            raise ModelError(f"[bert] {path}: '{key}' must be positive, got {v!r}")
        return v

    model_type = cfg.get("model_type", "bert")
    if model_type != "bert":
        raise ModelError(f"[bert] {path}: model_type is {model_type!r}; this builder handles "
                         "'bert'")
    c = dict(
        hidden=get("hidden_size", int), heads=get("num_attention_heads", int),
        layers=get("num_hidden_layers", int), inter=get("intermediate_size", int),
        vocab=get("vocab_size", int), max_pos=get("max_position_embeddings", int),
        type_vocab=get("type_vocab_size", int, 2),
        eps=float(get("layer_norm_eps", (int, float), 1e-12)),
    )
    if c["hidden"] % c["heads"]:
        raise ModelError(f"[bert] {path}: hidden_size {c['hidden']} is not divisible by "
                         f"num_attention_heads {c['heads']}")
    act = cfg.get("hidden_act", "gelu")
    if act != "gelu":
        raise ModelError(f"[bert] {path}: hidden_act {act!r} is not supported (only exact 'gelu')")
    pos = cfg.get("position_embedding_type", "absolute")
    if pos != "absolute":
        raise ModelError(f"[bert] {path}: position_embedding_type {pos!r} is not supported "
                         "(only 'absolute')")
    return c


def _pooling(folder):
    """-> (mode 'mean' | 'cls', normalize) from the sentence-transformers files, if any."""
    modules_path = os.path.join(folder, "modules.json")
    if not os.path.exists(modules_path):
        return "mean", True               # all-MiniLM-style default
    modules = _read_json(modules_path, "modules list")
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise ModelError(f"[bert] {modules_path}: expected a list of module objects")
    types = [str(m.get("type", "")) for m in modules]
    normalize = any(t.endswith(".Normalize") for t in types)
    pool = [m for m in modules if str(m.get("type", "")).endswith(".Pooling")]
    if not pool:
        return "mean", normalize
    sub = str(pool[0].get("path", ""))
    if os.path.isabs(sub) or ".." in sub.replace("\\", "/").split("/"):
        raise ModelError(f"[bert] {modules_path}: pooling path {sub!r} leaves the folder")
    cfg_path = os.path.join(folder, sub, "config.json")
    if not os.path.exists(cfg_path):
        return "mean", normalize
    cfg = _read_json(cfg_path, "pooling config")
    modes = [k for k in ("pooling_mode_cls_token", "pooling_mode_mean_tokens",
                         "pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens",
                         "pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken")
             if isinstance(cfg, dict) and cfg.get(k)]
    if modes == ["pooling_mode_mean_tokens"]:
        return "mean", normalize
    if modes == ["pooling_mode_cls_token"]:
        return "cls", normalize
    raise ModelError(f"[bert] {cfg_path}: pooling {modes or 'none'} is not supported "
                     "(one of mean_tokens or cls_token)")


def _weights(folder, c):
    path = os.path.join(folder, "model.safetensors")
    if not os.path.exists(path):
        raise ModelError(f"[bert] {folder}: no model.safetensors")
    try:
        from safetensors.numpy import load_file
    except ImportError:
        raise ModelError("[bert] reading model.safetensors needs the 'safetensors' package "
                         "(pip install safetensors)") from None
    try:
        raw = load_file(path)
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise ModelError(f"[bert] {path}: cannot read: {e}") from None
    # BertFor* checkpoints prefix the encoder with "bert.".
    w = {(k[5:] if k.startswith("bert.") else k): v for k, v in raw.items()}

    H, I = c["hidden"], c["inter"]

    def get(name, shape):
        if name not in w:
            raise ModelError(f"[bert] {path}: tensor '{name}' is missing")
        a = w[name]
        if tuple(a.shape) != tuple(shape):
            raise ModelError(f"[bert] {path}: tensor '{name}' has shape {list(a.shape)}, "
                             f"config.json implies {list(shape)}")
        if a.dtype.kind != "f":
            raise ModelError(f"[bert] {path}: tensor '{name}' has dtype {a.dtype}, "
                             "expected a float")
        return np.ascontiguousarray(a, dtype=np.float32)

    out = {
        "word": get("embeddings.word_embeddings.weight", (c["vocab"], H)),
        "pos": get("embeddings.position_embeddings.weight", (c["max_pos"], H)),
        "type": get("embeddings.token_type_embeddings.weight", (c["type_vocab"], H)),
        "emb_ln_w": get("embeddings.LayerNorm.weight", (H,)),
        "emb_ln_b": get("embeddings.LayerNorm.bias", (H,)),
        "layers": [],
    }
    for i in range(c["layers"]):
        p = f"encoder.layer.{i}."
        lin = lambda n, o, k: (np.ascontiguousarray(get(p + n + ".weight", (o, k)).T),
                               get(p + n + ".bias", (o,)))
        out["layers"].append(dict(
            q=lin("attention.self.query", H, H), k=lin("attention.self.key", H, H),
            v=lin("attention.self.value", H, H), o=lin("attention.output.dense", H, H),
            ln1=(get(p + "attention.output.LayerNorm.weight", (H,)),
                 get(p + "attention.output.LayerNorm.bias", (H,))),
            up=lin("intermediate.dense", I, H), down=lin("output.dense", H, I),
            ln2=(get(p + "output.LayerNorm.weight", (H,)), get(p + "output.LayerNorm.bias", (H,))),
        ))
    return out


class _Builder:
    """Collects nodes and initializers with unique names."""

    def __init__(self):
        from onnx import helper, numpy_helper
        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes, self.inits = [], []

    def const(self, name, array):
        self.inits.append(self.numpy_helper.from_array(np.asarray(array), name))
        return name

    def op(self, op_type, inputs, name, **attrs):
        """One node; it and its output share `name`, so errors point at e.g. 'emb.words'."""
        self.nodes.append(self.helper.make_node(op_type, inputs, [name], name=name, **attrs))
        return name

    def linear(self, x, wb, prefix):
        w, b = wb
        y = self.op("MatMul", [x, self.const(prefix + ".weight", w)], prefix + ".matmul")
        return self.op("Add", [y, self.const(prefix + ".bias", b)], prefix + ".out")

    def layer_norm(self, x, wb, eps, prefix):
        w, b = wb
        return self.op("LayerNormalization", [x, self.const(prefix + ".weight", w),
                                              self.const(prefix + ".bias", b)],
                       prefix + ".out", axis=-1, epsilon=eps)


def build_bert_onnx(folder) -> "onnx.ModelProto":
    """Reads a BERT checkpoint folder and returns an opset-17 ONNX encoder + pooling graph."""
    from onnx import TensorProto, helper

    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise ModelError(f"[bert] {folder}: not a directory")
    c = _config(folder)
    mode, normalize = _pooling(folder)
    w = _weights(folder, c)
    H, nh = c["hidden"], c["heads"]
    hd = H // nh
    g = _Builder()
    f32 = np.float32

    # Embeddings: word + position (0..seq-1, from the input's shape) + token type, then LN.
    words = g.op("Gather", [g.const("embeddings.word_embeddings.weight", w["word"]), "input_ids"],
                 "emb.words")
    shape = g.op("Shape", ["input_ids"], "emb.shape")
    seq = g.op("Gather", [shape, g.const("const.one_i64", np.array(1, np.int64))], "emb.seq_len",
               axis=0)
    zero = g.const("const.zero_i64", np.array(0, np.int64))
    positions = g.op("Range", [zero, seq, "const.one_i64"], "emb.position_ids")
    pos = g.op("Gather", [g.const("embeddings.position_embeddings.weight", w["pos"]), positions],
               "emb.positions")
    types = g.op("Gather", [g.const("embeddings.token_type_embeddings.weight", w["type"]),
                            "token_type_ids"], "emb.types")
    x = g.op("Add", [words, types], "emb.sum0")
    x = g.op("Add", [x, pos], "emb.sum")
    x = g.layer_norm(x, (w["emb_ln_w"], w["emb_ln_b"]), c["eps"], "embeddings.LayerNorm")

    # Additive key mask [batch, 1, 1, seq]: 0 where attended, float32 min where padded.
    mask_f = g.op("Cast", ["attention_mask"], "mask.float", to=TensorProto.FLOAT)
    inv = g.op("Sub", [g.const("const.one_f32", np.array(1, f32)), mask_f], "mask.inverted")
    bias = g.op("Mul", [inv, g.const("const.mask_min", np.array(_MASK_MIN, f32))], "mask.bias2d")
    bias = g.op("Unsqueeze", [bias, g.const("const.axes_1_2", np.array([1, 2], np.int64))],
                "mask.bias")

    heads_shape = g.const("const.heads_shape", np.array([0, 0, nh, hd], np.int64))
    merged_shape = g.const("const.merged_shape", np.array([0, 0, H], np.int64))
    scale = g.const("const.attn_scale", np.array(1.0 / math.sqrt(hd), f32))
    half = g.const("const.half", np.array(0.5, f32))
    inv_sqrt2 = g.const("const.inv_sqrt2", np.array(1.0 / math.sqrt(2.0), f32))
    one = "const.one_f32"

    for i, L in enumerate(w["layers"]):
        p = f"encoder.layer.{i}"
        q = g.linear(x, L["q"], p + ".attention.self.query")
        k = g.linear(x, L["k"], p + ".attention.self.key")
        v = g.linear(x, L["v"], p + ".attention.self.value")
        q = g.op("Transpose", [g.op("Reshape", [q, heads_shape], p + ".q_heads")], p + ".q_t",
                 perm=[0, 2, 1, 3])                                     # [b, nh, s, hd]
        k = g.op("Transpose", [g.op("Reshape", [k, heads_shape], p + ".k_heads")], p + ".k_t",
                 perm=[0, 2, 3, 1])                                     # [b, nh, hd, s]
        v = g.op("Transpose", [g.op("Reshape", [v, heads_shape], p + ".v_heads")], p + ".v_t",
                 perm=[0, 2, 1, 3])                                     # [b, nh, s, hd]
        s = g.op("MatMul", [q, k], p + ".scores_raw")
        s = g.op("Mul", [s, scale], p + ".scores_scaled")
        s = g.op("Add", [s, bias], p + ".scores")
        a = g.op("Softmax", [s], p + ".probs", axis=-1)
        ctx = g.op("MatMul", [a, v], p + ".context_heads")
        ctx = g.op("Transpose", [ctx], p + ".context_t", perm=[0, 2, 1, 3])
        ctx = g.op("Reshape", [ctx, merged_shape], p + ".context")
        o = g.linear(ctx, L["o"], p + ".attention.output.dense")
        o = g.op("Add", [o, x], p + ".attention.residual")
        x = g.layer_norm(o, L["ln1"], c["eps"], p + ".attention.output.LayerNorm")

        # GELU(x) = 0.5 x (1 + erf(x / sqrt 2)), exactly as BERT's "gelu".
        h = g.linear(x, L["up"], p + ".intermediate.dense")
        e = g.op("Erf", [g.op("Mul", [h, inv_sqrt2], p + ".gelu.scaled")], p + ".gelu.erf")
        e = g.op("Add", [e, one], p + ".gelu.erf1")
        h = g.op("Mul", [g.op("Mul", [h, half], p + ".gelu.half"), e], p + ".gelu")
        o = g.linear(h, L["down"], p + ".output.dense")
        o = g.op("Add", [o, x], p + ".output.residual")
        x = g.layer_norm(o, L["ln2"], c["eps"], p + ".output.LayerNorm")

    hidden = g.op("Identity", [x], "last_hidden_state")

    axis1 = g.const("const.axis_1", np.array([1], np.int64))
    if mode == "mean":
        # sentence-transformers: sum(h * mask) / clamp(sum(mask), 1e-9)
        m3 = g.op("Unsqueeze", [mask_f, g.const("const.axis_2", np.array([2], np.int64))],
                  "pool.mask3")
        summed = g.op("ReduceSum", [g.op("Mul", [hidden, m3], "pool.masked"), axis1],
                      "pool.sum", keepdims=0)
        count = g.op("ReduceSum", [mask_f, axis1], "pool.count", keepdims=1)
        count = g.op("Max", [count, g.const("const.min_count", np.array(1e-9, f32))],
                     "pool.count_clamped")
        pooled = g.op("Div", [summed, count], "pool.mean")
    else:
        cls = g.op("Gather", [hidden, "const.zero_i64"], "pool.cls", axis=1)
        pooled = g.op("Identity", [cls], "pool.cls_out")
    if normalize:
        # torch.nn.functional.normalize: x / max(||x||_2, 1e-12)
        sq = g.op("ReduceSum", [g.op("Mul", [pooled, pooled], "norm.sq"), axis1], "norm.sumsq",
                  keepdims=1)
        norm = g.op("Max", [g.op("Sqrt", [sq], "norm.l2"),
                            g.const("const.min_norm", np.array(1e-12, f32))], "norm.clamped")
        pooled = g.op("Div", [pooled, norm], "norm.out")
    g.op("Identity", [pooled], "sentence_embedding")

    ids = lambda n: helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"])
    graph = helper.make_graph(
        g.nodes, "bert_encoder",
        [ids("input_ids"), ids("attention_mask"), ids("token_type_ids")],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "seq", H]),
         helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", H])],
        initializer=g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="ember.models.bert_onnx",
                              producer_version=str(BUILDER_VERSION))
    model.ir_version = 8          # opset 17 needs IR >= 8; older readers (ORT) accept 8
    helper.set_model_props(model, {"ember_builder": "bert_onnx",
                                   "ember_builder_version": str(BUILDER_VERSION),
                                   "max_position_embeddings": str(c["max_pos"]),
                                   "pooling": mode, "normalize": str(normalize).lower()})
    return model
