"""A served model's settings: DIR/<name>/config.toml of a model repository (or the flags of
`ember serve MODEL`), parsed and checked. Unknown keys are errors (a typo must not silently
leave a default in force); every error is a ModelError naming the file and the key.

    kind = "auto"               # auto | llm | graph (auto: .gguf / HF LLM folder -> llm)
    device = "cpu"
    threads = 2                 # cap on this model's share of the process-wide pool
    quantize = "int8"           # ONNX models only: int8 | int4
    precision = "fp32"
    request_timeout_s = 60.0    # per request; 0 = none
    max_queue_size = 256        # requests waiting or running before 429

    [version_policy]            # one of: latest = N | versions = [1, 3] | all = true
    latest = 1

    [batching]                  # graph models (dynamic batching); LLMs batch continuously
    max_batch_size = 8          # rows per run (1 = no batching)
    max_queue_delay_ms = 2.0    # how long a first request waits for others

    [batching.padding]          # only where named: pad along a sequence axis to batch
    axis = 1
    mask_input = "attention_mask"   # padded with 0
    value = 0                   # pad value of the other inputs
    values = { input_ids = 0 }  # per-input pad values
    outputs = ["last_hidden_state"]  # outputs that carry the axis (default: by symbolic dim)

    [llm]                       # LLM engine options (Engine(..., **llm))
    max_num_seqs = 32

    [validation]                # a check before a loaded version serves (serve/validate.py)
    feeds = "validation.npz"
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from ember.errors import ModelError

LLM_OPTIONS = ("max_model_len", "max_num_seqs", "max_num_batched_tokens", "kv_cache_bytes",
               "kv_dtype", "block_size", "enable_prefix_caching")


@dataclass(frozen=True)
class PaddingConfig:
    axis: int
    mask_input: str
    value: float = 0
    values: dict = field(default_factory=dict)      # input name -> pad value
    outputs: tuple | None = None                    # outputs carrying the axis; None: inferred


@dataclass(frozen=True)
class BatchingConfig:
    max_batch_size: int = 1
    max_queue_delay_ms: float = 0.0
    padding: PaddingConfig | None = None


@dataclass(frozen=True)
class VersionPolicy:
    latest: int | None = 1            # serve the newest N versions ...
    versions: tuple | None = None     # ... or exactly these ...
    all: bool = False                 # ... or every version

    def select(self, available) -> list[int]:
        """The versions to serve out of those available (ascending)."""
        avail = sorted(set(available))
        if self.all:
            return avail
        if self.versions is not None:
            return [v for v in avail if v in self.versions]
        return avail[-self.latest:] if self.latest else []


@dataclass(frozen=True)
class ModelConfig:
    kind: str = "auto"
    device: str = "cpu"
    threads: int | None = None
    quantize: str | None = None
    precision: str = "fp32"
    request_timeout_s: float = 0.0
    max_queue_size: int = 256
    version_policy: VersionPolicy = VersionPolicy()
    batching: BatchingConfig = BatchingConfig()
    llm: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)   # sections later layers read (e.g. [validation])

    def engine_kwargs(self) -> dict:
        kw = dict(device=self.device, threads=self.threads, precision=self.precision)
        if self.quantize:
            kw["quantize"] = self.quantize
        return kw


# Sections a later layer owns: kept as plain dicts in ModelConfig.extra, not checked here.
EXTRA_SECTIONS = ("validation", "monitor", "experiment", "route")


def load_config(path: str | None) -> ModelConfig:
    """Parses a config.toml (None or a missing file: the defaults)."""
    if path is None or not os.path.isfile(path):
        return ModelConfig()
    return parse_config(read_toml(path, "serve"), path)


def read_toml(path: str, area: str) -> dict:
    """A TOML file as a dict; ModelError("[area] path: why") when it cannot be read or parsed."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ModelError(f"[{area}] {path}: {e}") from None


def parse_config(data: dict, where: str = "config") -> ModelConfig:
    r = _Reader(data, where)
    kind = r.choice("kind", ("auto", "llm", "graph"), "auto")
    device = r.str_("device", "cpu")
    threads = r.int_("threads", None, lo=1)
    quantize = r.choice("quantize", ("int8", "int4"), None)
    precision = r.choice("precision", ("fp32", "bf16", "fp16"), "fp32")
    timeout = r.float_("request_timeout_s", 0.0, lo=0.0)
    queue = r.int_("max_queue_size", 256, lo=1)
    policy = _policy(r.section("version_policy"))
    batching = _batching(r.section("batching"))
    llm_r = r.section("llm")
    llm = {k: llm_r.take(k) for k in LLM_OPTIONS if k in llm_r.data}
    llm_r.done()
    extra = {k: r.take(k) for k in EXTRA_SECTIONS if k in r.data}
    r.done()
    if quantize and kind == "llm":
        raise ModelError(f"[serve] {where}: quantize applies to ONNX models; a GGUF model keeps "
                         "its own quantization")
    return ModelConfig(kind, device, threads, quantize, precision, timeout, queue, policy,
                       batching, llm, extra)


