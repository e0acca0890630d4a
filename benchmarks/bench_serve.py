"""Serving overhead and throughput: `ember serve` vs the same model in-process, one script.

    PYTHONPATH=python python benchmarks/bench_serve.py [--parts overhead,kserve,throughput]
        [--rounds R] [--requests N] [--streams S] [--max-tokens T] [--quick] [--json OUT]

The serving targets of issue 7, each measured side by side in one run:

- overhead: POST /v1/completions ("Hello", max_tokens 1, temperature 0, not streamed), one
  request at a time over one keep-alive http.client connection, vs ember.Engine("smollm2-135m")
  .generate("Hello", max_tokens=1) in this process. Target: server median - in-process median
  <= 2 ms.
- kserve: POST /v2/models/minilm/infer with the binary-tensor extension (MiniLM, input_ids /
  attention_mask / token_type_ids int64 [1, 16], every output returned as binary data), server
  started as `ember serve minilm-l6 --name minilm` (batching off: max_batch_size 1), vs
  ember.Engine("minilm-l6").run(feeds) in this process. Target: difference <= 2 ms.
- throughput: S (32) concurrent streams of T (128) tokens each (ignore_eos, temperature 0,
  distinct short prompts). In-process: ember.AsyncEngine("smollm2-135m", max_num_seqs=S), S
  concurrent stream() calls; tokens/s = the generated tokens of the completions / wall. Server
  (`--max-num-seqs S`): S concurrent streaming /v1/completions from an httpx.AsyncClient;
  tokens/s = the delta of the server's ember_generation_tokens_total (GET /metrics before and
  after) / wall. Target: server / in-process >= 0.90.

Both sides of a part are loaded for the whole part and alternate in blocks: per round, N server
requests then N in-process calls (the order swaps every round, a short pause before each
block), so the idle side's process sleeps while the other one runs: the server and this
process share the machine's cores. Each side warms up before timing. Latency figures are the
medians of all timed calls with the spread of the per-round medians; throughput, the median of
R rounds. The HTTP floor is a GET /v2/health/live on the same keep-alive client, timed in the
server blocks: what any request costs on this machine before the model runs.
Each part starts its own server (`python -m ember serve ...` on a free loopback port, ready
when /v2/health/ready says 200, stopped with SIGTERM). The client side of every HTTP figure
(httpx, JSON, reading the SSE stream) runs in this process and counts against the server.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import random
import re
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARTS = ("overhead", "kserve", "throughput")
LLM, LLM_NAME = "smollm2-135m", "smollm2"
ENCODER, ENCODER_NAME = "minilm-l6", "minilm"
GEN_COUNTER = "ember_generation_tokens_total"
PAUSE_S = 0.05          # before each block: lets the other process's threads go idle

# part -> (metric, comparison, bound): "diff" is server - in-process in ms, "ratio" server / in-process
TARGETS = {
    "overhead": ("diff", "<=", 2.0),
    "kserve": ("diff", "<=", 2.0),
    "throughput": ("ratio", ">=", 0.90),
}
QUICK = {"rounds": 2, "requests": 8, "warmup": 3, "max_tokens": 16}
FULL = {"rounds": 5, "requests": 40, "warmup": 10, "max_tokens": 128}
# Common words; prompts are a unique number then a few of these (distinct first tokens, so
# neither side's prefix cache can hit).
WORDS = ("river mountain story garden window music winter summer letter market city forest "
         "engine paper friend morning evening ocean bridge village castle kitchen doctor teacher "
         "planet rocket museum island valley desert harbor station library painter").split()


# ---- arguments -------------------------------------------------------------------------------

def parse_parts(text):
    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in names if s not in PARTS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown part(s) {','.join(bad) or '(none)'}; "
                                         f"choose from {','.join(PARTS)}")
    return [s for s in PARTS if s in names]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", type=parse_parts, default=list(PARTS),
                   help=f"comma-separated subset of {','.join(PARTS)} (default: all)")
    p.add_argument("--rounds", type=int, default=None,
                   help=f"alternating rounds per part (default {FULL['rounds']}, --quick {QUICK['rounds']})")
    p.add_argument("--requests", type=int, default=None,
                   help=f"overhead/kserve: calls per block (default {FULL['requests']}, "
                        f"--quick {QUICK['requests']})")
    p.add_argument("--warmup", type=int, default=None,
                   help=f"overhead/kserve: untimed calls per side first (default {FULL['warmup']}, "
                        f"--quick {QUICK['warmup']})")
    p.add_argument("--streams", type=int, default=32, help="throughput: concurrent streams (default 32)")
    p.add_argument("--max-tokens", type=int, default=None,
                   help=f"throughput: tokens per stream (default {FULL['max_tokens']}, "
                        f"--quick {QUICK['max_tokens']})")
    p.add_argument("--seq", type=int, default=16, help="kserve: sequence length (default 16)")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: fewer rounds, calls and tokens (figures are not a baseline)")
    p.add_argument("--json", metavar="OUT", default=None, help="write the results here")
    p.add_argument("--server-log-dir", default=None,
                   help="keep the servers' logs here (default: a temporary folder, removed)")
    args = p.parse_args(argv)
    preset = QUICK if args.quick else FULL
    for name in ("rounds", "requests", "warmup", "max_tokens"):
        if getattr(args, name) is None:
            setattr(args, name, preset[name])
    for name in ("rounds", "requests", "streams", "max_tokens", "seq"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    if args.seq < 2:
        p.error("--seq must be >= 2 ([CLS] ... [SEP])")
    return args


# ---- statistics, verdicts, table -------------------------------------------------------------

def summary(values):
    """{median, min, max, n} of a list of numbers, or None when empty."""
    values = [float(v) for v in values]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def latency_summary(blocks):
    """Per-side latency (seconds per call, one list per round) -> {median of all calls in ms,
    round_min/round_max: the spread of the per-round medians in ms, n}."""
    flat = [v for b in blocks for v in b]
    if not flat:
        return None
    rounds = [statistics.median(b) * 1e3 for b in blocks if b]
    return {"median": statistics.median(flat) * 1e3, "round_min": min(rounds),
            "round_max": max(rounds), "n": len(flat)}


def compare(part, inproc, server):
    """(value, text) of the part's target metric from two medians: server - in-process (ms) or
    server / in-process."""
    if inproc is None or server is None:
        return None, "-"
    kind = TARGETS[part][0]
    if kind == "diff":
        d = server - inproc
        return d, f"{d:+.2f} ms"
    if not inproc:
        return None, "-"
    r = server / inproc
    return r, f"{r:.3f}x"


def verdict(part, value):
    if value is None:
        return "-"
    kind, rel, bound = TARGETS[part]
    ok = value <= bound if rel == "<=" else value >= bound
    return "met" if ok else "MISSED"


def target_text(part):
    kind, rel, bound = TARGETS[part]
    return f"{'server - in-process' if kind == 'diff' else 'server / in-process'} {rel} " + (
        f"{bound:g} ms" if kind == "diff" else f"{bound:.2f}")


def fmt_latency(st):
    if st is None:
        return "-"
    if st["round_min"] == st["round_max"]:
        return f"{st['median']:.2f} ms"
    return f"{st['median']:.2f} ms [{st['round_min']:.2f}-{st['round_max']:.2f}]"


def fmt_rate(st):
    if st is None:
        return "-"
    if st["min"] == st["max"]:
        return f"{st['median']:.1f} tok/s"
    return f"{st['median']:.1f} tok/s [{st['min']:.1f}-{st['max']:.1f}]"


ROW_LABELS = {
    "overhead": "/v1/completions, max_tokens 1 (smollm2)",
    "kserve": "KServe binary infer 1x{seq} (minilm)",
    "throughput": "{streams} streams x {max_tokens} tokens (smollm2)",
}


def build_rows(results, labels):
    """(part, in-process, server, server vs in-process, target, verdict) per measured part."""
    rows = []
    for part in PARTS:
        r = results.get(part)
        if not r:
            continue
        fmt = fmt_rate if part == "throughput" else fmt_latency
        ip, sv = r.get("inprocess"), r.get("server")
        value, text = compare(part, ip and ip["median"], sv and sv["median"])
        r["compare"], r["verdict"] = value, verdict(part, value)
        rows.append((ROW_LABELS[part].format(**labels), fmt(ip), fmt(sv), text,
                     target_text(part), r["verdict"]))
    return rows


def format_table(rows):
    head = ("part", "ember in-process", "server", "server vs in-process", "target", "")
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    line = lambda r: "  ".join(str(c).ljust(w) if i in (0, 4, 5) else str(c).rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths))).rstrip()
    return "\n".join([line(head), "  ".join("-" * w for w in widths), *map(line, rows)])


# ---- Prometheus text, prompts, KServe body ----------------------------------------------------

_SAMPLE = re.compile(r'^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)')
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def metric_value(text, name, **labels):
    """Sum of the samples of `name` whose labels include `labels` (Prometheus text format)."""
    total = 0.0
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if not m or m.group(1) != name:
            continue
        have = dict(_LABEL.findall(m.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
    return total


class Prompts:
    """Distinct short prompts, reproducible: a number never used before, then 6 common words."""

    def __init__(self, seed=0):
        self.rng = random.Random(seed)
        self.count = 0

    def take(self, n):
        out = []
        for _ in range(n):
            self.count += 1
            out.append(f"{self.count} " + " ".join(self.rng.choice(WORDS) for _ in range(6)))
        return out


def minilm_feeds(seq, np):
    """input_ids / attention_mask / token_type_ids int64 [1, seq]: [CLS] word ids [SEP]."""
    ids = np.array([[101, *range(2000, 2000 + seq - 2), 102]], np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}


def kserve_binary_body(feeds):
    """(body, JSON header length) of a KServe v2 binary-tensor request: every input as binary
    data, every output asked for as binary data (parameters.binary_data_output)."""
    header = {"inputs": [{"name": k, "shape": list(v.shape), "datatype": "INT64",
                          "parameters": {"binary_data_size": int(v.nbytes)}} for k, v in feeds.items()],
              "parameters": {"binary_data_output": True}}
    head = json.dumps(header).encode()
    return head + b"".join(v.tobytes() for v in feeds.values()), len(head)


def check_binary_response(resp, names):
    """Raises unless resp is a 200 binary KServe response holding every output in `names`."""
    if resp.status_code != 200:
        raise RuntimeError(f"infer: HTTP {resp.status_code}: {resp.text[:500]}")
    n = int(resp.headers["inference-header-content-length"])
    head = json.loads(resp.content[:n])
    got = {o["name"] for o in head["outputs"] if "binary_data_size" in o.get("parameters", {})}
    if got != set(names):
        raise RuntimeError(f"infer: binary outputs {sorted(got)}, expected {sorted(names)}")


# ---- a live server ----------------------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env():
    env = dict(os.environ)
    py = os.path.join(ROOT, "python")
    env["PYTHONPATH"] = py + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


class Server:
    """`python -m ember serve ARGS` on a free loopback port; ready once /v2/health/ready is 200;
    stop() sends SIGTERM (it drains, then exits)."""

    def __init__(self, args, log_path, ready_timeout=180.0):
        import httpx
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.cmd = [sys.executable, "-m", "ember", "serve", *args, "--port", str(self.port),
                    "--log-level", "warning"]
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(self.cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=child_env(), cwd=ROOT)
        t0 = time.monotonic()
        while time.monotonic() - t0 < ready_timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ember serve exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/v2/health/ready", timeout=2).status_code == 200:
                    self.ready_s = time.monotonic() - t0
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"ember serve was not ready within {ready_timeout} s:\n{self.log()}")

    def log(self):
        self._log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")[-4000:]

    def stop(self, timeout=60.0):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        rc = self.stop()
        if rc not in (0, -signal.SIGTERM) and exc[0] is None:
            raise RuntimeError(f"ember serve exited with {rc}:\n{self.log()}")


# ---- parts 1 and 2: one call at a time --------------------------------------------------------

class KeepAlive:
    """One keep-alive HTTP/1.1 connection through the standard library's http.client: the
    leanest Python client, so the figures are the server's cost more than the client's
    (httpx adds ~0.4 ms a request here)."""

    def __init__(self, url):
        import http.client
        from urllib.parse import urlsplit
        u = urlsplit(url)
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)

    def request(self, method, path, body=None, headers=None):
        self.conn.request(method, path, body=body, headers=headers or {})
        r = self.conn.getresponse()
        return r.status, r.read(), dict(r.getheaders())

    def close(self):
        self.conn.close()

IDLE_GAP_S = 0.002   # about what a server call idles between runs (HTTP round trip, handling)


def timed_calls(fn, n, gap_s=0.0):
    out = []
    for _ in range(n):
        if gap_s:
            time.sleep(gap_s)
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def interleave(server_fn, inproc_fn, floor_fn, args):
    """Warms both sides up, then R rounds of one block of N calls per side (the order swaps each
    round) plus N floor calls right after the server block -> {side: [per-round lists]}."""
    for fn in (server_fn, floor_fn, inproc_fn):
        for _ in range(args.warmup):
            fn()
    got = {"server": [], "inprocess": [], "floor": [], "inprocess_idle": []}
    for rnd in range(args.rounds):
        order = ("server", "inprocess") if rnd % 2 == 0 else ("inprocess", "server")
        for side in order:
            time.sleep(PAUSE_S)
            if side == "server":
                got["server"].append(timed_calls(server_fn, args.requests))
                got["floor"].append(timed_calls(floor_fn, args.requests))
            else:
                got["inprocess"].append(timed_calls(inproc_fn, args.requests))
                got["inprocess_idle"].append(timed_calls(inproc_fn, args.requests, IDLE_GAP_S))
    return got


def part_overhead(args, logdir):
    import httpx

    import ember
    eng = ember.Engine(LLM)
    try:
        with Server([LLM, "--name", LLM_NAME], os.path.join(logdir, "overhead.log")) as srv:
            client = KeepAlive(srv.url)
            body = json.dumps({"model": LLM_NAME, "prompt": "Hello", "max_tokens": 1,
                               "temperature": 0}).encode()
            jh = {"content-type": "application/json"}

            def server_call():
                status, data, _ = client.request("POST", "/v1/completions", body, jh)
                if status != 200 or json.loads(data)["usage"]["completion_tokens"] != 1:
                    raise RuntimeError(f"/v1/completions: HTTP {status}: {data[:500]!r}")

            def inproc_call():
                if eng.generate("Hello", max_tokens=1)[0].usage["completion_tokens"] != 1:
                    raise RuntimeError("generate: not 1 token")

            def floor_call():
                if client.request("GET", "/v2/health/live")[0] != 200:
                    raise RuntimeError("/v2/health/live is not 200")

            got = interleave(server_call, inproc_call, floor_call, args)
            client.close()
            return {"inprocess": latency_summary(got["inprocess"]),
                    "server": latency_summary(got["server"]),
                    "floor": latency_summary(got["floor"]),
                    "inprocess_idle": latency_summary(got["inprocess_idle"]),
                    "server_ready_s": srv.ready_s,
                    "server_command": shlex.join(srv.cmd), "samples_s": got}
    finally:
        eng.close()


def part_kserve(args, logdir):
    import httpx
    import numpy as np

    import ember
    eng = ember.Engine(ENCODER)
    try:
        feeds = minilm_feeds(args.seq, np)
        names = [o.name for o in eng.outputs]
        body, n = kserve_binary_body(feeds)
        headers = {"Inference-Header-Content-Length": str(n),
                   "content-type": "application/octet-stream"}
        with Server([ENCODER, "--name", ENCODER_NAME], os.path.join(logdir, "kserve.log")) as srv:
            url = f"/v2/models/{ENCODER_NAME}/infer"
            with httpx.Client(base_url=srv.url, timeout=60) as hc:
                check_binary_response(hc.post(url, content=body, headers=headers), names)
            client = KeepAlive(srv.url)

            def server_call():
                status, data, _ = client.request("POST", url, body, headers)
                if status != 200:
                    raise RuntimeError(f"infer: HTTP {status}: {data[:500]!r}")

            def floor_call():
                if client.request("GET", "/v2/health/live")[0] != 200:
                    raise RuntimeError("/v2/health/live is not 200")

            got = interleave(server_call, lambda: eng.run(feeds), floor_call, args)
            client.close()
            return {"inprocess": latency_summary(got["inprocess"]),
                    "server": latency_summary(got["server"]),
                    "floor": latency_summary(got["floor"]), "outputs": names,
                    "inprocess_idle": latency_summary(got["inprocess_idle"]),
                    "server_ready_s": srv.ready_s, "server_command": shlex.join(srv.cmd),
                    "samples_s": got}
    finally:
        eng.close()


# ---- part 3: concurrent streams ---------------------------------------------------------------

async def inproc_streams(ae, prompts, max_tokens):
    """S concurrent AsyncEngine.stream() calls -> (generated tokens, wall seconds)."""
    async def one(p):
        s = ae.stream(p, max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
        async for _ in s:
            pass
        return s.completion.usage["completion_tokens"]
    t0 = time.perf_counter()
    counts = await asyncio.gather(*(one(p) for p in prompts))
    return sum(counts), time.perf_counter() - t0


async def server_streams(url, prompts, max_tokens):
    """S concurrent streaming /v1/completions, each read to its end -> (wall seconds, streams
    that did not end with [DONE])."""
    import httpx

    async def one(c, p):
        body = {"model": LLM_NAME, "prompt": p, "max_tokens": max_tokens, "temperature": 0,
                "stream": True, "ignore_eos": True}
        async with c.stream("POST", "/v1/completions", json=body) as r:
            if r.status_code != 200:
                raise RuntimeError(f"/v1/completions: HTTP {r.status_code}: {(await r.aread())[:500]!r}")
            tail = b""
            async for chunk in r.aiter_raw():      # no SSE parsing: the counter gives the tokens
                tail = (tail + chunk)[-64:]
        return b"[DONE]" in tail

    limits = httpx.Limits(max_connections=len(prompts) + 8, max_keepalive_connections=len(prompts) + 8)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as c:
        t0 = time.perf_counter()
        done = await asyncio.gather(*(one(c, p) for p in prompts))
        wall = time.perf_counter() - t0
    return wall, done.count(False)


def part_throughput(args, logdir):
    import httpx

    import ember
    prompts = Prompts(0)
    ae = ember.AsyncEngine(LLM, max_num_seqs=args.streams)
    try:
        with Server([LLM, "--name", LLM_NAME, "--max-num-seqs", str(args.streams)],
                    os.path.join(logdir, "throughput.log")) as srv:
            def scrape():
                return metric_value(httpx.get(srv.url + "/metrics", timeout=30).text, GEN_COUNTER,
                                    model=LLM_NAME)

            # Warm-up: a short round each (compiles the batch-S decode plans on both sides).
            asyncio.run(inproc_streams(ae, prompts.take(args.streams), 8))
            asyncio.run(server_streams(srv.url, prompts.take(args.streams), 8))
            hits0 = ae.llm_stats().get("prefix_hit_tokens", 0)
            rates = {"server": [], "inprocess": []}
            notes, want = [], args.streams * args.max_tokens
            for rnd in range(args.rounds):
                order = ("server", "inprocess") if rnd % 2 == 0 else ("inprocess", "server")
                for side in order:
                    time.sleep(PAUSE_S)
                    batch = prompts.take(args.streams)
                    if side == "inprocess":
                        tokens, wall = asyncio.run(inproc_streams(ae, batch, args.max_tokens))
                    else:
                        before = scrape()
                        wall, broken = asyncio.run(server_streams(srv.url, batch, args.max_tokens))
                        tokens = scrape() - before
                        if broken:
                            notes.append(f"round {rnd}: {broken} server streams ended without [DONE]")
                    if tokens != want:
                        notes.append(f"round {rnd} {side}: {tokens:.0f} tokens, expected {want}")
                    rates[side].append(tokens / wall)
            hits = ae.llm_stats().get("prefix_hit_tokens", 0) - hits0
            if hits:
                notes.append(f"in-process prefix-cache hits during timing: {hits} tokens")
            return {"inprocess": summary(rates["inprocess"]), "server": summary(rates["server"]),
                    "server_ready_s": srv.ready_s, "server_command": shlex.join(srv.cmd),
                    "notes": notes, "samples_tps": rates}
    finally:
        ae.close()


# ---- main -------------------------------------------------------------------------------------

def git_commit():
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--"], cwd=ROOT,
                               capture_output=True, timeout=30).returncode == 1
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (sha or "unknown") + (" (+ uncommitted changes)" if dirty else "")


def main(argv=None):
    args = parse_args(argv)
    sys.path.insert(0, os.path.join(ROOT, "python"))
    import importlib.util
    missing = [m for m in ("httpx", "fastapi", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        sys.exit(f"bench_serve needs {', '.join(missing)}: pip install 'ember[serve]' httpx")
    command = shlex.join([os.path.basename(sys.executable), *sys.argv] if argv is None
                         else ["python", "benchmarks/bench_serve.py", *argv])
    results = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
               "commit": git_commit(), "command": command,
               "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus",
               "load_before": os.getloadavg(),
               "settings": {k: getattr(args, k) for k in ("parts", "rounds", "requests", "warmup",
                                                          "streams", "max_tokens", "seq", "quick")}}
    print(f"ember serving benchmark, {results['date']}, commit {results['commit']}")
    print(f"command: {command}")
    print(f"machine: {results['machine']}, load average {results['load_before'][0]:.2f} at start",
          flush=True)
    logdir = args.server_log_dir or tempfile.mkdtemp(prefix="bench_serve_")
    os.makedirs(logdir, exist_ok=True)
    runners = {"overhead": part_overhead, "kserve": part_kserve, "throughput": part_throughput}
    t_start = time.perf_counter()
    try:
        for part in args.parts:
            t0 = time.perf_counter()
            results[part] = r = runners[part](args, logdir)
            r["part_s"] = time.perf_counter() - t0
            fmt = fmt_rate if part == "throughput" else fmt_latency
            print(f"{part}: in-process {fmt(r['inprocess'])}, server {fmt(r['server'])} "
                  f"({r['part_s']:.0f} s)", flush=True)
    finally:
        if not args.server_log_dir:
            for f in os.listdir(logdir):
                os.remove(os.path.join(logdir, f))
            os.rmdir(logdir)
    results["total_s"] = time.perf_counter() - t_start

    labels = dict(seq=args.seq, streams=args.streams, max_tokens=args.max_tokens)
    results["rows"] = rows = build_rows(results, labels)
    print()
    print(format_table(rows))
    print()
    for part in ("overhead", "kserve"):
        r = results.get(part)
        if r and r["floor"]:
            print(f"floor ({part}): GET /v2/health/live on the same keep-alive client, "
                  f"{fmt_latency(r['floor'])} median; server - in-process - floor = "
                  f"{r['server']['median'] - r['inprocess']['median'] - r['floor']['median']:+.2f} ms")
        if r and r.get("inprocess_idle"):
            idle = r["inprocess_idle"]["median"]
            print(f"in-process ({part}) with {IDLE_GAP_S * 1e3:g} ms idle before each call (as a "
                  f"server's runs are): {fmt_latency(r['inprocess_idle'])}; server - that = "
                  f"{r['server']['median'] - idle:+.2f} ms")
    if {"overhead", "kserve"} & set(args.parts):
        print(f"latency: medians of {args.rounds} x {args.requests} calls per side after "
              f"{args.warmup} warm-up calls, [spread of the per-round medians]; one call at a time.")
    if "throughput" in args.parts:
        print(f"throughput: median of {args.rounds} rounds [min-max]; in-process counts the "
              f"completions' tokens, the server its {GEN_COUNTER} delta; the server figure's "
              "wall includes reading the SSE streams in this process.")
        for n in results["throughput"]["notes"]:
            print(f"note: {n}")
    print("the server and this process share the machine's cores; the sides alternate in blocks "
          "(order swapped each round), so one side idles while the other runs.")
    if args.quick:
        print("--quick: a smoke run with few samples; not a baseline.")
    print(f"total {results['total_s']:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=str)
    return results


if __name__ == "__main__":
    main()
