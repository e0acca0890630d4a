"""LlmEngine: generate / stream / chat / score over the C++ step loop (cpp/src/llm/runner.h).

The runner's loop thread steps while there is work (GIL released); one pump thread here polls
its outputs and routes each to its request's queue. Everything per request that needs text
(incremental UTF-8 detokenization, stop strings) happens on the caller's side of that queue.
"""
from __future__ import annotations

import itertools
import os
import queue
import threading
import weakref
from dataclasses import dataclass, field
from typing import Callable, Iterator

from ember.errors import EmberError, InputError

_SAMPLING_KEYS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty",
                  "presence_penalty", "frequency_penalty", "seed", "logprobs")


@dataclass
class Completion:
    text: str
    token_ids: list
    finish_reason: str            # "stop" | "length" | "abort"
    usage: dict                   # prompt_tokens, completion_tokens, total_tokens
    logprobs: list | None = None  # per generated token: logprob (and top: [(token, logprob)])
    top_logprobs: list | None = None


@dataclass
class _Request:
    id: int
    prompt: list
    stop: tuple
    q: "queue.Queue" = field(default_factory=queue.Queue)
    # Set by callers that are not a blocking thread (AsyncEngine): takes each output (from the
    # pump thread) instead of q; it must not block or raise.
    sink: Callable | None = None

    def put(self, out) -> None:
        (self.sink or self.q.put)(out)