def _policy(r: "_Reader") -> VersionPolicy:
    given = [k for k in ("latest", "versions", "all") if k in r.data]
    if len(given) > 1:
        raise ModelError(f"[serve] {r.where}: version_policy takes one of latest, versions, all "
                         f"(got {', '.join(given)})")
    latest = r.int_("latest", 1, lo=1)
    versions = r.take("versions", None)
    if versions is not None:
        if not isinstance(versions, list) or not all(_is_int(v) and v >= 0 for v in versions):
            raise ModelError(f"[serve] {r.where}.versions must be a list of version numbers")
        versions = tuple(versions)
    every = r.bool_("all", False)
    r.done()
    if versions is not None or every:
        latest = None
    return VersionPolicy(latest, versions, every)


def _batching(r: "_Reader") -> BatchingConfig:
    size = r.int_("max_batch_size", 1, lo=1)
    delay = r.float_("max_queue_delay_ms", 0.0, lo=0.0)
    padding = None
    if "padding" in r.data:
        p = r.section("padding")
        axis = p.int_("axis", None, lo=1)
        mask = p.str_("mask_input", None)
        if axis is None or mask is None:
            raise ModelError(f"[serve] {p.where}: padding needs axis (>= 1: axis 0 is the batch) "
                             "and mask_input")
        value = p.number("value", 0)
        values = p.take("values", {})
        if not isinstance(values, dict) or not all(_is_num(v) for v in values.values()):
            raise ModelError(f"[serve] {p.where}.values must map input names to numbers")
        outputs = p.take("outputs", None)
        if outputs is not None and (not isinstance(outputs, list)
                                    or not all(isinstance(o, str) for o in outputs)):
            raise ModelError(f"[serve] {p.where}.outputs must be a list of output names")
        p.done()
        padding = PaddingConfig(axis, mask, value, dict(values),
                                tuple(outputs) if outputs is not None else None)
    r.done()
    return BatchingConfig(size, delay, padding)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class _Reader:
    """Takes keys out of one TOML table with type checks; done() rejects what is left."""

    def __init__(self, data, where: str):
        if not isinstance(data, dict):
            raise ModelError(f"[serve] {where} must be a table")
        self.data, self.where, self._seen = data, where, set()

    def take(self, key, default=None):
        self._seen.add(key)
        return self.data.get(key, default)

    def section(self, key) -> "_Reader":
        return _Reader(self.take(key, {}), f"{self.where}.{key}" if self.where else key)

    def _bad(self, key, what):
        return ModelError(f"[serve] {self.where}: {key} must be {what}, not {self.data[key]!r}")

    def int_(self, key, default, lo=None):
        v = self.take(key, default)
        if key in self.data and (not _is_int(v) or (lo is not None and v < lo)):
            raise self._bad(key, f"an int >= {lo}" if lo is not None else "an int")
        return v

    def float_(self, key, default, lo=None):
        v = self.take(key, default)
        if key in self.data and (not _is_num(v) or (lo is not None and v < lo)):
            raise self._bad(key, f"a number >= {lo}" if lo is not None else "a number")
        return float(v) if v is not None else None

    def number(self, key, default):
        v = self.take(key, default)
        if key in self.data and not _is_num(v):
            raise self._bad(key, "a number")
        return v

    def bool_(self, key, default):
        v = self.take(key, default)
        if key in self.data and not isinstance(v, bool):
            raise self._bad(key, "true or false")
        return v

    def str_(self, key, default):
        v = self.take(key, default)
        if key in self.data and not isinstance(v, str):
            raise self._bad(key, "a string")
        return v

    def choice(self, key, options, default):
        v = self.take(key, default)
        if key in self.data and v not in options:
            raise self._bad(key, "one of " + ", ".join(map(repr, options)))
        return v

    def done(self) -> None:
        left = sorted(set(self.data) - self._seen)
        if left:
            raise ModelError(f"[serve] {self.where}: unknown key(s) {', '.join(left)}")
