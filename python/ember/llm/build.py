"""Decoder LLM -> ember graph (one step of the continuous-batching loop).

The graph runs one varlen batch: T tokens of S sequences, flat. Inputs (DESIGN.md):
  token_ids i32 [T], positions i32 [T], slot_mapping i64 [T], query_start i32 [S+1],
  seq_lens i32 [S], block_tables i32 [S, MB], logits_indices i32 [R], prompt_rows u8 [T]
  (1 where the token is a prompt token: the block matmuls on Q4 weights run those rows in f32 on
  the dequantized weights, the prefill's faster GEMM, and the others W4A16i, the decode's faster
  GEMV; a token's path depends only on itself, so results stay batch-invariant),
  k_cache.{l}, v_cache.{l} [NB, BS, Hkv, D] (f16 or f32) per layer: written in place.
Output: logits f32 [R, vocab] — the LM head runs only on the R tokens that need logits.

Weights stay in their quantized form where a kernel takes it: Q4_0/Q4_1/Q4_K -> Q4MatMul,
Q8_0 -> Q8MatMul (and Q8Gather for the embedding table); anything else is dequantized to
float32 and runs as MatMul.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ember.errors import ModelError

STEP_INPUTS = ("token_ids", "positions", "slot_mapping", "query_start", "seq_lens",
               "block_tables", "logits_indices", "prompt_rows")


@dataclass
class LlamaConfig:
    """What the graph builder needs of a LLaMA-family decoder (llama, qwen2, mistral)."""

    arch: str
    vocab_size: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    rms_eps: float
    rope_theta: float
    context_length: int
    rope_interleaved: bool           # GGUF llama stores Q/K permuted for pairwise rotation
    rope_scaling: dict = field(default_factory=dict)
    attn_bias: bool = False          # qwen2: q/k/v projections have biases
    tied_embeddings: bool = True

    def check(self, origin: str) -> None:
        for name in ("vocab_size", "hidden", "layers", "heads", "kv_heads", "head_dim", "ffn",
                     "context_length"):
            v = getattr(self, name)
            if not isinstance(v, int) or not 0 < v < 2**31:
                raise ModelError(f"[llm] {origin}: {name} = {v!r} is not a positive int")
        if self.heads % self.kv_heads:
            raise ModelError(f"[llm] {origin}: {self.kv_heads} kv heads do not divide "
                             f"{self.heads} attention heads")
        if self.head_dim % 2:
            raise ModelError(f"[llm] {origin}: head_dim {self.head_dim} is odd")
        if not (self.rms_eps > 0 and self.rope_theta > 0):
            raise ModelError(f"[llm] {origin}: rms epsilon {self.rms_eps} and rope base "
                             f"{self.rope_theta} must be positive")

    def kv_bytes_per_token(self, kv_dtype: str) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * (2 if kv_dtype == "f16" else 4)


def rope_inv_freq(cfg: LlamaConfig) -> np.ndarray:
    """inv_freq [head_dim / 2] in float32 as transformers computes it, with the config's
    rope scaling variant (linear, llama3) folded in."""
    d = cfg.head_dim
    exps = np.arange(0, d, 2, dtype=np.int64).astype(np.float32) / np.float32(d)
    inv = (np.float32(1.0) / (np.float32(cfg.rope_theta) ** exps)).astype(np.float32)
    kind = (cfg.rope_scaling or {}).get("type") or (cfg.rope_scaling or {}).get("rope_type")
    if kind in (None, "default", "none"):
        return inv
    factor = float(cfg.rope_scaling.get("factor", 1.0))
    if kind == "linear":
        return (inv / np.float32(factor)).astype(np.float32)
    if kind == "llama3":
        low = float(cfg.rope_scaling.get("low_freq_factor", 1.0))
        high = float(cfg.rope_scaling.get("high_freq_factor", 4.0))
        old = float(cfg.rope_scaling.get("original_max_position_embeddings", 8192))
        wavelen = 2 * np.pi / inv
        low_wl, high_wl = old / low, old / high
        scaled = np.where(wavelen > low_wl, inv / factor, inv)
        smooth = (old / wavelen - low) / (high - low)
        mid = (1 - smooth) * scaled / factor + smooth * scaled
        is_mid = (wavelen >= high_wl) & (wavelen <= low_wl)
        return np.where(is_mid, mid, scaled).astype(np.float32)
    raise ModelError(f"[llm] rope scaling type {kind!r} is not supported "
                     "(supported: linear, llama3)")


class _G:
    """Small graph-building helper: fresh value names, constants, nodes."""

    def __init__(self):
        from ember import _core
        self.g = _core.Graph()
        self.n = 0

    def value(self, name, dtype=None, dims=None):
        return self.g.add_value(name, dtype, dims)

    def const(self, name, array, dtype=""):
        vid = self.g.add_value(name)
        self.g.set_constant(vid, np.ascontiguousarray(array), dtype)  # copied
        return vid

    def node(self, op, inputs, name, n_out=1, **attrs):
        self.n += 1
        outs = [self.g.add_value(f"{name}:{i}" if n_out > 1 else name) for i in range(n_out)]
        self.g.add_node(op, f"{name}#{self.n}", list(inputs), outs, attrs)
        return outs if n_out > 1 else outs[0]


class _Linear:
    """Emits y = x @ W^T (+ b) for a weight in whichever form it is stored. Several weights
    that read the same x (q/k/v, gate/up) run as one matmul over their rows concatenated, then
    a Split: fewer, larger kernel calls, and every output element is computed exactly as it
    would be alone."""

    def __init__(self, gb: _G, weights, f32_rows=None):
        # f32_rows: the value of Q4MatMul's per-row path flags (None: every row W4A16i).
        self.gb, self.w, self.f32_rows = gb, weights, f32_rows

    def __call__(self, x, name, wname, bias=None):
        return self.merged(x, [name], [wname], [bias])[0]

    def merged(self, x, names, wnames, biases, split=True):
        ts = [self.w.tensor(n) for n in wnames]
        kind = {_kind(t.ggml_type) for t in ts}
        if len(kind) > 1 or len({t.shape[1] for t in ts}) > 1:  # mixed storage: one by one
            return [self.merged(x, [n], [w], [b])[0] for n, w, b in zip(names, wnames, biases)]
        kind = kind.pop()
        rows = [t.shape[0] for t in ts]
        cols = ts[0].shape[1]
        tag = "+".join(wnames) if len(wnames) > 1 else wnames[0]
        bias = None
        if any(b is not None for b in biases):
            bias = np.concatenate([b if b is not None else np.zeros(r, np.float32)
                                   for b, r in zip(biases, rows)]).astype(np.float32)
        cat = (lambda parts: np.concatenate(parts)) if len(ts) > 1 else (lambda parts: parts[0])
        name = names[0] if len(names) == 1 else "+".join(names)
        if kind == "q4":
            parts = [self.w.q4_blocks(n) for n in wnames]
            scales, offsets = cat([p[1] for p in parts]), cat([p[2] for p in parts])
            # Q4_0/Q4_1's d and m are f16: stored as such the weights stream 20 bytes per block,
            # not 24, with the same values (Q4_K's products may not fit f16: f32 then).
            if all(np.array_equal(v.astype(np.float16).astype(np.float32), v)
                   for v in (scales, offsets)):
                scales, offsets = scales.astype(np.float16), offsets.astype(np.float16)
            ins = [x, self.gb.const(tag + ".codes", cat([p[0] for p in parts]), "uint8"),
                   self.gb.const(tag + ".scales", scales),
                   self.gb.const(tag + ".offsets", offsets)]
            ins.append(self.gb.const(tag + ".bias", bias) if bias is not None else -1)
            if self.f32_rows is not None:
                ins.append(self.f32_rows)
            while ins[-1] == -1:
                ins.pop()
            y = self.gb.node("Q4MatMul", ins, name, n=sum(rows), k=cols, group=32)
        elif kind == "q8":
            parts = [self.w.q8_blocks(n) for n in wnames]
            ins = [x, self.gb.const(tag + ".codes", cat([p[0] for p in parts]), "int8"),
                   self.gb.const(tag + ".scales", cat([p[1] for p in parts]))]
            if bias is not None:
                ins.append(self.gb.const(tag + ".bias", bias))
            y = self.gb.node("Q8MatMul", ins, name, n=sum(rows), k=cols)
        else:
            w = cat([self.w.dequantize(n) for n in wnames])
            y = self.gb.node("MatMul", [x, self.gb.const(tag + ".T", np.ascontiguousarray(w.T))], name)
            if bias is not None:
                y = self.gb.node("Add", [y, self.gb.const(tag + ".bias", bias)], name + ".bias")
        if len(ts) == 1 or not split:
            return [y]
        return self.gb.node("Split", [y, self.gb.const(tag + ".split", np.array(rows, np.int64))],
                            name + ".split", n_out=len(ts), axis=-1)


def _kind(ggml_type: str) -> str:
    return "q4" if ggml_type in ("Q4_0", "Q4_1", "Q4_K") else "q8" if ggml_type == "Q8_0" else "f32"


class _Releasing:
    """The weights, each tensor's file pages dropped from memory once it has been copied out
    (GGUFFile.release), so the load's peak is not file + repacked weights."""

    def __init__(self, weights):
        self.w = weights

    def tensor(self, name):
        return self.w.tensor(name)

    def _done(self, name, out):
        if hasattr(self.w, "release"):
            self.w.release(name)
        return out

    def dequantize(self, name):
        return self._done(name, self.w.dequantize(name))

    def q4_blocks(self, name):
        return self._done(name, self.w.q4_blocks(name))

    def q8_blocks(self, name):
        return self._done(name, self.w.q8_blocks(name))


