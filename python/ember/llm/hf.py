"""Hugging Face checkpoint folders (config.json + *.safetensors + tokenizer.json) -> the same
config and weights interface the GGUF path gives build_llama.

Supported: LlamaForCausalLM, Qwen2ForCausalLM, MistralForCausalLM. HF stores Q/K rows in
rotate_half order, so rope is never interleaved here (GGUF llama files are permuted instead).

safetensors files are parsed here, not with `safetensors.safe_open`: its numpy framework cannot
read bf16, and a header's offsets, sizes and dtypes must be checked before anything is read
(as gguf.py does). A file is an 8-byte little-endian header length, a JSON header
{name: {dtype, shape, data_offsets: [begin, end]}} (offsets relative to the data after it), then
the data. Tensors stay memory-mapped until `dequantize` copies them out as float32.
"""
from __future__ import annotations

import json
import math
import mmap
import os
import struct
from dataclasses import dataclass

import numpy as np

from ember.errors import EmberError, ModelError
from ember.llm.build import LlamaConfig
from ember.llm.tokenizer import _read_json

__all__ = ["load_hf", "load_hf_weights", "config_from_hf", "check_tensors", "is_hf_llm_folder",
           "HFWeights", "HFTensor", "ARCHITECTURES"]

# HF class -> (ember arch, q/k/v biases)
ARCHITECTURES = {"LlamaForCausalLM": ("llama", False), "Qwen2ForCausalLM": ("qwen2", True),
                 "MistralForCausalLM": ("mistral", False)}
_MODEL_TYPES = {arch: cls for cls, (arch, _) in ARCHITECTURES.items()}
# transformers' defaults for keys a config.json may leave out
_DEFAULT_CONTEXT = {"llama": 2048, "qwen2": 32768, "mistral": 4096 * 32}

_DTYPE_SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
                "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
_FLOAT_TYPES = ("F32", "F16", "BF16")
MAX_HEADER_BYTES = 100 << 20      # the limit the safetensors library itself enforces