class LlmEngine:
    def __init__(self, path: str, threads: int | None = None, kernels: str = "auto",
                 device: str = "cpu", device_options: dict | None = None, **llm_options):
        from ember import _core
        from ember.llm.build import build_llama
        from ember.llm.gguf import load_gguf
        from ember.llm.model import config_from_gguf, memory_plan, resolve_settings
        from ember.llm.tokenizer import Tokenizer

        if os.path.isdir(path):  # HOOK: a Hugging Face folder (config.json + safetensors): llm/hf.py
            from ember.llm.hf import load_hf
            cfg, weights, self.tokenizer, self.chat_template = load_hf(path)
            with weights:  # memory_plan and build_llama read it as they read a GGUFFile
                self.config = cfg
                self.settings = s = resolve_settings(cfg, **llm_options)
                self.memory_plan = memory_plan(weights, cfg, s)
                graph = build_llama(cfg, weights, kv_dtype=s.kv_dtype)
        else:
            with load_gguf(path) as gguf:
                self.config = cfg = config_from_gguf(gguf)
                self.settings = s = resolve_settings(cfg, **llm_options)
                self.memory_plan = memory_plan(gguf, cfg, s)
                self.tokenizer = Tokenizer.from_gguf(gguf)
                self.chat_template = gguf.get("tokenizer.chat_template")
                graph = build_llama(cfg, gguf, kv_dtype=s.kv_dtype)
        # On a device the step graph's nodes run there where it has kernels (Q4MatMul, norms,
        # Rope, ...). The runner keeps the KV caches in device memory when the device runs
        # PagedAttention, else on the host with PagedAttention on the CPU (it writes them in
        # place: runtime/plan.cpp, stateful_on_device); other ops the device lacks fall back.
        self._session = _core.Session(graph, threads=threads or 0, plan_cache_size=64,
                                      reference_kernels=kernels == "reference", device=device,
                                      **(device_options or {}))
        self._runner = _core.LlmRunner(
            self._session, layers=cfg.layers, kv_heads=cfg.kv_heads, head_dim=cfg.head_dim,
            vocab=cfg.vocab_size, kv_dtype=s.kv_dtype, block_size=s.block_size,
            num_blocks=s.num_blocks(cfg), max_num_seqs=s.max_num_seqs,
            max_num_batched_tokens=s.max_num_batched_tokens, max_model_len=s.max_model_len,
            prefix_caching=s.enable_prefix_caching)
        self._ids = itertools.count(1)
        self._requests: dict[int, _Request] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._runner.start()
        stop = threading.Event()
        self._pump = threading.Thread(target=_pump_outputs, args=(weakref.ref(self), self._runner, stop),
                                      name="ember-llm-pump", daemon=True)
        self._pump.start()
        # The C++ loop thread must be joined before the interpreter tears down: an engine
        # nobody closed is closed at exit (and when collected).
        self._finalizer = weakref.finalize(self, _shutdown, self._runner, self._pump, stop)

    # ---- plumbing ----

    def _route(self, out) -> None:
        with self._lock:
            req = self._requests.get(out[0])
        if req is not None:
            req.put(out)

    def _forget(self, req: _Request) -> None:
        with self._lock:
            self._requests.pop(req.id, None)

    def _submit(self, prompt, max_tokens, stop, sampling, sink: Callable | None = None) -> _Request:
        if self._closed:
            raise EmberError("[engine] this engine is closed")
        ids = self._prompt_ids(prompt)
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise InputError(f"[generate] max_tokens must be a positive int, not {max_tokens!r}")
        stops, stop_ids = _split_stop(stop)
        params = {k: v for k, v in sampling.items() if v is not None}
        seed = params.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)
                                 or not 0 <= seed < 2**64):
            raise InputError(f"[generate] seed must be an int in [0, 2**64), not {seed!r}")
        unknown = set(params) - set(_SAMPLING_KEYS) - {"stop_token_ids", "ignore_eos"}
        if unknown:
            raise InputError(f"[generate] unknown sampling options: {', '.join(sorted(unknown))}")
        ignore_eos = bool(params.pop("ignore_eos", False))
        stop_ids = list(stop_ids) + list(params.pop("stop_token_ids", []) or [])
        if not ignore_eos:
            stop_ids += sorted(self.tokenizer.eos_ids)
        room = self.settings.max_model_len - len(ids)
        req = _Request(next(self._ids), ids, stops, sink=sink)
        with self._lock:
            self._requests[req.id] = req
        try:
            self._runner.add_request(req.id, ids, dict(params, max_tokens=min(max_tokens, max(room, 1)),
                                                       stop_token_ids=stop_ids))
        except BaseException:
            with self._lock:
                self._requests.pop(req.id, None)
            raise
        return req

    def _prompt_ids(self, prompt) -> list:
        if isinstance(prompt, str):
            return self.tokenizer.encode(prompt)
        if isinstance(prompt, (list, tuple)) and all(isinstance(t, int) and not isinstance(t, bool)
                                                     for t in prompt):
            return list(prompt)
        raise InputError("[generate] a prompt is a str or a list of token ids")

    def _events(self, req: _Request) -> Iterator[tuple]:
        """(token, logprob, top, finished, reason) as the runner produces them."""
        try:
            while True:
                event = _event(req.q.get())
                yield event
                if event[3]:
                    return
        finally:
            self._forget(req)

    def _run(self, req: _Request, want_logprobs: bool) -> Iterator[tuple[str, Completion | None]]:
        """Text deltas of one request, with stop strings applied; the last item carries the
        Completion."""
        state = _TextState(self.tokenizer, req.stop, want_logprobs)
        events = self._events(req)
        for event in events:
            delta, done = state.feed(*event)
            if state.cut_short:  # a stop string ended it before the runner did
                self._runner.cancel([req.id])
            if delta:
                yield delta, None
            if done:
                break
        if state.cut_short:  # drain up to the final event the cancel leads to
            for _ in events:
                pass
        events.close()
        yield "", state.completion(len(req.prompt))

    # ---- API ----

    def generate(self, prompts, max_tokens: int = 128, temperature: float = 0.0, top_p: float = 1.0,
                 top_k: int = 0, seed: int | None = None, stop=None, **sampling) -> list[Completion]:
        batch = _prompt_batch(prompts)
        if not batch:
            return []
        opts = dict(sampling, temperature=temperature, top_p=top_p, top_k=top_k, seed=seed)
        reqs = []
        try:
            for p in batch:
                reqs.append(self._submit(p, max_tokens, stop, opts))
        except BaseException:
            self._runner.cancel([r.id for r in reqs])
            raise
        want = sampling.get("logprobs") is not None
        out = []
        for r in reqs:
            for _, c in self._run(r, want):
                if c is not None:
                    out.append(c)
        return out

    def stream(self, prompt, max_tokens: int = 128, stop=None, **sampling) -> Iterator[str]:
        req = self._submit(prompt, max_tokens, stop, sampling)
        gen = self._run(req, False)
        try:
            for delta, c in gen:
                if delta:
                    yield delta
        finally:
            # Abandoned or interrupted mid-stream (close(), Ctrl-C in a wait): stop generating.
            # Cancelling a finished request is a no-op.
            self._runner.cancel([req.id])
            gen.close()

    def chat(self, messages, max_tokens: int = 128, **sampling) -> Completion:
        return self.generate(self.apply_chat_template(messages), max_tokens=max_tokens, **sampling)[0]

    def apply_chat_template(self, messages, add_generation_prompt: bool = True) -> list:
        from ember.llm.chat import render_chat
        if not self.chat_template:
            raise InputError("[chat] this model has no chat template (tokenizer.chat_template)")
        tok = self.tokenizer
        text = render_chat(self.chat_template, messages, add_generation_prompt=add_generation_prompt,
                           bos_token=_tok_text(tok, tok.bos_id), eos_token=_tok_text(tok, tok.eos_id))
        return tok.encode(text, add_special_tokens=False)

    def score(self, texts) -> list[dict]:
        """Per-token logprobs of each text under the model (teacher-forced) and its perplexity:
        [{"token_ids", "logprobs" (None for the first token), "perplexity"}]. Runs the step
        graph directly on a private KV cache, in chunks of max_num_batched_tokens."""
        import numpy as np
        single = isinstance(texts, str)
        out = []
        for text in ([texts] if single else list(texts)):
            ids = self._prompt_ids(text)
            if len(ids) > self.settings.max_model_len:
                raise InputError(f"[score] the text has {len(ids)} tokens; max_model_len is "
                                 f"{self.settings.max_model_len}")
            logits = self._all_logits(ids)
            lp = logits - logits.max(-1, keepdims=True)
            lp = lp - np.log(np.exp(lp).sum(-1, keepdims=True))
            token_lp = [None] + [float(lp[i, ids[i + 1]]) for i in range(len(ids) - 1)]
            nll = -np.mean(token_lp[1:]) if len(ids) > 1 else float("nan")
            out.append({"token_ids": ids, "logprobs": token_lp, "perplexity": float(np.exp(nll))})
        return out[0] if single else out

    def _all_logits(self, ids):
        """Logits [len(ids), vocab] at every position, through the step graph."""
        import numpy as np
        cfg, s = self.config, self.settings
        bs, n = s.block_size, len(ids)
        nb = -(-n // bs)
        mb = -(-s.max_model_len // bs)
        kvt = np.float16 if s.kv_dtype == "f16" else np.float32
        shape = (nb, bs, cfg.kv_heads, cfg.head_dim)
        if self._runner.kv_on_device():  # where the device's PagedAttention reads and writes them
            name = "float16" if s.kv_dtype == "f16" else "float32"
            caches = [self._session.device_zeros(name, list(shape)) for _ in range(2 * cfg.layers)]
        else:
            caches = [np.zeros(shape, kvt) for _ in range(2 * cfg.layers)]
        table = np.zeros((1, mb), np.int32)
        table[0, :nb] = np.arange(nb)
        rows = []
        for start in range(0, n, s.max_num_batched_tokens):
            chunk = ids[start:start + s.max_num_batched_tokens]
            t = len(chunk)
            feeds = [("token_ids", np.asarray(chunk, np.int32), ""),
                     ("positions", np.arange(start, start + t, dtype=np.int32), ""),
                     ("slot_mapping", np.arange(start, start + t, dtype=np.int64), ""),
                     ("query_start", np.array([0, t], np.int32), ""),
                     ("seq_lens", np.array([start + t], np.int32), ""),
                     ("block_tables", table, ""),
                     ("logits_indices", np.arange(t, dtype=np.int32), ""),
                     ("prompt_rows", np.ones(t, np.uint8), "")]
            for i in range(cfg.layers):
                feeds += [(f"k_cache.{i}", caches[2 * i], ""), (f"v_cache.{i}", caches[2 * i + 1], "")]
            rows.append(self._session.run(feeds, [])[0][1])
        return np.concatenate(rows)

    def stats(self) -> dict:
        return dict(self._runner.stats())

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._finalizer()
        with self._lock:
            pending = list(self._requests.values())
        for r in pending:
            r.put((r.id, 0, 0.0, [], True, "error: the engine was closed", -1.0))


def _prompt_batch(prompts) -> list:
    """generate()'s prompts (str | list[int] | a list of either) -> a list of prompts."""
    single = isinstance(prompts, str) or (isinstance(prompts, (list, tuple)) and prompts
                                          and all(isinstance(t, int) for t in prompts))
    return [prompts] if single else list(prompts)


def _event(out) -> tuple:
    """A runner output (id, token, logprob, top, finished, reason, queued_s) -> (token, logprob,
    top, finished, reason); a failed request raises EmberError."""
    _, token, logprob, top, finished, reason, _ = out
    if reason.startswith("error"):
        raise EmberError(f"[generate] request failed: {reason[len('error: '):]}")
    return token, logprob, top, finished, reason


class _TextState:
    """What one request's events mean as text: incremental UTF-8 detokenization, stop strings,
    and how much may be streamed yet (a suffix that may start a stop string is held back).
    Shared by the blocking path (LlmEngine._run) and ember.AsyncEngine.

    feed(*event) takes each event in order and returns (delta, done); after done, completion()
    is the result. cut_short: a stop string ended the request while the runner still runs it
    (the caller cancels it there)."""

    def __init__(self, tokenizer, stops, want_logprobs: bool):
        self._tok = tokenizer
        self._dec = tokenizer.incremental_decoder()
        self._stops = stops
        self._want = want_logprobs
        self.text, self.tokens, self.logprobs, self.tops = "", [], [], []
        self.reason = "length"
        self.cut_short = False
        self._emitted = 0

    def feed(self, token, logprob, top, finished, why) -> tuple[str, bool]:
        if why == "abort":
            self.reason = "abort"
            return self._emit(0), True
        self.tokens.append(token)
        if self._want:
            self.logprobs.append(logprob)
            self.tops.append(top)
        stop_token = finished and why == "stop"
        # Models may pad their vocabulary past the tokenizer's (Qwen2): such ids have no text.
        if not stop_token and token < self._tok.vocab_size:
            self.text += self._dec.push(token)
        if finished:
            self.text += self._dec.flush()
            self.reason = why
        cut = _find_stop(self.text, self._stops)
        if cut is not None:
            self.text, self.reason = self.text[:cut], "stop"
            self.cut_short = not finished
        done = finished or cut is not None
        return self._emit(0 if done else _stop_prefix_len(self.text, self._stops)), done

    def _emit(self, held: int) -> str:
        end = len(self.text) - held
        if end <= self._emitted:
            return ""
        delta, self._emitted = self.text[self._emitted:end], end
        return delta

    def completion(self, prompt_tokens: int) -> Completion:
        n = len(self.tokens)
        usage = dict(prompt_tokens=prompt_tokens, completion_tokens=n, total_tokens=prompt_tokens + n)
        return Completion(self.text, self.tokens, self.reason, usage,
                          self.logprobs if self._want else None, self.tops if self._want else None)


def _pump_outputs(engine_ref, runner, stop) -> None:
    """Routes the runner's outputs to their requests until stopped or the engine is gone (it
    holds only a weak reference, so an abandoned engine can be collected)."""
    while not stop.is_set():
        outs = runner.poll(50)
        engine = engine_ref()
        if engine is None:
            return
        for out in outs:
            engine._route(out)
        del engine


def _shutdown(runner, pump, stop) -> None:
    stop.set()
    runner.stop()
    if pump is not threading.current_thread():
        pump.join()


def _tok_text(tok, tid) -> str:
    return (tok.id_to_token(tid) or "") if tid is not None else ""


def _split_stop(stop) -> tuple[tuple, tuple]:
    if stop is None:
        return (), ()
    items = [stop] if isinstance(stop, (str, int)) else list(stop)
    strs = tuple(s for s in items if isinstance(s, str))
    ids = tuple(s for s in items if isinstance(s, int) and not isinstance(s, bool))
    if len(strs) + len(ids) != len(items) or any(not s for s in strs):
        raise InputError("[generate] stop must be a non-empty str, a token id, or a list of them")
    return strs, ids


def _find_stop(text: str, stops) -> int | None:
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else None


def _stop_prefix_len(text: str, stops) -> int:
    """Length of the longest suffix of text that is a proper prefix of a stop string."""
    best = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:n]):
                best = n
                break
    return best
