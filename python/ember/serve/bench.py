"""`ember bench serve`: a request-rate sweep against a running server's OpenAI streaming API.

For each --rates value, --requests requests arrive as a Poisson process (exponential gaps drawn
from the seeded generator; rate inf sends them all at once); --concurrency caps those in flight,
later arrivals wait for a slot. Every request streams with ignore_eos and temperature 0, so each
generates exactly --max-tokens. Per request: TTFT (send -> first text chunk), ITL (gaps between
later text chunks; a chunk holding several tokens is one gap), e2e latency, output tokens (the
usage chunk, else the number of text chunks). A failed request (HTTP status, broken or malformed
stream, timeout) is counted, never fatal.
Server-side throughput: ember_generation_tokens_total and ember_prompt_tokens_total (series with
label model=MODEL) from GET /metrics before and after each rate, over that rate's wall time; it
includes any other traffic the server has meanwhile.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import io
import json
import math
import sys
import time

import numpy as np

from ember.errors import EmberError, InputError

DONE = "[DONE]"
PROMPT_COUNTER = "ember_prompt_tokens_total"
GEN_COUNTER = "ember_generation_tokens_total"
# Common words: with a leading space each is one token in the usual BPE vocabularies, so N of
# them make a prompt of about N tokens without a tokenizer on this side.
_WORDS = ("the time people year way day man thing life child world school state family group "
          "country problem hand part place case week company system program work number night "
          "point home water room area money story fact month book eye job word side kind").split()


def add_parser(sub):
    p = sub.add_parser(
        "bench-serve", prog="ember bench serve",
        help="request-rate sweep against a running `ember serve` (use as `ember bench serve`)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Sweeps request rates against a running server's OpenAI-compatible\n"
        "streaming endpoint; reports TTFT, ITL, e2e percentiles and token throughput per rate.",
        epilog=__doc__.split("\n\n", 1)[1].strip())
    add_arguments(p)
    p.set_defaults(fn=cmd_bench_serve)
    return p


def add_arguments(p):
    p.add_argument("--url", default="http://127.0.0.1:8000", help="server base URL")
    p.add_argument("--model", help="model name for requests and /metrics labels "
                                    "(default: the first of GET /v1/models)")
    p.add_argument("--endpoint", choices=["completions", "chat"], default="completions",
                   help="POST /v1/completions or /v1/chat/completions")
    p.add_argument("--rates", default="1,2,4,inf",
                   help="request rates in req/s, comma-separated; inf sends all at once")
    p.add_argument("--requests", type=int, default=64, help="requests per rate (default 64)")
    p.add_argument("--prompt-tokens", type=int, default=128, help="prompts of ~N tokens: N "
                   "random words, fresh per request so no prefix cache hits (default 128)")
    p.add_argument("--prompt", help="send this text as every prompt instead")
    p.add_argument("--max-tokens", type=int, default=64, help="tokens per request (default 64)")
    p.add_argument("--concurrency", type=int, default=None,
                   help="cap on requests in flight; TTFT counts from the send, not the arrival")
    p.add_argument("--seed", type=int, default=0, help="seed of prompts and arrival gaps")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per request (default 600)")
    p.add_argument("--api-key", help="sent as Authorization: Bearer KEY")
    p.add_argument("--json", metavar="OUT.json", help="write the report, per-request records too")
    p.add_argument("--plot", metavar="OUT.png", help="TTFT, ITL, throughput vs rate (matplotlib)")


def percentiles(values, ps=(50, 90, 99)) -> dict:
    """{"p50": ..., ...} of values (linear interpolation); None each for no values (valid JSON)."""
    if len(values) == 0:
        return {f"p{p:g}": None for p in ps}
    q = np.percentile(np.asarray(values, dtype=np.float64), ps)
    return {f"p{p:g}": float(v) for p, v in zip(ps, q)}


def parse_sse_line(line: str):
    """One SSE line -> its JSON chunk (a dict), DONE, or None (blank line, comment, other field).
    Raises ValueError for a data line that is not a JSON object: that request counts as failed."""
    line = line.strip()
    if not line.startswith("data:"):
        return None
    payload = line[5:].strip()
    if payload == DONE:
        return DONE
    try:
        chunk = json.loads(payload)
    except json.JSONDecodeError as e:
        raise ValueError(f"[bench] malformed SSE data {payload[:80]!r}: {e}") from None
    if not isinstance(chunk, dict):
        raise ValueError(f"[bench] SSE data is not a JSON object: {payload[:80]!r}")
    return chunk


def scrape_tokens(metrics_text: str, model: str | None):
    """(prompt, generated) token counters of a Prometheus exposition, summed over the series
    labelled model=MODEL (every series when model is None); None for a counter the text lacks."""
    from prometheus_client.parser import text_string_to_metric_families
    sums = {PROMPT_COUNTER: None, GEN_COUNTER: None}
    for fam in text_string_to_metric_families(metrics_text):
        # The parser names a counter family without _total; a labelled counter no request has
        # touched yet has a family but no samples, which is 0 tokens, not "missing".
        key = fam.name if fam.name in sums else fam.name + "_total"
        if key in sums and sums[key] is None:
            sums[key] = 0.0
        for s in fam.samples:
            if s.name in sums and (model is None or s.labels.get("model") == model):
                sums[s.name] = (sums[s.name] or 0.0) + s.value
    return sums[PROMPT_COUNTER], sums[GEN_COUNTER]


def _chunk_text(chunk) -> str:
    choices = chunk.get("choices") or []
    if not choices:
        return ""
    c = choices[0]
    return c.get("text") or (c.get("delta") or {}).get("content") or ""


async def _request(client, url, body, headers) -> dict:
    """One streamed request -> its record; every failure lands in record["error"]."""
    rec = {"ok": False, "error": None, "ttft_ms": None, "itl_ms": [], "e2e_ms": None,
           "output_tokens": 0, "prompt_tokens": None, "chunks": 0}
    t0 = time.perf_counter()
    last, usage, done = None, None, False
    try:
        async with client.stream("POST", url, json=body, headers=headers) as resp:
            if resp.status_code != 200:
                detail = (await resp.aread()).decode(errors="replace")[:200]
                raise ValueError(f"HTTP {resp.status_code}: {detail}")
            async for line in resp.aiter_lines():
                chunk = parse_sse_line(line)
                if chunk is None:
                    continue
                if chunk is DONE:
                    done = True
                    break
                if chunk.get("error"):
                    raise ValueError(f"server error in stream: {chunk['error']}")
                usage = chunk.get("usage") or usage
                if _chunk_text(chunk):
                    now = time.perf_counter()
                    if last is None:
                        rec["ttft_ms"] = (now - t0) * 1e3
                    else:
                        rec["itl_ms"].append((now - last) * 1e3)
                    last = now
                    rec["chunks"] += 1
        if not done:
            raise ValueError("stream ended without data: [DONE]")
        rec["ok"] = True
    except Exception as e:  # noqa: BLE001 - one failed request must never end the bench
        rec["error"] = str(e) if isinstance(e, ValueError) else f"{type(e).__name__}: {e}"
    rec["e2e_ms"] = (time.perf_counter() - t0) * 1e3
    rec["output_tokens"] = (usage or {}).get("completion_tokens") or rec["chunks"]
    rec["prompt_tokens"] = (usage or {}).get("prompt_tokens")
    return rec


def _body(cfg, model, prompt, max_tokens):
    body = {"model": model, "max_tokens": max_tokens, "stream": True, "temperature": 0,
            "stream_options": {"include_usage": True}, "ignore_eos": True}
    if cfg.endpoint == "chat":
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    return body


async def _scrape(client, cfg, model):
    """(prompt, generated) from GET /metrics; (None, None) when unreachable or unparsable."""
    try:
        resp = await client.get(cfg.base + "/metrics", headers=cfg.headers)
        if resp.status_code == 200:
            return scrape_tokens(resp.text, model)
    except Exception:  # noqa: BLE001 - no metrics only downgrades to client-side counts
        pass
    return None, None


async def _probe(client, cfg) -> str:
    """The model name, after one short request works: fail fast, not after a sweep of errors."""
    import httpx
    model = cfg.model
    try:
        if model is None:
            resp = await client.get(cfg.base + "/v1/models", headers=cfg.headers)
            resp.raise_for_status()
            model = resp.json()["data"][0]["id"]
    except (httpx.HTTPError, ValueError, KeyError, IndexError) as e:
        raise EmberError(f"[bench] cannot list models at {cfg.base}/v1/models ({e}); is the "
                         "server running? pass --model to skip the listing") from None
    rec = await _request(client, cfg.post_url, _body(cfg, model, "Hello", 2), cfg.headers)
    if not rec["ok"]:
        raise EmberError(f"[bench] test request to {cfg.post_url} (model {model!r}) failed: "
                         f"{rec['error']}")
    return model


async def _run_rate(client, cfg, model, rate, prompts, rng) -> dict:
    n = len(prompts)
    gaps = np.zeros(n) if math.isinf(rate) else rng.exponential(1.0 / rate, n)
    arrivals = np.concatenate([[0.0], np.cumsum(gaps[:-1])])
    sem = asyncio.Semaphore(cfg.concurrency) if cfg.concurrency else None
    before = await _scrape(client, cfg, model)
    t0 = time.perf_counter()

    async def one(i):
        await asyncio.sleep(max(0.0, t0 + arrivals[i] - time.perf_counter()))
        body = _body(cfg, model, prompts[i], cfg.max_tokens)
        async with sem or contextlib.nullcontext():
            sent, rec = time.perf_counter(), await _request(client, cfg.post_url, body, cfg.headers)
        return {"index": i, "arrival_s": float(arrivals[i]), "sent_s": sent - t0, **rec}

    records = list(await asyncio.gather(*(one(i) for i in range(n))))
    wall = time.perf_counter() - t0
    ok = [r for r in records if r["ok"]]
    out_cli = sum(r["output_tokens"] for r in ok)
    after = await _scrape(client, cfg, model)
    if after[1] is not None and before[1] is not None and after[1] - before[1] < out_cli:
        await asyncio.sleep(0.2)        # the server may count a request just after its [DONE]
        after = await _scrape(client, cfg, model)
    server = None
    if None not in before and None not in after:
        server = {"prompt": after[0] - before[0], "generated": after[1] - before[1]}
    return {
        "rate": _rate_label(rate), "requests": n, "completed": len(ok),
        "failed": n - len(ok), "wall_s": wall, "req_per_s": len(ok) / wall,
        "output_tok_per_s_server": server and server["generated"] / wall,
        "prompt_tok_per_s_server": server and server["prompt"] / wall,
        "output_tok_per_s_client": out_cli / wall, "server_tokens": server,
        "client_tokens": {"prompt": sum(r["prompt_tokens"] or 0 for r in ok), "generated": out_cli},
        "wrong_length": sum(r["output_tokens"] != cfg.max_tokens for r in ok),
        "ttft_ms": percentiles([r["ttft_ms"] for r in ok if r["ttft_ms"] is not None]),
        "itl_ms": percentiles([x for r in ok for x in r["itl_ms"]]),
        "e2e_ms": percentiles([r["e2e_ms"] for r in ok]),
        "errors": dict(collections.Counter(r["error"] for r in records if not r["ok"])),
        "records": records}


def _rate_label(rate):
    """JSON has no inf; 2.0 reads better as 2."""
    return "inf" if math.isinf(rate) else int(rate) if rate.is_integer() else rate


def _prompts(cfg, rng, n):
    if cfg.prompt is not None:
        return [cfg.prompt] * n
    return [" ".join(rng.choice(_WORDS, cfg.prompt_tokens)) for _ in range(n)]


async def _sweep(cfg, rates) -> dict:
    import httpx
    rng = np.random.default_rng(cfg.seed)
    timeout = httpx.Timeout(cfg.timeout, connect=10.0)
    # No pool cap: a queue inside the client would add to TTFT unseen; --concurrency caps instead.
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        model = await _probe(client, cfg)
        results = []
        for rate in rates:
            print(f"[bench] rate {rate:g} req/s: {cfg.requests} requests to {cfg.post_url}",
                  file=sys.stderr, flush=True)
            results.append(await _run_rate(client, cfg, model, rate,
                                           _prompts(cfg, rng, cfg.requests), rng))
    server = all(r["server_tokens"] is not None for r in results)
    return {"url": cfg.base, "model": model, "endpoint": cfg.post_url[len(cfg.base):],
            "settings": {k: getattr(cfg, k) for k in ("requests", "prompt_tokens", "max_tokens",
                                                      "concurrency", "seed", "timeout")}
            | {"prompt": cfg.prompt, "rates": [r["rate"] for r in results]},
            "throughput_source": "server" if server else "client",
            "note": None if server else f"{cfg.base}/metrics lacks {GEN_COUNTER} / "
                                        f"{PROMPT_COUNTER}: token rates are client-side counts",
            "results": results}


def _parse_rates(text):
    try:
        rates = [float(r) for r in str(text).split(",") if r.strip()]
    except ValueError:
        raise InputError(f"[bench] --rates expects numbers or inf, comma-separated: "
                         f"{text!r}") from None
    if not rates or any(not r > 0 for r in rates):
        raise InputError(f"[bench] --rates must be > 0 (or inf): {text!r}")
    return rates


def run_bench(args) -> dict:
    """The sweep described in this module's docstring; returns the report (see format_table)."""
    rates = _parse_rates(args.rates)
    for name in ("requests", "max_tokens", "prompt_tokens", "concurrency"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise InputError(f"[bench] --{name.replace('_', '-')} must be >= 1")
    base = args.url.rstrip("/").removesuffix("/v1")
    cfg = argparse.Namespace(**vars(args), base=base, headers={}, post_url=base + (
        "/v1/chat/completions" if args.endpoint == "chat" else "/v1/completions"))
    if args.api_key:
        cfg.headers["Authorization"] = f"Bearer {args.api_key}"
    return asyncio.run(_sweep(cfg, rates))


def _fmt(v):
    """'-' for None, one decimal, and p50/p90/p99 of a percentiles dict."""
    if isinstance(v, dict):
        return "/".join(_fmt(v[k]) for k in ("p50", "p90", "p99"))
    return "-" if v is None else f"{v:.1f}"


def format_table(report) -> str:
    from ember.bench import print_table
    s = report["settings"]
    buf = io.StringIO()
    prompt = "fixed --prompt" if s["prompt"] is not None else f"~{s['prompt_tokens']} tokens"
    print(f"{report['url']}{report['endpoint']}  model {report['model']}  "
          f"{s['requests']} requests per rate  prompt {prompt}  max_tokens {s['max_tokens']}  "
          f"concurrency {s['concurrency'] or 'unbounded'}", file=buf)
    headers = ["rate", "ok/failed", "req/s", "out tok/s srv", "out tok/s cli", "in tok/s srv",
               "TTFT ms p50/p90/p99", "ITL ms p50/p90/p99", "e2e ms p50/p90/p99"]
    rows = [[str(r["rate"]), f"{r['completed']}/{r['failed']}", f"{r['req_per_s']:.2f}",
             _fmt(r["output_tok_per_s_server"]), _fmt(r["output_tok_per_s_client"]),
             _fmt(r["prompt_tok_per_s_server"]), _fmt(r["ttft_ms"]), _fmt(r["itl_ms"]),
             _fmt(r["e2e_ms"])] for r in report["results"]]
    print_table(headers, rows, out=buf)
    if report["note"]:
        print(f"note: {report['note']}", file=buf)
    for r in report["results"]:
        if r["wrong_length"]:
            print(f"note: rate {r['rate']}: {r['wrong_length']} requests did not generate "
                  f"{s['max_tokens']} tokens (ignore_eos not honoured?)", file=buf)
        for err, n in sorted(r["errors"].items(), key=lambda kv: -kv[1])[:3]:
            print(f"rate {r['rate']}: {n} failed: {err}", file=buf)
    return buf.getvalue()


def plot_report(report, path: str) -> None:
    from ember.bench import require_matplotlib
    plt = require_matplotlib()
    rows = report["results"]
    x = list(range(len(rows)))         # categorical: inf has no place on a numeric axis
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for i, key, label in ((0, "ttft_ms", "p50"), (0, "ttft_ms", "p99"), (1, "itl_ms", "p50"),
                          (1, "itl_ms", "p99"), (2, "output_tok_per_s_server", "server"),
                          (2, "output_tok_per_s_client", "client")):
        ys = [r[key][label] if isinstance(r[key], dict) else r[key] for r in rows]
        if all(y is None for y in ys):
            continue                    # no server-side counts: no empty line in the legend
        axes[i].plot(x, [math.nan if y is None else y for y in ys],
                     "s--" if label in ("p99", "client") else "o-", label=label)
    for ax, title in zip(axes, ("TTFT (ms)", "ITL (ms)", "throughput (tok/s)")):
        ax.set_title(title)
        ax.set_xticks(x, [str(r["rate"]) for r in rows])
        ax.set_xlabel("request rate (req/s)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"{report['model']} at {report['url']}{report['endpoint']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def cmd_bench_serve(args):
    if args.plot:
        from ember.bench import require_matplotlib
        require_matplotlib()            # fail now, not after the sweep
    report = run_bench(args)
    print(format_table(report), end="")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
        print(f"wrote {args.json}")
    if args.plot:
        plot_report(report, args.plot)
        print(f"wrote {args.plot}")
    return 0 if any(r["completed"] for r in report["results"]) else 1