_LAYER_NAMES = {  # HF name after "model.layers.{i}." -> GGUF name after "blk.{i}."
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight", "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.weight": "attn_k.weight", "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.weight": "attn_v.weight", "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
_GLOBAL_NAMES = {"model.embed_tokens.weight": "token_embd.weight",
                 "model.norm.weight": "output_norm.weight", "lm_head.weight": "output.weight"}


def gguf_name(hf_name: str) -> str | None:
    """The GGUF name build_llama reads for an HF tensor name (None when it has none)."""
    if hf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[hf_name]
    parts = hf_name.split(".", 3)
    if len(parts) == 4 and parts[:2] == ["model", "layers"] and parts[2].isdigit():
        rest = _LAYER_NAMES.get(parts[3])
        if rest is not None:
            return f"blk.{int(parts[2])}.{rest}"
    return None


# ---- config ---------------------------------------------------------------------------------

def _read_config(folder: str) -> tuple[str, dict]:
    path = os.path.join(folder, "config.json")
    try:
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
    except OSError as e:
        raise ModelError(f"[hf] {path}: cannot read: {e.strerror or e}") from None
    except ValueError as e:
        raise ModelError(f"[hf] {path}: not valid JSON: {e}") from None
    if not isinstance(cfg, dict):
        raise ModelError(f"[hf] {path}: expected a JSON object")
    return path, cfg


def _architecture(cfg: dict) -> str | None:
    """The supported HF class this config names: from `architectures`, or, when that key is
    absent, from `model_type`."""
    archs = cfg.get("architectures")
    if isinstance(archs, list):
        return next((a for a in archs if isinstance(a, str) and a in ARCHITECTURES), None)
    return _MODEL_TYPES.get(cfg.get("model_type")) if archs is None else None


def is_hf_llm_folder(path) -> bool:
    """Whether `path` is a folder whose config.json names a supported decoder (never raises)."""
    try:
        if not os.path.isdir(path):
            return False
        return _architecture(_read_config(os.fspath(path))[1]) is not None
    except (ModelError, OSError, TypeError, ValueError):
        return False


def config_from_hf(folder: str, weights: "HFWeights | None" = None) -> LlamaConfig:
    """config.json -> LlamaConfig. With the folder's weights, the vocabulary comes from the
    embedding's rows and the embeddings are tied exactly when lm_head.weight is not stored."""
    path, cfg = _read_config(folder)
    cls = _architecture(cfg)
    if cls is None:
        raise ModelError(f"[hf] {path}: architectures {cfg.get('architectures')!r} "
                         f"(model_type {cfg.get('model_type')!r}) is not supported "
                         f"(supported: {', '.join(ARCHITECTURES)})")
    arch, attn_bias = ARCHITECTURES[cls]
    missing = object()

    def num(key, default=missing, kind=int):
        v = cfg.get(key, default)
        if v is missing:
            raise ModelError(f"[hf] {path}: key '{key}' is missing")
        ok = (isinstance(v, int) and not isinstance(v, bool) and 0 < v < 2**31) if kind is int else \
             (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0)
        if not ok:
            raise ModelError(f"[hf] {path}: key '{key}' = {v!r} is not a positive "
                             f"{'int' if kind is int else 'number'}")
        return kind(v)

    def unsupported(key, why):
        raise ModelError(f"[hf] {path}: key '{key}' = {cfg.get(key)!r}: {why}")

    hidden, heads = num("hidden_size"), num("num_attention_heads")
    kv_heads = num("num_key_value_heads") if cfg.get("num_key_value_heads") is not None else heads
    if cfg.get("head_dim") is not None:
        head_dim = num("head_dim")
    elif hidden % heads:
        unsupported("num_attention_heads", f"does not divide hidden_size {hidden} (and no head_dim)")
    else:
        head_dim = hidden // heads
    if cfg.get("hidden_act", "silu") not in ("silu", "swish"):
        unsupported("hidden_act", "ember's LLaMA block is SwiGLU (silu)")
    for key in ("attention_bias", "mlp_bias"):   # llama's o_proj / MLP biases: not in the builder
        if arch == "llama" and cfg.get(key, False) is not False:
            unsupported(key, "linear biases beyond qwen2's q/k/v are not supported")
    if cfg.get("partial_rotary_factor") not in (None, 1, 1.0):
        unsupported("partial_rotary_factor", "partial rotary embeddings are not supported")
    theta, scaling = _rope(path, cfg)

    context = num("max_position_embeddings", _DEFAULT_CONTEXT[arch])
    # Sliding-window attention is not in the builder; within one window it equals full
    # attention, so the context stops there and every result stays exact.
    window = cfg.get("sliding_window")
    if arch == "qwen2" and not cfg.get("use_sliding_window", False):
        window = None
    if window is not None:
        context = min(context, num("sliding_window"))

    stored = weights.by_hf_name if weights is not None else {}
    # A stored head is used even when the config says tied, as transformers 5 does (it ties
    # only when the head is absent or equal to the embedding); a missing untied head is an error.
    tied = cfg.get("tie_word_embeddings")
    if tied is not None and not isinstance(tied, bool):
        unsupported("tie_word_embeddings", "expected true or false")
    if weights is not None:
        if tied is False and "lm_head.weight" not in stored:
            unsupported("tie_word_embeddings", "lm_head.weight is not in the safetensors files")
        tied = "lm_head.weight" not in stored
    emb = stored.get("model.embed_tokens.weight")
    if emb is not None and len(emb.shape) == 2:
        vocab = int(emb.shape[0])
        if cfg.get("vocab_size") is not None and num("vocab_size") != vocab:
            unsupported("vocab_size", f"model.embed_tokens.weight has {vocab} rows")
    else:
        vocab = num("vocab_size")
    out = LlamaConfig(
        arch=arch, vocab_size=vocab, hidden=hidden, layers=num("num_hidden_layers"),
        heads=heads, kv_heads=kv_heads, head_dim=head_dim, ffn=num("intermediate_size"),
        rms_eps=num("rms_norm_eps", 1e-6, float), rope_theta=theta, context_length=context,
        rope_interleaved=False, rope_scaling=scaling, attn_bias=attn_bias,
        tied_embeddings=bool(tied))
    out.check(path)
    return out


def _rope(path: str, cfg: dict) -> tuple[float, dict]:
    """(rope_theta, rope scaling for build.rope_inv_freq) from transformers 5's
    `rope_parameters` or the older `rope_theta` + `rope_scaling`."""
    key = "rope_parameters" if cfg.get("rope_parameters") is not None else "rope_scaling"
    params = cfg.get(key) or {}
    if not isinstance(params, dict) or any(isinstance(v, dict) for v in params.values()):
        raise ModelError(f"[hf] {path}: key '{key}' must be one object of rope parameters "
                         f"(per-layer-type rope is not supported), not {params!r}")
    theta = params.get("rope_theta", cfg.get("rope_theta", 10000.0))
    if isinstance(theta, bool) or not isinstance(theta, (int, float)) or not 0 < theta < math.inf:
        raise ModelError(f"[hf] {path}: rope_theta = {theta!r} is not a positive number")
    kind = params.get("rope_type", params.get("type", "default"))
    if kind == "default":
        return float(theta), {}
    need = {"linear": ("factor",),
            "llama3": ("factor", "low_freq_factor", "high_freq_factor",
                       "original_max_position_embeddings")}.get(kind if isinstance(kind, str) else None)
    if need is None:
        raise ModelError(f"[hf] {path}: key '{key}': rope type {kind!r} is not supported "
                         "(supported: default, linear, llama3)")
    scaling = {"type": kind}
    for k in need:
        v = params.get(k)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < math.inf:
            raise ModelError(f"[hf] {path}: key '{key}.{k}' = {v!r} is not a positive number")
        scaling[k] = v
    if kind == "llama3" and not scaling["high_freq_factor"] > scaling["low_freq_factor"]:
        raise ModelError(f"[hf] {path}: key '{key}': high_freq_factor must exceed low_freq_factor")
    return float(theta), scaling


# ---- safetensors ----------------------------------------------------------------------------

@dataclass
class HFTensor:
    """One tensor as stored: `shape` in numpy order ([out, in] for a linear weight)."""

    name: str            # GGUF name
    hf_name: str
    file: str            # shard basename
    ggml_type: str       # safetensors dtype: F32, F16, BF16, ...
    shape: tuple
    offset: int          # absolute byte offset in the shard
    n_bytes: int


class _Shard:
    def __init__(self, path: str, mm, size: int):
        self.path, self.name, self.mm, self.size = path, os.path.basename(path), mm, size

    def close(self):
        mm, self.mm = self.mm, None
        if mm is not None:
            try:
                mm.close()
            except BufferError:
                pass      # a view is still referenced (by a traceback): the map goes with it


def _read_header(path: str) -> tuple[_Shard, dict]:
    """Maps one safetensors file and validates its header -> (shard, {hf name: HFTensor})."""
    name = os.path.basename(path)

    def fail(msg):
        raise ModelError(f"[safetensors] {name}: {msg}")

    if not os.path.isfile(path):
        fail("not a regular file" if os.path.exists(path) else "missing")
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < 8:
                fail(f"{size} bytes is too short for a safetensors header (8)")
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as e:
        fail(f"cannot map: {e.strerror or e}")
    shard = _Shard(path, mm, size)
    try:
        return shard, _parse_header(mm, size, name, fail)
    except BaseException:
        shard.close()
        raise


def _parse_header(mm, size, name, fail) -> dict:
    (n,) = struct.unpack("<Q", mm[:8])
    if n > min(size - 8, MAX_HEADER_BYTES):
        fail(f"header length {n} runs past the file end ({size} bytes)" if n > size - 8
             else f"header length {n} exceeds the {MAX_HEADER_BYTES}-byte limit")

    def no_duplicates(pairs):
        d = {}
        for k, v in pairs:
            if k in d:
                fail(f"header names tensor '{k}' twice")
            d[k] = v
        return d

    try:
        header = json.loads(mm[8:8 + n].decode("utf-8"), object_pairs_hook=no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        fail(f"header is not valid JSON: {e}")
    if not isinstance(header, dict):
        fail("header is not a JSON object")
    data_start, data_size = 8 + n, size - 8 - n
    tensors, spans = {}, []
    for tname, info in header.items():
        if tname == "__metadata__":
            if not isinstance(info, dict):
                fail("__metadata__ is not an object")
            continue

        def bad(msg):
            fail(f"tensor '{tname}': {msg}")

        if not isinstance(info, dict):
            bad("entry is not an object")
        dtype, shape, offs = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if dtype not in _DTYPE_SIZES:
            bad(f"unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool)
                                                  and 0 <= d < 2**63 for d in shape):
            bad(f"shape {shape!r} is not a list of non-negative ints")
        if (not isinstance(offs, list) or len(offs) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in offs)):
            bad(f"data_offsets {offs!r} is not [begin, end]")
        begin, end = offs
        if not 0 <= begin <= end <= data_size:
            bad(f"data_offsets [{begin}, {end}] lie outside the {data_size}-byte data section")
        want = math.prod(shape) * _DTYPE_SIZES[dtype]    # Python ints: no overflow
        if end - begin != want:
            bad(f"{dtype} {shape} needs {want} bytes; data_offsets [{begin}, {end}] hold {end - begin}")
        tensors[tname] = HFTensor(gguf_name(tname) or tname, tname, name, dtype, tuple(shape),
                                  data_start + begin, want)
        spans.append((begin, end, tname))
    spans.sort()
    for (s0, e0, n0), (s1, e1, n1) in zip(spans, spans[1:]):
        if s1 < e0:
            fail(f"tensors '{n0}' and '{n1}' overlap (bytes {s1}..{min(e0, e1)})")
    return tensors


def _shard_files(folder: str) -> tuple[list[str], dict | None]:
    """(shard file names, the index's weight map or None)."""
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.exists(index):
        try:
            with open(index, encoding="utf-8") as f:
                wmap = json.load(f).get("weight_map")
        except (OSError, ValueError, AttributeError) as e:
            raise ModelError(f"[hf] {index}: cannot read the weight map: {e}") from None
        if not isinstance(wmap, dict) or not all(isinstance(v, str) for v in wmap.values()):
            raise ModelError(f"[hf] {index}: 'weight_map' must map tensor names to file names")
        for v in set(wmap.values()):
            if v in ("", ".", "..") or os.path.basename(v) != v or "\\" in v or "\0" in v:
                raise ModelError(f"[hf] {index}: weight file {v!r} is not a file name in the folder")
        return sorted(set(wmap.values())), wmap
    single = os.path.join(folder, "model.safetensors")
    if os.path.exists(single):
        return ["model.safetensors"], None
    files = sorted(f for f in os.listdir(folder) if f.endswith(".safetensors"))
    if not files:
        raise ModelError(f"[hf] {folder}: no *.safetensors weights (nor model.safetensors.index.json)")
    return files, None


class HFWeights:
    """The tensors of a checkpoint folder under their GGUF names, as build_llama reads them;
    also `path`, `tensors` and `tensor_bytes_total` as model.memory_plan reads a GGUFFile."""

    def __init__(self, folder: str, shards: dict, by_hf_name: dict):
        self.path = folder
        self._shards = shards                # basename -> _Shard
        self.by_hf_name = by_hf_name         # every stored tensor
        self.tensors = {t.name: t for t in by_hf_name.values()}   # GGUF name -> HFTensor

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    @property
    def tensor_bytes_total(self) -> int:
        return sum(t.n_bytes for t in self.tensors.values())

    def tensor(self, name: str) -> HFTensor:
        t = self.tensors.get(name)
        if t is None:
            raise ModelError(f"[hf] {self.name}: no tensor '{name}'")
        return t

    def dequantize(self, name: str) -> np.ndarray:
        """float32 copy of a tensor, shaped `tensor.shape`."""
        t = self.tensor(name)
        mm = self._shards[t.file].mm
        if mm is None:
            raise EmberError(f"[hf] {self.name}: weights are closed; tensor '{t.hf_name}' is "
                             "no longer mapped")
        n = t.n_bytes // _DTYPE_SIZES[t.ggml_type]
        if t.ggml_type == "BF16":     # numpy has no bf16: its bits are the top half of an f32's
            bits = np.frombuffer(mm, dtype="<u2", count=n, offset=t.offset).astype(np.uint32)
            out = (bits << 16).view(np.float32)
        elif t.ggml_type in ("F32", "F16"):
            out = np.frombuffer(mm, dtype="<f4" if t.ggml_type == "F32" else "<f2",
                                count=n, offset=t.offset).astype(np.float32)   # a copy
        else:
            raise ModelError(f"[hf] {t.file}: tensor '{t.hf_name}' is {t.ggml_type}; "
                             f"weights must be {', '.join(_FLOAT_TYPES)}")
        return out.reshape(t.shape)

    def q4_blocks(self, name: str):
        raise ModelError(f"[hf] {self.name}: tensor '{name}' is {self.tensor(name).ggml_type}, not 4-bit")

    def q8_blocks(self, name: str):
        raise ModelError(f"[hf] {self.name}: tensor '{name}' is {self.tensor(name).ggml_type}, not Q8_0")

    def release(self, name: str) -> None:
        """Drops a tensor's pages from resident memory once it is copied out (as GGUFFile)."""
        t = self.tensor(name)
        mm = self._shards[t.file].mm
        if mm is None or not hasattr(mmap, "MADV_DONTNEED") or not t.n_bytes:
            return
        page = mmap.PAGESIZE
        start = t.offset // page * page
        end = min(-(-(t.offset + t.n_bytes) // page) * page, self._shards[t.file].size)
        try:
            mm.madvise(mmap.MADV_DONTNEED, start, end - start)
        except (OSError, ValueError):
            pass  # advice only

    def close(self) -> None:
        for s in self._shards.values():
            s.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"HFWeights({self.path!r}, {len(self.tensors)} tensors, {len(self._shards)} files)"


def load_hf_weights(folder) -> HFWeights:
    """Maps every safetensors file of a folder (model.safetensors, or the shards the index
    names), every header validated."""
    folder = os.path.abspath(os.fspath(folder))
    files, wmap = _shard_files(folder)
    shards, found = {}, {}
    try:
        for fname in files:
            shard, tensors = _read_header(os.path.join(folder, fname))
            shards[fname] = shard
            for hf_name, t in tensors.items():
                if hf_name in found:
                    raise ModelError(f"[safetensors] tensor '{hf_name}' is in both {found[hf_name].file} "
                                     f"and {fname}")
                found[hf_name] = t
        for hf_name, fname in (wmap or {}).items():
            if hf_name not in found or found[hf_name].file != fname:
                raise ModelError(f"[hf] model.safetensors.index.json: tensor '{hf_name}' is not in {fname}")
        return HFWeights(folder, shards, found)
    except BaseException:
        for s in shards.values():
            s.close()
        raise


def check_tensors(weights: HFWeights, cfg: LlamaConfig) -> None:
    """The stored tensors must be exactly those of `cfg`'s model, with its shapes, in a float
    dtype; `weights.tensors` then holds just the ones build_llama reads."""
    found = weights.by_hf_name
    q, kv = cfg.heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim
    want = {"model.embed_tokens.weight": (cfg.vocab_size, cfg.hidden), "model.norm.weight": (cfg.hidden,)}
    if not cfg.tied_embeddings:
        want["lm_head.weight"] = (cfg.vocab_size, cfg.hidden)
    for i in range(cfg.layers):
        p = f"model.layers.{i}."
        want.update({p + "input_layernorm.weight": (cfg.hidden,),
                     p + "post_attention_layernorm.weight": (cfg.hidden,),
                     p + "self_attn.q_proj.weight": (q, cfg.hidden),
                     p + "self_attn.k_proj.weight": (kv, cfg.hidden),
                     p + "self_attn.v_proj.weight": (kv, cfg.hidden),
                     p + "self_attn.o_proj.weight": (cfg.hidden, q),
                     p + "mlp.gate_proj.weight": (cfg.ffn, cfg.hidden),
                     p + "mlp.up_proj.weight": (cfg.ffn, cfg.hidden),
                     p + "mlp.down_proj.weight": (cfg.hidden, cfg.ffn)})
        if cfg.attn_bias:
            want.update({p + "self_attn.q_proj.bias": (q,), p + "self_attn.k_proj.bias": (kv,),
                         p + "self_attn.v_proj.bias": (kv,)})
    origin = weights.name
    for hf_name, shape in want.items():
        t = found.get(hf_name)
        if t is None:
            raise ModelError(f"[hf] {origin}: tensor '{hf_name}' is missing from the safetensors files")
        if t.shape != shape:
            raise ModelError(f"[hf] {t.file}: tensor '{hf_name}' is {list(t.shape)}, expected "
                             f"{list(shape)} from config.json")
        if t.ggml_type not in _FLOAT_TYPES:
            raise ModelError(f"[hf] {t.file}: tensor '{hf_name}' is {t.ggml_type}; weights must be "
                             f"{', '.join(_FLOAT_TYPES)}")
    for hf_name, t in found.items():
        if hf_name in want or hf_name.endswith("rotary_emb.inv_freq"):   # a buffer rope recomputes
            continue
        raise ModelError(f"[hf] {t.file}: tensor '{hf_name}' is not part of a {cfg.layers}-layer "
                         f"{cfg.arch} model as config.json describes it")
    weights.tensors = {gguf_name(n): found[n] for n in want}


# ---- the folder -----------------------------------------------------------------------------

def _chat_template(folder: str, tokenizer) -> str | None:
    """tokenizer_config.json's "chat_template" (a str, or a list of named templates: "default"),
    else chat_template.jinja, as transformers saves them."""
    cfg = _read_json(os.path.join(folder, "tokenizer_config.json"))
    tpl = cfg.get("chat_template")
    if isinstance(tpl, list):
        named = {t.get("name"): t.get("template") for t in tpl if isinstance(t, dict)}
        tpl = named.get("default")
    if isinstance(tpl, str):
        return tpl
    path = os.path.join(folder, "chat_template.jinja")
    if os.path.isfile(path):
        try:
            with open(path, encoding="utf-8") as f:
                return f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise ModelError(f"[hf] {path}: cannot read: {e}") from None
    tpl = _read_json(os.path.join(folder, "chat_template.json")).get("chat_template")
    return tpl if isinstance(tpl, str) else getattr(tokenizer, "chat_template", None)


def load_hf(folder) -> tuple[LlamaConfig, HFWeights, object, str | None]:
    """A Hugging Face decoder folder -> (config, weights, tokenizer, chat template). The weights
    stay memory-mapped: close them (or use `with`) once the graph is built."""
    from ember.llm.tokenizer import Tokenizer

    folder = os.path.abspath(os.fspath(folder))
    if not os.path.isdir(folder):
        raise ModelError(f"[hf] {folder}: not a folder")
    _, raw = _read_config(folder)
    if _architecture(raw) is None:
        config_from_hf(folder)                    # the error that lists what is supported
    weights = load_hf_weights(folder)
    try:
        cfg = config_from_hf(folder, weights)
        check_tensors(weights, cfg)
        tokenizer = Tokenizer.from_file(folder)
        # Without generation_config.json transformers stops on config.json's eos_token_id.
        if not os.path.exists(os.path.join(folder, "generation_config.json")):
            eos = raw.get("eos_token_id")
            extra = [e for e in (eos if isinstance(eos, list) else [eos])
                     if isinstance(e, int) and not isinstance(e, bool) and 0 <= e < cfg.vocab_size]
            tokenizer.eos_ids = tokenizer.eos_ids | frozenset(extra)
        template = _chat_template(folder, tokenizer)
    except BaseException:
        weights.close()
        raise
    return cfg, weights, tokenizer, template
