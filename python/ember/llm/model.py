"""GGUF decoder -> config, memory plan and the compiled step graph."""
from __future__ import annotations

import os
from dataclasses import dataclass

from ember.errors import InputError, ModelError
from ember.llm.build import LlamaConfig

# GGUF architectures with a LLaMA-style block (RMSNorm, RoPE, GQA, SwiGLU). llama.cpp stores
# llama's Q/K rows permuted for pairwise ("normal") rope; qwen2 keeps HF order (NeoX rope).
_ARCHS = {"llama": dict(interleaved=True, attn_bias=False),
          "mistral": dict(interleaved=True, attn_bias=False),
          "qwen2": dict(interleaved=False, attn_bias=True)}
KV_DTYPES = ("f16", "f32")


def config_from_gguf(gguf) -> LlamaConfig:
    arch = gguf.arch
    if arch not in _ARCHS:
        raise ModelError(f"[llm] {gguf.name}: architecture '{arch}' is not supported "
                         f"(supported: {', '.join(sorted(_ARCHS))})")

    def key(name, default=None, kind=int):
        v = gguf.get(f"{arch}.{name}", default)
        if v is None:
            raise ModelError(f"[llm] {gguf.name}: metadata key '{arch}.{name}' is missing")
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ModelError(f"[llm] {gguf.name}: metadata key '{arch}.{name}' is {v!r}, not a number")
        return kind(v)

    hidden, heads = key("embedding_length"), key("attention.head_count")
    emb = gguf.tensor("token_embd.weight")
    scaling = {}
    stype = gguf.get(f"{arch}.rope.scaling.type")
    if stype not in (None, "none"):
        scaling = {"type": stype, "factor": key("rope.scaling.factor", 1.0, float)}
        orig = gguf.get(f"{arch}.rope.scaling.original_context_length")
        if orig:
            scaling["original_max_position_embeddings"] = int(orig)
    cfg = LlamaConfig(
        arch=arch, vocab_size=int(emb.shape[0]), hidden=hidden, layers=key("block_count"),
        heads=heads, kv_heads=key("attention.head_count_kv", heads),
        head_dim=key("attention.key_length", hidden // max(heads, 1)),
        ffn=key("feed_forward_length"), rms_eps=key("attention.layer_norm_rms_epsilon", kind=float),
        rope_theta=key("rope.freq_base", 10000.0, float), context_length=key("context_length"),
        rope_interleaved=_ARCHS[arch]["interleaved"], rope_scaling=scaling,
        attn_bias=_ARCHS[arch]["attn_bias"], tied_embeddings="output.weight" not in gguf.tensors)
    cfg.check(gguf.name)
    if emb.shape[1] != cfg.hidden:
        raise ModelError(f"[llm] {gguf.name}: token_embd.weight is {list(emb.shape)}, "
                         f"expected [vocab, {cfg.hidden}]")
    return cfg


@dataclass
class LlmSettings:
    """The LLM options of ember.Engine (DESIGN.md), resolved against the model."""

    max_model_len: int
    max_num_seqs: int
    max_num_batched_tokens: int
    kv_cache_bytes: int
    kv_dtype: str
    block_size: int
    enable_prefix_caching: bool = True

    def num_blocks(self, cfg: LlamaConfig) -> int:
        return self.kv_cache_bytes // (cfg.kv_bytes_per_token(self.kv_dtype) * self.block_size)


DEFAULT_KV_CACHE_BYTES = 256 << 20


def resolve_settings(cfg: LlamaConfig, max_model_len=None, max_num_seqs=16,
                     max_num_batched_tokens=512, kv_cache_bytes=None, kv_dtype="f16",
                     block_size=16, enable_prefix_caching=True) -> LlmSettings:
    def pos_int(name, v, hi=2**31 - 1):
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= hi:
            raise InputError(f"[llm] {name} must be an int in [1, {hi}], not {v!r}")
        return v

    if kv_dtype not in KV_DTYPES:
        raise InputError(f"[llm] kv_dtype must be one of {KV_DTYPES}, not {kv_dtype!r}")
    max_model_len = pos_int("max_model_len", max_model_len if max_model_len is not None
                            else min(cfg.context_length, 4096))
    if max_model_len > cfg.context_length:
        raise InputError(f"[llm] max_model_len {max_model_len} exceeds the model's context "
                         f"length {cfg.context_length}")
    s = LlmSettings(max_model_len=max_model_len, max_num_seqs=pos_int("max_num_seqs", max_num_seqs, 4096),
                    max_num_batched_tokens=pos_int("max_num_batched_tokens", max_num_batched_tokens, 1 << 16),
                    kv_cache_bytes=0, kv_dtype=kv_dtype, block_size=pos_int("block_size", block_size, 1024),
                    enable_prefix_caching=bool(enable_prefix_caching))
    per_block = cfg.kv_bytes_per_token(kv_dtype) * s.block_size
    if kv_cache_bytes is None:
        # Enough for every sequence at full length, capped: long contexts share a pool.
        kv_cache_bytes = min(s.max_num_seqs * s.max_model_len * cfg.kv_bytes_per_token(kv_dtype),
                             DEFAULT_KV_CACHE_BYTES)
        kv_cache_bytes = max(kv_cache_bytes, per_block * -(-s.max_model_len // s.block_size))
    s.kv_cache_bytes = pos_int("kv_cache_bytes", kv_cache_bytes, 1 << 46)
    if s.num_blocks(cfg) * s.block_size < s.max_model_len:
        raise InputError(f"[llm] kv_cache_bytes {kv_cache_bytes} holds {s.num_blocks(cfg) * s.block_size} "
                         f"tokens, fewer than max_model_len {s.max_model_len} "
                         f"({cfg.kv_bytes_per_token(kv_dtype)} bytes per token)")
    return s


def memory_plan(gguf, cfg: LlamaConfig, s: LlmSettings) -> dict:
    """What loading will take, before loading: weights, KV per token, context x concurrency."""
    per_token = cfg.kv_bytes_per_token(s.kv_dtype)
    blocks = s.num_blocks(cfg)
    return {
        "file": os.path.basename(gguf.path),
        "arch": cfg.arch, "layers": cfg.layers, "hidden": cfg.hidden, "heads": cfg.heads,
        "kv_heads": cfg.kv_heads, "vocab": cfg.vocab_size, "context_length": cfg.context_length,
        "weight_bytes": gguf.tensor_bytes_total,
        "weight_types": sorted({t.ggml_type for t in gguf.tensors.values()}),
        "kv_dtype": s.kv_dtype, "kv_bytes_per_token": per_token,
        "kv_cache_bytes": blocks * s.block_size * per_token, "kv_blocks": blocks,
        "block_size": s.block_size, "kv_tokens": blocks * s.block_size,
        "max_model_len": s.max_model_len, "max_num_seqs": s.max_num_seqs,
        "full_length_sequences": blocks * s.block_size // s.max_model_len,
    }
