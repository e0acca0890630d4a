"""Engine: the one entry point. Picks the frontend, compiles the graph, owns the C++ session."""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np

from ember.errors import EmberError, InputError

_DTYPES = {"float32", "float16", "bfloat16", "float64", "int8", "uint8", "int16", "int32",
           "int64", "bool"}


_log = logging.getLogger("ember")


def _resolve_device(device) -> str:
    """'cpu', 'cuda[:N]' (registered on first use) or another registered device (tests)."""
    if not isinstance(device, str) or not device:
        raise EmberError(f"[engine] device must be 'cpu', 'cuda' or 'cuda:N', not {device!r}")
    if device == "cpu":
        return device
    if device == "cuda" or device.startswith("cuda:"):
        from ember import cuda
        return cuda.device(device)
    from ember import _core
    if device in _core.device_names():
        return device
    raise EmberError(f"[engine] device must be 'cpu', 'cuda' or 'cuda:N', not {device!r}")


def _on_accelerator(value) -> bool:
    """A DLPack tensor outside host memory (torch / cupy CUDA tensors)."""
    if isinstance(value, np.ndarray) or not hasattr(value, "__dlpack_device__"):
        return False
    try:
        return int(value.__dlpack_device__()[0]) not in (1, 3)  # kDLCPU, kDLCUDAHost
    except Exception:  # noqa: BLE001 - not a usable DLPack object: treated as host data
        return False


def _check_text(s: str, what: str) -> None:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(f"[run] {what} {s!r} is not valid UTF-8 text") from None


class TensorInfo(NamedTuple):
    """A graph input or output: numpy dtype name and shape (str for symbolic dims, None unknown)."""

    name: str
    dtype: str
    shape: list | None


def _bfloat16():
    try:
        import ml_dtypes
        return ml_dtypes.bfloat16
    except ImportError:  # bf16 outputs then come back as raw uint16 bits
        return None