def build_llama(cfg: LlamaConfig, weights, kv_dtype: str = "f16"):
    """The step graph of a LLaMA-family decoder. `weights` (a GGUFFile) maps GGUF tensor names
    (token_embd.weight, blk.{i}.attn_q.weight, ...) to their stored form."""
    weights = _Releasing(weights)
    gb = _G()
    lin = _Linear(gb, weights)                         # the LM head: R rows, integer path
    kvt = "float16" if kv_dtype == "f16" else "float32"
    tok = gb.value("token_ids", "int32", ["T"])
    pos = gb.value("positions", "int32", ["T"])
    slots = gb.value("slot_mapping", "int64", ["T"])
    qstart = gb.value("query_start", "int32", ["S1"])
    seq_lens = gb.value("seq_lens", "int32", ["S"])
    tables = gb.value("block_tables", "int32", ["S", "MB"])
    logit_idx = gb.value("logits_indices", "int32", ["R"])
    prompt_rows = gb.value("prompt_rows", "uint8", ["T"])
    for v in (tok, pos, slots, qstart, seq_lens, tables, logit_idx, prompt_rows):
        gb.g.add_input(v)
    blk = _Linear(gb, weights, f32_rows=prompt_rows)  # the blocks' T rows
    caches = []
    for i in range(cfg.layers):
        kc = gb.value(f"k_cache.{i}", kvt, ["NB", "BS", cfg.kv_heads, cfg.head_dim])
        vc = gb.value(f"v_cache.{i}", kvt, ["NB", "BS", cfg.kv_heads, cfg.head_dim])
        gb.g.add_input(kc)
        gb.g.add_input(vc)
        caches.append((kc, vc))

    emb = weights.tensor("token_embd.weight")
    if emb.ggml_type == "Q8_0":
        codes, scales = weights.q8_blocks("token_embd.weight")
        emb_codes = gb.const("token_embd.codes", codes, "int8")
        emb_scales = gb.const("token_embd.scales", scales)
        x = gb.node("Q8Gather", [emb_codes, emb_scales, tok], "embed", k=cfg.hidden)
    else:
        table = gb.const("token_embd.f32", weights.dequantize("token_embd.weight"))
        x = gb.node("Gather", [table, tok], "embed", axis=0)

    inv_freq = gb.const("rope.inv_freq", rope_inv_freq(cfg))
    eps = float(cfg.rms_eps)
    for i in range(cfg.layers):
        p = f"blk.{i}"
        h = gb.node("RMSNormalization", [x, gb.const(f"{p}.attn_norm", weights.dequantize(f"{p}.attn_norm.weight"))],
                    f"{p}.attn_norm", epsilon=eps, axis=-1)
        bias = (lambda n: weights.dequantize(f"{p}.{n}.bias")) if cfg.attn_bias else (lambda n: None)
        q, k, v = blk.merged(h, [f"{p}.q", f"{p}.k", f"{p}.v"],
                             [f"{p}.attn_q.weight", f"{p}.attn_k.weight", f"{p}.attn_v.weight"],
                             [bias("attn_q"), bias("attn_k"), bias("attn_v")])
        rope = dict(head_dim=cfg.head_dim, interleaved=int(cfg.rope_interleaved))
        q = gb.node("Rope", [q, pos, inv_freq], f"{p}.q_rope", num_heads=cfg.heads, **rope)
        k = gb.node("Rope", [k, pos, inv_freq], f"{p}.k_rope", num_heads=cfg.kv_heads, **rope)
        a = gb.node("PagedAttention", [q, k, v, caches[i][0], caches[i][1], slots, qstart, seq_lens, tables],
                    f"{p}.attn", num_heads=cfg.heads, num_kv_heads=cfg.kv_heads, head_dim=cfg.head_dim,
                    scale=float(1.0 / np.sqrt(cfg.head_dim)))
        x = gb.node("Add", [x, blk(a, f"{p}.o", f"{p}.attn_output.weight")], f"{p}.attn_res")
        h = gb.node("RMSNormalization", [x, gb.const(f"{p}.ffn_norm", weights.dequantize(f"{p}.ffn_norm.weight"))],
                    f"{p}.ffn_norm", epsilon=eps, axis=-1)
        gu = blk.merged(h, [f"{p}.gate", f"{p}.up"], [f"{p}.ffn_gate.weight", f"{p}.ffn_up.weight"],
                        [None, None], split=False)
        if len(gu) == 1:  # gate and up in one output: the fused activation reads both halves
            m = gb.node("SwiGLU", gu, f"{p}.swiglu")
        else:
            g, u = gu
            silu = gb.node("Mul", [g, gb.node("Sigmoid", [g], f"{p}.sig")], f"{p}.silu")
            m = gb.node("Mul", [silu, u], f"{p}.swiglu")
        x = gb.node("Add", [x, blk(m, f"{p}.down", f"{p}.ffn_down.weight")], f"{p}.ffn_res")

    last = gb.node("Gather", [x, logit_idx], "logits_rows", axis=0)
    h = gb.node("RMSNormalization", [last, gb.const("output_norm", weights.dequantize("output_norm.weight"))],
                "output_norm", epsilon=eps, axis=-1)
    if cfg.tied_embeddings and emb.ggml_type == "Q8_0":  # one copy of the table serves both
        logits = gb.node("Q8MatMul", [h, emb_codes, emb_scales], "logits", n=cfg.vocab_size, k=cfg.hidden)
    else:
        logits = lin(h, "logits", "token_embd.weight" if cfg.tied_embeddings else "output.weight")
    gb.g.add_output(logits)
    return gb.g
