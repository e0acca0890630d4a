"""`ember generate`, `ember chat` and `ember info` on a GGUF decoder (the memory plan, without
loading it). MODEL is a .gguf path or a known name (smollm2-135m, the default).

Replies stream to stdout as they are generated; a one-line summary (tokens, finish reason,
time to first token, prompt and decode rates) goes to stderr. Ctrl-C while a reply streams
cancels that request at its next token: `generate` then exits 130, `chat` returns to its
prompt; a second Ctrl-C interrupts at once.
"""
from __future__ import annotations

import json
import os
import re
import signal
import sys
import threading
import time

from ember.errors import EmberError, InputError

DEFAULT_MODEL = "smollm2-135m"
CHAT_HELP = "/reset clears the conversation, /exit or end of input quits, /help shows this"


# ---- arguments ------------------------------------------------------------------------------

def add_parsers(sub):
    import argparse
    g = sub.add_parser("generate", help="complete a prompt with a GGUF LLM, streaming the text",
                       description=__doc__.strip(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    g.add_argument("prompt", nargs="?", default=None,
                   help="the prompt; omitted or '-': read it from stdin (when stdin is not a terminal)")
    _add_model_args(g)
    _add_sampling_args(g, max_tokens=128)
    g.add_argument("--ignore-eos", action="store_true",
                   help="keep generating past end-of-sequence tokens (for timing runs)")
    g.add_argument("--no-stream", action="store_true", help="print the text once it is complete")
    g.add_argument("--json", action="store_true",
                   help="print one JSON object (text, token_ids, finish_reason, usage, timings)")
    g.set_defaults(fn=cmd_generate)

    c = sub.add_parser("chat", help="chat with a GGUF LLM (its chat template), streaming replies",
                       description=f"Reads user lines (a '> ' prompt on a terminal, plain lines "
                                   f"from a pipe) and streams each reply. {CHAT_HELP}. Ctrl-C "
                                   "during a reply cancels it; at the prompt it exits.")
    _add_model_args(c)
    c.add_argument("--system", metavar="TEXT", help="a system message that starts the conversation")
    _add_sampling_args(c, max_tokens=512)
    c.add_argument("--stats", action="store_true", help="print a timing summary after each reply")
    c.set_defaults(fn=cmd_chat)


def add_info_args(p):
    """`ember info` options that apply to GGUF models: they shape the memory plan."""
    p.add_argument("--max-model-len", type=int, default=None, metavar="N",
                   help="GGUF: longest sequence, prompt + generated (default: context, <= 4096)")
    p.add_argument("--max-num-seqs", type=int, default=None, metavar="N",
                   help="GGUF: sequences in flight at once (default 16)")
    p.add_argument("--kv-cache-bytes", type=_parse_bytes, default=None, metavar="SIZE",
                   help="GGUF: KV cache pool, e.g. 512MiB (default: full length x sequences, "
                        "at most 256 MiB)")
    p.add_argument("--kv-dtype", choices=["f16", "f32"], default=None, help="GGUF: KV cache dtype")
    p.add_argument("--json", action="store_true", help="GGUF: print the memory plan as JSON")


def _add_model_args(p):
    p.add_argument("--model", "-m", default=DEFAULT_MODEL,
                   help=f"a .gguf file or a known model name (default {DEFAULT_MODEL})")
    p.add_argument("--threads", type=int, default=None, help="threads (default: all cores)")
    p.add_argument("--device", default="cpu",
                   help="cpu (default), cuda or cuda:N: the step graph's nodes and the KV cache "
                        "on the GPU where it has kernels")
    p.add_argument("--max-model-len", type=int, default=None, metavar="N",
                   help="longest sequence, prompt + generated (default: context, <= 4096)")
    p.add_argument("--kv-dtype", choices=["f16", "f32"], default=None,
                   help="KV cache dtype (default f16)")


def _add_sampling_args(p, max_tokens):
    p.add_argument("--max-tokens", type=int, default=max_tokens, metavar="N",
                   help=f"most tokens to generate (default {max_tokens})")
    p.add_argument("--temperature", type=float, default=0.0, metavar="T",
                   help="0 picks the likeliest token (default 0: greedy)")
    p.add_argument("--top-p", type=float, default=1.0, metavar="P", help="nucleus (default 1: off)")
    p.add_argument("--top-k", type=int, default=0, metavar="K", help="default 0: off")
    p.add_argument("--min-p", type=float, default=None, metavar="P", help="default off")
    p.add_argument("--repetition-penalty", type=float, default=None, metavar="R", help="default off")
    p.add_argument("--seed", type=int, default=None, metavar="S", help="sampling seed")
    p.add_argument("--stop", action="append", metavar="STR",
                   help="stop before this string (repeatable)")


def _parse_bytes(text):
    """'268435456', '256MiB', '256M', '1.5GiB' -> bytes."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([KMGT]?)(i?B)?\s*", text, re.IGNORECASE)
    if not m:
        import argparse
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (e.g. 268435456, 256MiB, 1GiB)")
    scale = 1024 ** " KMGT".index((m.group(2) or " ").upper())
    return int(float(m.group(1)) * scale)


def _sampling(args) -> dict:
    """The engine's sampling options from args; the engine checks the ranges, this checks what
    it would not report clearly."""
    if args.max_tokens < 1:
        raise InputError(f"[cli] --max-tokens must be >= 1, not {args.max_tokens}")
    if args.seed is not None and not 0 <= args.seed < 2**63:
        raise InputError(f"[cli] --seed must be in [0, 2**63), not {args.seed}")
    if args.stop and not all(args.stop):
        raise InputError("[cli] --stop strings must not be empty")
    opts = dict(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                min_p=args.min_p, repetition_penalty=args.repetition_penalty, seed=args.seed)
    if getattr(args, "ignore_eos", False):
        opts["ignore_eos"] = True
    return {k: v for k, v in opts.items() if v is not None}


def _model_path(model) -> str:
    """A .gguf path for MODEL (resolving known names), or an error naming what it is instead."""
    path = model if os.path.exists(model) else None
    if path is None:
        from ember import hub
        path = hub.resolve(model)
    if os.path.isdir(path) or not path.lower().endswith(".gguf"):
        raise InputError(f"[cli] {model}: this command needs a GGUF decoder LLM (.gguf file); "
                         f"`ember run` runs ONNX models")
    return path


def _load_engine(args):
    """(Engine, load seconds). One sequence at a time: a KV pool for one full-length sequence."""
    from ember.engine import Engine
    if args.threads is not None and args.threads < 1:
        raise InputError(f"[cli] --threads must be >= 1, not {args.threads}")
    path = _model_path(args.model)
    opts = {k: v for k, v in (("max_model_len", args.max_model_len),
                              ("kv_dtype", args.kv_dtype)) if v is not None}
    tty = sys.stderr.isatty()
    if tty:
        print(f"loading {args.model} ...", end="\r", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    eng = Engine(path, device=args.device, threads=args.threads, max_num_seqs=1, **opts)
    if tty:
        print("\033[K", end="", file=sys.stderr, flush=True)
    return eng, time.perf_counter() - t0


# ---- streaming ------------------------------------------------------------------------------

class _Interrupt:
    """Within the block, the first SIGINT only sets .pressed (the stream then cancels its request
    at the next delta, cleanly); a second one raises KeyboardInterrupt as usual."""

    def __enter__(self):
        self.pressed = False
        self._old = None
        if threading.current_thread() is threading.main_thread():
            old = signal.getsignal(signal.SIGINT)
            if old not in (signal.SIG_IGN, None):
                self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.pressed:
            raise KeyboardInterrupt
        self.pressed = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def stream_reply(eng, prompt, max_tokens, stop, sampling, on_delta, interrupt=None):
    """Streams one request: on_delta(text) per delta -> (Completion, timings dict).

    NOTE: Engine.stream yields text only; the token ids, finish reason and usage a summary
    needs come with LlmEngine's final Completion, so this drives the same two steps stream()
    does (_submit, _run) and cancels by request id. Move to a public streaming API that also
    returns the Completion once the engine has one."""
    llm = eng._llm
    t0 = time.perf_counter()
    req = llm._submit(prompt, max_tokens, stop, sampling)
    gen = llm._run(req, False)
    t_first = completion = None
    cancelled = False
    try:
        for delta, c in gen:
            if c is not None:
                completion = c
                break
            if t_first is None:
                t_first = time.perf_counter()
            if not cancelled:
                on_delta(delta)
            if interrupt is not None and interrupt.pressed and not cancelled:
                llm._runner.cancel([req.id])   # the request ends with finish_reason "abort"
                cancelled = True
    except BaseException:
        llm._runner.cancel([req.id])
        gen.close()
        raise
    t_end = time.perf_counter()
    t_first = t_first or t_end
    n, p = completion.usage["completion_tokens"], completion.usage["prompt_tokens"]
    ttft, decode_s = t_first - t0, t_end - t_first
    timings = dict(time_to_first_token_s=ttft, decode_s=decode_s, total_s=t_end - t0,
                   prompt_tokens_per_s=p / ttft if ttft > 0 else None,
                   decode_tokens_per_s=(n - 1) / decode_s if n > 1 and decode_s > 0 else None)
    return completion, timings


def summary(c, t, load_s=None) -> str:
    u = c.usage
    rate = lambda v, fmt: "-" if v is None else format(v, fmt)  # noqa: E731
    line = (f"{u['completion_tokens']} tokens, finish {c.finish_reason}; prompt "
            f"{u['prompt_tokens']} tokens, first token in {t['time_to_first_token_s'] * 1e3:.0f} ms "
            f"({rate(t['prompt_tokens_per_s'], '.0f')} tok/s); decode "
            f"{rate(t['decode_tokens_per_s'], '.1f')} tok/s")
    return line + (f"; load {load_s:.2f} s" if load_s is not None else "")


def _write(text):
    sys.stdout.write(text)
    sys.stdout.flush()


# ---- commands -------------------------------------------------------------------------------

def _read_prompt(args) -> str:
    if args.prompt is not None and args.prompt != "-":
        prompt = args.prompt
    elif sys.stdin is None or sys.stdin.isatty():
        raise InputError("[cli] give a PROMPT, or pipe one on stdin")
    else:
        prompt = sys.stdin.read()
        if prompt.endswith("\n"):     # the line end `echo` adds is not part of the prompt
            prompt = prompt[:-2] if prompt.endswith("\r\n") else prompt[:-1]
    if not prompt:
        raise InputError("[cli] the prompt is empty")
    return prompt


def cmd_generate(args):
    sampling = _sampling(args)
    prompt = _read_prompt(args)
    eng, load_s = _load_engine(args)
    try:
        streaming = not (args.json or args.no_stream)
        with _Interrupt() as intr:
            c, t = stream_reply(eng, prompt, args.max_tokens, args.stop, sampling,
                                _write if streaming else (lambda _: None), intr)
    finally:
        eng.close()
    if args.json:
        print(json.dumps(dict(text=c.text, token_ids=c.token_ids, finish_reason=c.finish_reason,
                              usage=c.usage, timings=dict(t, load_s=load_s))))
    else:
        _write(("" if streaming else c.text) + "\n")
    print(summary(c, t, load_s), file=sys.stderr, flush=True)
    return 130 if c.finish_reason == "abort" else 0


def _read_line(tty):
    """The next user line, or None at end of input."""
    if tty:
        try:
            return input("> ")
        except EOFError:
            print()
            return None
    line = sys.stdin.readline()
    return line.rstrip("\r\n") if line else None


def cmd_chat(args):
    sampling = _sampling(args)
    tty = sys.stdin is not None and sys.stdin.isatty()
    if tty:
        try:
            import readline  # noqa: F401  (line editing and history for input())
        except ImportError:
            pass
    eng, load_s = _load_engine(args)
    start = [{"role": "system", "content": args.system}] if args.system else []
    messages = list(start)
    try:
        if tty:
            print(f"ember chat: {args.model} ({CHAT_HELP})", file=sys.stderr)
        while True:
            try:
                line = _read_line(tty)
            except KeyboardInterrupt:
                print(file=sys.stderr)
                return 130
            if line is None or line.strip() in ("/exit", "/quit"):
                return 0
            text = line.strip()
            if not text:
                continue
            if text == "/reset":
                messages = list(start)
                if tty:
                    print("(conversation cleared)", file=sys.stderr)
                continue
            if re.fullmatch(r"/\w+", text):
                print(f"{'' if text == '/help' else f'unknown command {text}; '}{CHAT_HELP}",
                      file=sys.stderr)
                continue
            messages.append({"role": "user", "content": text})
            c = None
            try:
                ids = eng._llm.apply_chat_template(messages)
                with _Interrupt() as intr:
                    c, t = stream_reply(eng, ids, args.max_tokens, args.stop, sampling, _write, intr)
            except KeyboardInterrupt:          # a second Ctrl-C: the reply is cancelled anyway
                pass
            except EmberError as e:
                messages.pop()
                print(f"ember: error: {type(e).__name__}: {e} (/reset starts over)", file=sys.stderr)
                continue
            _write("\n")
            if c is None or c.finish_reason == "abort":
                messages.pop()
                print("(reply cancelled)", file=sys.stderr)
                continue
            messages.append({"role": "assistant", "content": c.text})
            if args.stats:
                print(summary(c, t), file=sys.stderr, flush=True)
    finally:
        eng.close()


def cmd_info_llm(args, path):
    """`ember info` on a GGUF file: config and memory plan, read from the header only."""
    from collections import Counter

    from ember.llm.gguf import load_gguf
    from ember.llm.model import config_from_gguf, memory_plan, resolve_settings

    opts = {k: getattr(args, k) for k in ("max_model_len", "max_num_seqs", "kv_cache_bytes",
                                          "kv_dtype") if getattr(args, k, None) is not None}
    with load_gguf(path) as gguf:
        cfg = config_from_gguf(gguf)
        s = resolve_settings(cfg, **opts)
        plan = memory_plan(gguf, cfg, s)
        by_type = Counter()
        for t in gguf.tensors.values():
            by_type[t.ggml_type] += t.n_bytes
        name = gguf.get("general.name")
        has_template = bool(gguf.get("tokenizer.chat_template"))
    plan = dict(plan, path=os.path.abspath(path), head_dim=cfg.head_dim, ffn=cfg.ffn,
                weight_bytes_by_type=dict(sorted(by_type.items())))
    if args.json:
        print(json.dumps(plan, indent=1))
        return 0
    mib = lambda n: f"{n / 2**20:.1f} MiB"  # noqa: E731
    print(f"model: {plan['path']}" + (f"  ({name})" if name else ""))
    print(f"architecture: {cfg.arch}  layers {cfg.layers}  heads {cfg.heads}  kv heads "
          f"{cfg.kv_heads}  head dim {cfg.head_dim}  hidden {cfg.hidden}  ffn {cfg.ffn}  vocab "
          f"{cfg.vocab_size}  context {cfg.context_length}"
          + ("" if has_template else "  (no chat template)"))
    print(f"weights: {mib(plan['weight_bytes'])}  ("
          + ", ".join(f"{k} {mib(v)}" for k, v in plan["weight_bytes_by_type"].items()) + ")")
    print(f"KV per token: {plan['kv_bytes_per_token']} bytes ({plan['kv_dtype']}: {cfg.layers} "
          f"layers x 2 x {cfg.kv_heads} kv heads x {cfg.head_dim} x "
          f"{2 if plan['kv_dtype'] == 'f16' else 4} bytes)")
    print(f"KV cache: {mib(plan['kv_cache_bytes'])} = {plan['kv_blocks']} blocks of "
          f"{plan['block_size']} = {plan['kv_tokens']} tokens")
    print(f"max_model_len {plan['max_model_len']} x max_num_seqs {plan['max_num_seqs']}: "
          f"{plan['full_length_sequences']} sequences at full length")
    print(f"total: {mib(plan['weight_bytes'] + plan['kv_cache_bytes'])} (weights + KV cache)")
    return 0