class Engine:
    """Compiles a model once and runs it many times.

    model: path to an .onnx file, an onnx.ModelProto, the bytes of one, or a known model name
    ("minilm-l6"). threads caps this engine's share of the process-wide thread pool.
    quantize: None, "int8" (dynamic W8A8), "int4" (MatMulNBits, group-wise) or an
    ember.QuantConfig: the ONNX model is quantized in memory (ember.quantize_model) at load.
    quant_fallbacks lists (name, op) of quantization nodes left unfused after the graph passes
    (they run on slower reference paths; a QuantFallbackWarning names them at load).
    memory_limit (bytes) refuses feeds whose plan would need more. kernels="reference" runs
    every node with its scalar reference kernel (for testing the fast kernels).
    device: "cpu", "cuda" or "cuda:N": each node runs on the GPU where the CUDA backend has a
    kernel for it at the plan's shapes, else on the CPU, with copies only where values cross;
    device_fallbacks lists (name, op) of the nodes put on the CPU so far (each logged once on
    the "ember" logger). An LLM's step graph is placed the same way: Q4MatMul, Q8MatMul and
    Q8Gather (GGUF Q8_0), norms, Rope, and PagedAttention over KV caches kept in GPU memory.
    precision "fp16" / "bf16" lets the GPU use half-precision tensor cores for matmuls and
    attention (fp32 accumulation); on the CPU, "bf16" runs the weight matmuls, attention and
    convs on AVX512_BF16 dot products with fp32 accumulation, norms and softmax in fp32, where
    the CPU has them (else fp32); deterministic asks the GPU for results that do not depend on
    the batch size.
    Engine.run may be called from several threads at once: each compiled plan (one per input
    shape signature) runs one call at a time; calls with different shapes run in parallel.
    """

    def __init__(self, model: Any, device: str = "cpu", threads: int | None = None,
                 quantize: Any = None, precision: str = "fp32", memory_limit: int | None = None,
                 kernels: str = "auto", plan_cache_size: int = 8, deterministic: bool = False,
                 **llm_options):
        from ember import _core
        from ember.onnx_import import import_model

        self._source = model if isinstance(model, (str, os.PathLike)) else None  # for embed()
        self.device = _resolve_device(device)
        if quantize is not None:
            from ember.quantize.config import config_from
            quantize = config_from(quantize)      # InputError for anything but int8/int4/config
        if precision not in ("fp32", "fp16", "bf16"):
            raise EmberError(f"[engine] precision must be 'fp32', 'fp16' or 'bf16', not {precision!r}")
        if precision == "fp16" and self.device == "cpu":
            raise EmberError("[engine] precision='fp16' applies to GPU engines; the CPU runs "
                             "'fp32' or 'bf16'")
        if precision == "bf16" and self.device == "cpu" and _core.cpu_isa() != "avx512bf16":
            _log.warning("precision='bf16': this CPU (or EMBER_CPU_ISA=%s) has no AVX512_BF16 "
                         "dot products; the CPU runs fp32", _core.cpu_isa())
        if not isinstance(deterministic, bool):
            raise EmberError(f"[engine] deterministic must be True or False, not {deterministic!r}")
        if kernels not in ("auto", "reference"):
            raise EmberError(f"[engine] kernels must be 'auto' or 'reference', not {kernels!r}")
        if threads is not None and (not isinstance(threads, int) or not 1 <= threads < 2**31):
            raise EmberError(f"[engine] threads must be a positive int, not {threads!r}")
        if memory_limit is not None and (not isinstance(memory_limit, int)
                                         or not 1 <= memory_limit < 2**63):
            raise EmberError(f"[engine] memory_limit must be a positive int, not {memory_limit!r}")
        if not isinstance(plan_cache_size, int) or not 1 <= plan_cache_size < 2**31:
            raise EmberError(f"[engine] plan_cache_size must be a positive int, not {plan_cache_size!r}")

        if isinstance(model, (str, os.PathLike)) and not os.path.exists(model):
            from ember import hub
            model = hub.resolve(str(model))
        self._llm = None
        self.device_fallbacks = []
        # An LLM on a device: its step graph's nodes run there where the device has kernels.
        # precision and deterministic are device options there (the CPU's LLM path keeps its own).
        llm_device = {} if self.device == "cpu" else dict(precision=precision,
                                                          deterministic=deterministic)
        if isinstance(model, (str, os.PathLike)) and str(model).lower().endswith(".gguf"):
            self._init_llm(str(model), threads, quantize, kernels, llm_options, llm_device)
            return
        if isinstance(model, (str, os.PathLike)) and os.path.isdir(model):  # HOOK: HF decoder folder
            from ember.llm.hf import is_hf_llm_folder
            if is_hf_llm_folder(model):
                self._init_llm(os.fspath(model), threads, quantize, kernels, llm_options,
                               llm_device)
                return
        if llm_options:
            raise EmberError(f"[engine] {', '.join(sorted(llm_options))}: LLM options apply to "
                             "GGUF models only")
        base_dir = None
        if quantize is not None:
            from ember.quantize.api import quantize_for_engine
            model, base_dir = quantize_for_engine(model, quantize)
        graph, self.info = import_model(model, base_dir)
        self.inputs = [TensorInfo(t.name, t.dtype, t.shape) for t in self.info.inputs]
        self.outputs = [TensorInfo(t.name, t.dtype, t.shape) for t in self.info.outputs]
        self._session = _core.Session(graph, threads=threads or 0, memory_limit=memory_limit or 0,
                                      reference_kernels=kernels == "reference",
                                      plan_cache_size=plan_cache_size, device=self.device,
                                      precision=precision, deterministic=deterministic)
        # Quantized nodes the fusion passes left alone run on slow reference paths: say which.
        from ember.quantize.fallback import warn_fallbacks
        self.quant_fallbacks = [tuple(f) for f in self._session.quant_fallbacks()]
        warn_fallbacks(self.quant_fallbacks)

    def _init_llm(self, path, threads, quantize, kernels, llm_options, device_options):
        from ember.llm.engine import LlmEngine
        if quantize is not None:
            raise EmberError("[engine] quantize= applies to ONNX models; a GGUF model keeps the "
                             "quantization its file has")
        self._llm = LlmEngine(path, threads=threads, kernels=kernels, device=self.device,
                              device_options=device_options, **llm_options)
        self._session = self._llm._session
        self.info = None
        self.inputs, self.outputs, self.quant_fallbacks = [], [], []

    def _need_llm(self, what):
        if getattr(self, "_llm", None) is None:
            if getattr(self, "_session", None) is None:
                raise EmberError("[engine] this engine is closed")
            raise EmberError(f"[engine] {what} needs a decoder LLM (a .gguf model); this engine "
                             "runs an ONNX graph: use run()")
        return self._llm

    # ---- LLMs ----

    def generate(self, prompts, max_tokens: int = 128, temperature: float = 0.0, top_p: float = 1.0,
                 top_k: int = 0, seed: int | None = None, stop=None, **sampling):
        """str | list[str] | list[int] | list[list[int]] -> list[Completion(text, token_ids,
        finish_reason, usage)]. Every prompt runs concurrently (continuous batching)."""
        out = self._need_llm("generate").generate(
            prompts, max_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
            seed=seed, stop=stop, **sampling)
        return self._noted(out)

    def _noted(self, result):
        """result, after logging the device fallbacks of the plans the LLM call compiled."""
        if self.device != "cpu":
            self._note_device_fallbacks(self._session)
        return result

    def stream(self, prompt, max_tokens: int = 128, stop=None, **sampling):
        """Iterator of text deltas of one prompt."""
        return self._need_llm("stream").stream(prompt, max_tokens=max_tokens, stop=stop, **sampling)

    def chat(self, messages, max_tokens: int = 128, **sampling):
        """Applies the model's chat template (sandboxed jinja2) and generates -> Completion."""
        return self._noted(self._need_llm("chat").chat(messages, max_tokens=max_tokens, **sampling))

    def score(self, texts):
        """Teacher-forced per-token logprobs and perplexity of each text (LLMs)."""
        return self._noted(self._need_llm("score").score(texts))

    @property
    def tokenizer(self):
        return self._need_llm("tokenizer").tokenizer

    @property
    def memory_plan(self) -> dict:
        return self._need_llm("memory_plan").memory_plan

    def llm_stats(self) -> dict:
        return self._need_llm("llm_stats").stats()

    # ---- encoders ----

    def embed(self, texts, batch_size: int = 32) -> np.ndarray:
        """Pooled (and, where the model says, L2-normalised) sentence embeddings, as
        sentence-transformers' encode computes them: str -> float32 [dim]; list of str ->
        float32 [n, dim]. Needs an encoder whose folder has tokenizer.json and a
        sentence-transformers config (modules.json / 1_Pooling): a known name ("minilm-l6"),
        that folder, or an .onnx file inside it. See ember.embed."""
        if getattr(self, "_llm", None) is not None:
            raise EmberError("[engine] embed needs an encoder (e.g. 'minilm-l6'); this engine "
                             "runs a decoder LLM (GGUF): use generate / score")
        self._live_session()                      # EmberError once closed
        embedder = getattr(self, "_embedder", None)
        if embedder is None:
            from ember.embed import Embedder, find_st_folder
            folder = find_st_folder(getattr(self, "_source", None))
            if folder is None:
                source = getattr(self, "_source", None) or "an in-memory model"
                raise EmberError("[engine] embed needs an encoder with a sentence-transformers "
                                 "config (tokenizer.json + modules.json or 1_Pooling/config.json "
                                 "next to the model, or a known encoder name such as 'minilm-l6'); "
                                 f"this engine was created from {source}")
            embedder = self._embedder = Embedder(folder, self.inputs, self.outputs)
        return embedder.embed(self.run, texts, batch_size=batch_size)

    # ---- running ----

    def run(self, feeds: Mapping[str, Any], outputs: Sequence[str] | None = None,
            device_outputs: bool = False) -> dict:
        """Runs the graph: feeds {name: array-like} -> {output name: np.ndarray}.

        On a GPU engine, feeds may be CUDA tensors of that GPU (torch, cupy: anything with
        __dlpack__), read in place; device_outputs=True leaves every output in device memory
        as a DLPack tensor (torch.from_dlpack / cupy.from_dlpack take it without a copy).
        Ordering: ember's stream waits for work queued on the default stream (where torch and
        cupy write unless told otherwise); a feed written on another stream must be
        synchronised first. Device outputs are complete when run returns.
        """
        if getattr(self, "_llm", None) is not None:
            raise EmberError("[engine] this engine runs a decoder LLM: use generate / stream / chat")
        session = self._live_session()
        if not isinstance(feeds, Mapping):
            raise InputError(f"[run] feeds must be a dict of name -> array, not {type(feeds).__name__}")
        if outputs is not None and (isinstance(outputs, str) or not all(isinstance(o, str) for o in outputs)):
            raise InputError("[run] outputs must be a list of output names")
        for o in outputs or []:
            _check_text(o, "output name")
        if device_outputs and self.device == "cpu":
            raise InputError("[run] device_outputs=True needs an engine on a device (device='cuda')")
        result = session.run(self._prepare_feeds(feeds), list(outputs or []), bool(device_outputs))
        if self.device != "cpu":
            self._note_device_fallbacks(session)
        if device_outputs:
            return {name: arr for name, arr, _dtype in result}
        return {name: self._export(arr, dtype) for name, arr, dtype in result}

    def _note_device_fallbacks(self, session):
        """Logs each node that a new plan put on the CPU: the device has no kernel for it, or (a
        stateful node) the state it writes is bound in host memory."""
        found = session.device_fallbacks()
        if len(found) == len(self.device_fallbacks):
            return
        new = [tuple(f) for f in found[len(self.device_fallbacks):]]
        self.device_fallbacks = [tuple(f) for f in found]
        _log.warning("%d node(s) run on the CPU (%s has no kernel for them at these shapes, or "
                     "their state is in host memory): %s",
                     len(new), self.device, ", ".join(f"{n} ({op})" for n, op in new[:20])
                     + (" ..." if len(new) > 20 else ""))

    def plan_info(self, feeds: Mapping[str, Any]) -> dict:
        """The compiled plan for these feeds: arena bytes and each node's kernel and ISA."""
        session = self._live_session()
        if not isinstance(feeds, Mapping):
            raise InputError(f"[run] feeds must be a dict of name -> array, not {type(feeds).__name__}")
        info = session.plan_info(self._prepare_feeds(feeds))
        if self.device != "cpu":
            self._note_device_fallbacks(session)
        return info

    def profile(self, feeds: Mapping[str, Any], runs: int = 10, warmup: int = 2,
                outputs: Sequence[str] | None = None):
        """Times every node over `runs` runs (after `warmup`) -> ember.profile.Profile: per-node
        and per-op-type median ms, share, GFLOP/s and GB/s; .table(), .to_chrome_trace(path)."""
        from ember.profile import profile
        return profile(self, feeds, runs=runs, warmup=warmup, outputs=outputs)

    def _prepare_feeds(self, feeds: Mapping[str, Any]) -> list:
        declared = {t.name: t.dtype for t in self.inputs}
        return [self._prepare_feed(name, value, declared.get(name)) for name, value in feeds.items()]

    @staticmethod
    def _prepare_feed(name: str, value: Any, declared: str | None):
        if not isinstance(name, str):
            raise InputError(f"[run] feed names must be str, not {type(name).__name__}")
        _check_text(name, "feed name")
        if _on_accelerator(value):  # a CUDA tensor (torch, cupy): read in place, no copy
            return (name, value, "")
        if not isinstance(value, np.ndarray):
            # Lists and scalars take the declared dtype; arrays must already have it. A lossy
            # conversion (5.7 or "5" to an int64 input, 2**70 to any) is an error, not a guess.
            target = declared if declared and declared != "bfloat16" else None
            try:
                natural = np.asarray(value)
                if target and natural.dtype.kind in "fcUSV" and np.dtype(target).kind in "iub":
                    raise InputError(f"[run] input '{name}': got {natural.dtype.name} values, "
                                     f"expected {target}")
                value = np.asarray(value, dtype=target) if target else natural
            except (TypeError, ValueError, OverflowError) as e:
                raise InputError(f"[run] input '{name}': cannot convert to an array: {e}") from None
        if not value.dtype.isnative:  # big-endian data (from a file): ember computes in native order
            value = value.astype(value.dtype.newbyteorder("="))
        dtype = value.dtype.name
        if dtype == "bfloat16":
            return (name, value.view(np.uint16), "bfloat16")
        if dtype not in _DTYPES:
            want = f"; expected {declared}" if declared else ""
            raise InputError(f"[run] input '{name}': unsupported dtype {dtype}{want}")
        return (name, value, "")

    @staticmethod
    def _export(arr: np.ndarray, dtype: str) -> np.ndarray:
        if dtype == "bfloat16":
            bf16 = _bfloat16()
            return arr.view(bf16) if bf16 is not None else arr
        return arr

    # ---- lifetime ----

    def _live_session(self):
        session = getattr(self, "_session", None)
        if session is None:
            raise EmberError("[engine] this engine is closed")
        return session

    def close(self) -> None:
        """Frees the compiled plans and weights now (runs in flight finish first)."""
        llm, self._llm = getattr(self, "_llm", None), None
        if llm is not None:
            llm.close()
        self._session = None

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if getattr(self, "_session", None) is None else getattr(self, "device", "cpu")
        return f"<ember.Engine {len(self.inputs)} inputs, {len(self.outputs)} outputs, {state}>"
