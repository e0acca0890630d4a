"""Decoder-LLM benchmark: ember vs llama.cpp (llama-bench), same model, same threads, one script.

    PYTHONPATH=python python benchmarks/bench_llm.py [--threads 2] [--runs 3] [--json out.json]
        [--sections decode,prefill,concurrent,memory] [--model smollm2-135m] [--llama-bench PATH]

The targets of the LLM issue (SmolLM2-135M-Instruct Q4_1, 2 threads):

- decode: batch-1 tokens/s, llama.cpp's tg128 (128 tokens after a tiny prompt). ember's figure is
  decode only: each run times generate(max_tokens=1) and generate(max_tokens=128) on fresh
  4-token prompts, and rate = 127 / (t128 - t1), so prefill and per-call overhead cancel.
  Target >= 1.0x llama.cpp tg128 (goal 1.5x).
- prefill: pp512, a 512-token prompt and one generated token; rate = 512 / wall. Target >= 2.0x
  llama.cpp pp512.
- concurrent: 16 requests at once, distinct 64-token prompts, 64 generated tokens each
  (ignore_eos). Reported twice: generated tokens / wall (wall includes the prefill of all 16
  prompts) and decode only, by the same difference as above (16 x 63 tokens over
  t(64 tokens) - t(1 token)). Target >= 4x llama.cpp's batch-1 tg128.
- memory: peak RSS of a fresh process that loads the model with a 1024-token context and fills
  it (512-token prompt + 512 generated): ember in `python -c` (Engine(max_model_len=1024,
  kv_cache_bytes for 1024 tokens)), llama.cpp as `llama-bench -pg 512,512` (n_ctx = 1024).
  llama-bench stands in for llama-cpp-python: the same library, without the Python wrapper.
  Also the RSS of `python -c "import ember"` alone, for scale. Target <= 1.2x llama.cpp's.

Every prompt is distinct (ember has automatic prefix caching; a repeated prompt would be a cache
hit); the prefix-cache hits the engine counted during each section are reported, and should be 0.
Each section warms up once (the first call compiles plans); figures are the median of --runs with
min and max. Beside them: the decode bandwidth bound, bytes read per token = the GGUF tensor
bytes + the KV read at the mean position, over this machine's read bandwidth as torch.sum on
--threads threads measures it (benchmarks/bandwidth.py, a 512 MB array; numpy on one thread
where torch is missing, then a lower bound).
llama.cpp comes from benchmarks/build_llama_cpp.sh; without it the rival columns are empty.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECTIONS = ("decode", "prefill", "concurrent", "memory")
DEFAULT_LLAMA_BENCH = os.path.join(
    os.environ.get("EMBER_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "ember"),
    "llama.cpp", "build", "bin", "llama-bench")
PROMPT_LO, PROMPT_HI = 1000, 40000      # ordinary (non-special) token ids of the vocabulary

# metric -> (what the target compares against, minimum ratio, goal ratio, "higher"/"lower")
TARGETS = {
    "decode_tps": ("llama_tg", 1.0, 1.5, "higher"),
    "prefill_tps": ("llama_pp", 2.0, None, "higher"),
    "concurrent_tps": ("llama_tg", 4.0, None, "higher"),
    "concurrent_decode_tps": ("llama_tg", 4.0, None, "higher"),
    "peak_rss_mb": ("llama_rss_mb", 1.2, None, "lower"),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m", help="GGUF path or known model name")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=3, help="timed runs per section (median, min, max)")
    p.add_argument("--sections", default=",".join(SECTIONS), type=parse_sections,
                   help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--llama-bench", default=None,
                   help=f"llama-bench binary (default {DEFAULT_LLAMA_BENCH} if it exists); 'none' skips")
    p.add_argument("--gen", type=int, default=128, help="decode: generated tokens (tg128)")
    p.add_argument("--prompt", type=int, default=512, help="prefill: prompt tokens (pp512)")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--conc-prompt", type=int, default=64)
    p.add_argument("--conc-gen", type=int, default=64)
    p.add_argument("--mem-ctx", type=int, default=1024, help="memory: context (half prompt, half generated)")
    p.add_argument("--bw-mb", type=int, default=512, help="bandwidth probe array size (MB)")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)
    for name in ("threads", "runs", "gen", "prompt", "concurrency", "conc_prompt", "conc_gen", "bw_mb"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.gen < 2 or args.conc_gen < 2:
        p.error("--gen and --conc-gen must be >= 2 (decode rates are differences against 1 token)")
    if args.mem_ctx < 4 or args.mem_ctx % 2:
        p.error("--mem-ctx must be an even number >= 4")
    return args


def parse_sections(text):
    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in names if s not in SECTIONS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown section(s) {','.join(bad) or '(none)'}; "
                                         f"choose from {','.join(SECTIONS)}")
    return [s for s in SECTIONS if s in names]


# ---- statistics and table ---------------------------------------------------------------------

def summary(values):
    """{median, min, max, runs, samples} of a list of rates (or None when empty)."""
    values = [float(v) for v in values]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "runs": len(values), "samples": values}


def fmt_value(st, digits=1):
    if st is None:
        return "-"
    if not isinstance(st, dict):
        return f"{st:.{digits}f}"
    if st["runs"] == 1 or st["min"] == st["max"]:
        return f"{st['median']:.{digits}f}"
    return f"{st['median']:.{digits}f} [{st['min']:.{digits}f}-{st['max']:.{digits}f}]"


def _median(st):
    if st is None:
        return None
    return st["median"] if isinstance(st, dict) else float(st)


def target_text(metric):
    _, lo, goal, sense = TARGETS[metric]
    rel = ">=" if sense == "higher" else "<="
    return f"{rel} {lo:g}x" + (f" (goal {goal:g}x)" if goal else "")


def verdict(metric, ratio):
    if ratio is None:
        return ""
    _, lo, goal, sense = TARGETS[metric]
    if sense == "lower":
        return "ok" if ratio <= lo else "MISS"
    if goal and ratio >= goal:
        return "goal"
    return "ok" if ratio >= lo else "MISS"


ROW_LABELS = {
    "decode_tps": "decode tok/s (batch 1, tg{gen}, decode only)",
    "decode_e2e_tps": "  decode tok/s incl. tiny prefill",
    "prefill_tps": "prefill tok/s (pp{prompt})",
    "concurrent_tps": "{conc} concurrent, tok/s incl. prefill",
    "concurrent_decode_tps": "{conc} concurrent, decode-only tok/s",
    "peak_rss_mb": "peak RSS MB (ctx {ctx})",
    "import_rss_mb": "  RSS MB of import ember alone",
}


def build_rows(results, labels):
    """(label, ember, llama.cpp, ratio, target) rows from the result dict."""
    ember, llama = results.get("ember", {}), results.get("llama_cpp", {})
    rows = []
    for metric, label in ROW_LABELS.items():
        if metric not in ember:
            continue
        st = ember[metric]
        ref_key = TARGETS[metric][0] if metric in TARGETS else None
        ref = llama.get(ref_key) if ref_key else None
        ratio = None
        if ref is not None and _median(ref) and _median(st) is not None:
            ratio = _median(st) / _median(ref)
        digits = 0 if metric.endswith("_mb") else 1
        ref_text = fmt_value(ref, digits)
        if ref is not None and ref_key == "llama_tg" and metric.startswith("concurrent"):
            ref_text += " (tg, batch 1)"
        target = ""
        if metric in TARGETS:
            target = target_text(metric) + (f"  {verdict(metric, ratio)}" if ratio is not None else "")
        rows.append((label.format(**labels), fmt_value(st, digits), ref_text,
                     f"{ratio:.2f}x" if ratio is not None else "-", target))
    return rows


def format_table(rows):
    head = ("metric", "ember", "llama.cpp", "ratio", "target")
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    line = lambda r: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths))).rstrip()
    return "\n".join([line(head), "  ".join("-" * w for w in widths), *map(line, rows)])


# ---- prompts ----------------------------------------------------------------------------------

class Prompts:
    """Distinct random token-id prompts (no two share a first token block), reproducible."""

    def __init__(self, seed=0):
        self.rng = random.Random(seed)

    def take(self, n_tokens, count=None):
        one = lambda: [self.rng.randrange(PROMPT_LO, PROMPT_HI) for _ in range(n_tokens)]
        return one() if count is None else [one() for _ in range(count)]


# ---- ember ------------------------------------------------------------------------------------

def timed_generate(eng, prompts, max_tokens):
    t0 = time.perf_counter()
    out = eng.generate(prompts, max_tokens=max_tokens, ignore_eos=True)
    dt = time.perf_counter() - t0
    got = sum(c.usage["completion_tokens"] for c in out)
    want = max_tokens * (len(prompts) if prompts and isinstance(prompts[0], list) else 1)
    if got != want:
        raise RuntimeError(f"ember generated {got} tokens, expected {want}")
    return dt


def _hits(eng):
    return eng.llm_stats().get("prefix_hit_tokens", 0)


def ember_decode(eng, prompts, gen, runs):
    """Batch-1 decode: (decode-only rates, end-to-end rates) over `runs`, after one warm-up."""
    dec, e2e = [], []
    for i in range(runs + 1):
        t1 = timed_generate(eng, prompts.take(4), 1)
        tn = timed_generate(eng, prompts.take(4), gen)
        if i:
            dec.append((gen - 1) / max(tn - t1, 1e-9))
            e2e.append(gen / tn)
    return dec, e2e


def ember_prefill(eng, prompts, n_prompt, runs):
    rates = []
    for i in range(runs + 1):
        dt = timed_generate(eng, prompts.take(n_prompt), 1)
        if i:
            rates.append(n_prompt / dt)
    return rates


def ember_concurrent(eng, prompts, conc, n_prompt, gen, runs):
    """(generated / wall incl. prefill, decode-only by difference) rates over `runs`."""
    total, dec = [], []
    for i in range(runs + 1):
        t1 = timed_generate(eng, prompts.take(n_prompt, conc), 1)
        tn = timed_generate(eng, prompts.take(n_prompt, conc), gen)
        if i:
            total.append(conc * gen / tn)
            dec.append(conc * (gen - 1) / max(tn - t1, 1e-9))
    return total, dec


EMBER_RSS_CHILD = """
import sys
import ember
from ember.llm.gguf import load_gguf
from ember.llm.model import config_from_gguf
path, threads, ctx = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with load_gguf(path) as g:
    per_token = config_from_gguf(g).kv_bytes_per_token("f16")
eng = ember.Engine(path, threads=threads, max_model_len=ctx, kv_cache_bytes=per_token * ctx)
half = ctx // 2
out = eng.generate(list(range(1000, 1000 + half)), max_tokens=half, ignore_eos=True)
assert out[0].usage["completion_tokens"] == half, out[0].usage
with open("/proc/self/status") as f:    # cross-check of the launcher's wait4 figure
    print("VmHWM_kib", next((l.split()[1] for l in f if l.startswith("VmHWM:")), "nan"))
eng.close()
"""


# A lean launcher (python -S) forks and execs the command and reports the child's wait4 rusage.
# Spawning the command straight from this process would not do: Linux carries the exec'ing
# process's high-water RSS into the child's ru_maxrss, i.e. this (large) process's.
RUSAGE_LAUNCHER = """
import json, os, sys
out, cmd = sys.argv[1], sys.argv[2:]
pid = os.fork()
if pid == 0:
    try:
        os.execvp(cmd[0], cmd)
    finally:
        os._exit(127)
_, status, ru = os.wait4(pid, 0)
with open(out, "w") as f:
    json.dump({"maxrss_kib": ru.ru_maxrss, "exit": os.waitstatus_to_exitcode(status)}, f)
"""


def run_with_rusage(cmd, env=None, timeout=900):
    """(returncode, stdout, stderr, peak RSS MB) of cmd, from wait4 in a lean launcher."""
    import signal
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        res = os.path.join(tmp, "rusage.json")
        with open(os.path.join(tmp, "out"), "w+") as fo, open(os.path.join(tmp, "err"), "w+") as fe:
            proc = subprocess.Popen([sys.executable, "-S", "-c", RUSAGE_LAUNCHER, res, *cmd], stdout=fo,
                                    stderr=fe, env=env, text=True, start_new_session=True)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise RuntimeError(f"{os.path.basename(cmd[0])} timed out after {timeout}s") from None
            fo.seek(0)
            fe.seek(0)
            out, err = fo.read(), fe.read()
        if not os.path.exists(res):
            return proc.returncode or 1, out, err, None
        with open(res) as f:
            r = json.load(f)
        return r["exit"], out, err, r["maxrss_kib"] / 1024.0      # KiB on Linux


def child_env():
    env = dict(os.environ)
    py = os.path.join(ROOT, "python")
    env["PYTHONPATH"] = py + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def ember_rss(path, threads, ctx):
    """(peak RSS MB by wait4, by the child's own VmHWM, and of `import ember` alone)."""
    rc, out, err, rss = run_with_rusage([sys.executable, "-c", EMBER_RSS_CHILD, path, str(threads), str(ctx)],
                                        env=child_env())
    if rc or rss is None:
        raise RuntimeError(f"ember RSS child failed ({rc}): {err.strip()[-2000:]}")
    hwm = next((float(l.split()[1]) / 1024.0 for l in out.splitlines() if l.startswith("VmHWM_kib")), None)
    rc, _, err, base = run_with_rusage([sys.executable, "-c", "import ember"], env=child_env())
    return rss, hwm, (base if rc == 0 else None)


# ---- llama.cpp --------------------------------------------------------------------------------

def find_llama_bench(opt):
    if opt and opt.lower() == "none":
        return None, "skipped (--llama-bench none)"
    path = opt or DEFAULT_LLAMA_BENCH
    if os.path.isfile(path) and os.access(path, os.X_OK):
        return path, None
    how = "" if opt else "; build it with `bash benchmarks/build_llama_cpp.sh`"
    return None, f"llama-bench not found at {path}{how}"


def parse_llama_bench_json(text):
    """llama-bench -o json -> {("pp", n) | ("tg", n) | ("pg", (p, n)): rate summary}."""
    start = text.find("[")
    if start < 0:
        raise ValueError("no JSON array in llama-bench output")
    entries = json.loads(text[start:text.rindex("]") + 1])
    out = {}
    for e in entries:
        p, n = int(e.get("n_prompt", 0)), int(e.get("n_gen", 0))
        if int(e.get("n_depth", 0) or 0):
            continue
        key = ("pp", p) if n == 0 else ("tg", n) if p == 0 else ("pg", (p, n))
        samples = e.get("samples_ts") or [e["avg_ts"]]
        out[key] = summary(samples)
        out[key]["avg_ts"] = float(e.get("avg_ts", out[key]["median"]))
        out[key]["stddev_ts"] = float(e.get("stddev_ts", 0.0))
        out.setdefault("_info", {k: e.get(k) for k in ("build_commit", "build_number", "cpu_info", "backends",
                                                       "model_type", "model_size", "n_threads", "type_k",
                                                       "type_v", "n_batch", "n_ubatch", "flash_attn")})
    return out


def llama_speed(bench, model, threads, runs, n_prompt, n_gen):
    """pp{n_prompt} and tg{n_gen} of llama-bench (0 skips one) -> parsed dict, peak RSS MB."""
    cmd = [bench, "-m", model, "-t", str(threads), "-p", str(n_prompt), "-n", str(n_gen),
           "-r", str(runs), "-o", "json"]
    rc, out, err, rss = run_with_rusage(cmd)
    if rc:
        raise RuntimeError(f"llama-bench failed ({rc}): {' '.join(cmd)}\n{err.strip()[-2000:]}")
    return parse_llama_bench_json(out), rss, cmd


def llama_rss(bench, model, threads, ctx):
    half = ctx // 2
    cmd = [bench, "-m", model, "-t", str(threads), "-p", "0", "-n", "0", "-pg", f"{half},{half}",
           "-r", "1", "-o", "json"]
    rc, out, err, rss = run_with_rusage(cmd)
    if rc or rss is None:
        raise RuntimeError(f"llama-bench failed ({rc}): {' '.join(cmd)}\n{err.strip()[-2000:]}")
    parsed = parse_llama_bench_json(out)
    if ("pg", (half, half)) not in parsed:
        raise RuntimeError(f"llama-bench printed no pp{half}+tg{half} test: {out[:500]}")
    return rss, cmd


LCPP_CHILD = r"""
import os, sys
sys.path.insert(0, sys.argv[1])
os.environ["LLAMA_CPP_LIB_PATH"] = sys.argv[2]
import llama_cpp
ctx = int(sys.argv[5])
m = llama_cpp.Llama(model_path=sys.argv[3], n_ctx=ctx, n_threads=int(sys.argv[4]), verbose=False)
m.create_completion(prompt=[1000 + i for i in range(ctx // 2)], max_tokens=ctx // 2, temperature=0.0)
"""


def find_llama_cpp_python(bench):
    """(python package dir, lib dir) of llama-cpp-python next to llama-bench's build (the sdist
    build_llama_cpp.sh unpacks: its pure-Python ctypes package, loading the built libllama), or None."""
    if bench is None:
        return None
    lib = os.path.dirname(bench)
    root = os.path.dirname(os.path.dirname(lib))
    pkgs = sorted(glob.glob(os.path.join(root, "llama_cpp_python-*", "llama_cpp", "__init__.py")))
    if not pkgs or not glob.glob(os.path.join(lib, "libllama.so*")):
        return None
    return os.path.dirname(os.path.dirname(pkgs[-1])), lib


def llama_cpp_python_rss(found, model, threads, ctx):
    """Peak RSS MB of a llama-cpp-python process filling a ctx-token context, as ember's child."""
    cmd = [sys.executable, "-c", LCPP_CHILD, found[0], found[1], model, str(threads), str(ctx)]
    rc, _, err, rss = run_with_rusage(cmd)
    if rc or rss is None:
        raise RuntimeError(f"llama-cpp-python RSS child failed ({rc}): {err.strip()[-2000:]}")
    return rss


# ---- bandwidth --------------------------------------------------------------------------------

def bandwidth_bounds(bw_gbs, weight_bytes, kv_per_token, args):
    """Decode tokens/s ceilings from bytes read per step (weights once + each sequence's KV)."""
    b1_pos = 4 + args.gen / 2                         # mean position of tg: tiny prompt + half
    b1 = weight_bytes + kv_per_token * b1_pos
    conc_pos = args.conc_prompt + args.conc_gen / 2
    bc = weight_bytes + args.concurrency * kv_per_token * conc_pos
    return {"read_gbs": bw_gbs, "weight_bytes": weight_bytes,
            "kv_bytes_per_token": kv_per_token,
            "decode_bytes_per_token": b1, "decode_bound_tps": bw_gbs * 1e9 / b1,
            "concurrent_bytes_per_step": bc,
            "concurrent_bound_tps": args.concurrency * bw_gbs * 1e9 / bc}


# ---- main -------------------------------------------------------------------------------------

def main(argv=None):
    args = parse_args(argv)
    sys.path.insert(0, os.path.join(ROOT, "python"))
    import ember
    from ember import hub
    from ember.llm.gguf import load_gguf
    from ember.llm.model import config_from_gguf

    path = args.model if os.path.exists(args.model) else hub.resolve(args.model)
    with load_gguf(path) as g:
        weight_bytes = g.tensor_bytes_total
        cfg = config_from_gguf(g)
    kv_per_token = cfg.kv_bytes_per_token("f16")
    bench, note = find_llama_bench(args.llama_bench)
    secs = args.sections
    results = {"model": os.path.basename(path), "threads": args.threads, "runs": args.runs,
               "sections": secs, "machine": f"{platform.node()} {platform.machine()} "
                                            f"{os.cpu_count()} cpus", "ember": {}, "llama_cpp": {},
               "settings": {k: getattr(args, k) for k in ("gen", "prompt", "concurrency", "conc_prompt",
                                                          "conc_gen", "mem_ctx")},
               "notes": []}
    E, L = results["ember"], results["llama_cpp"]
    print(f"model {path} ({weight_bytes / 1e6:.1f} MB of tensors), {args.threads} threads, "
          f"{args.runs} runs per section", flush=True)

    speed = [s for s in secs if s != "memory"]
    if speed:
        max_len = max(args.prompt + 1, 4 + args.gen, args.conc_prompt + args.conc_gen, 1024)
        eng = ember.Engine(path, threads=args.threads, max_model_len=max_len,
                           max_num_seqs=max(16, args.concurrency))
        prompts = Prompts(0)
        try:
            hits = {}
            if "decode" in secs:
                h0 = _hits(eng)
                if bench is None:
                    dec, e2e = ember_decode(eng, prompts, args.gen, args.runs)
                else:  # one run of each engine in turn: the VM's speed drifts within minutes
                    dec, e2e, tg = [], [], []
                    for _ in range(args.runs):
                        d, e = ember_decode(eng, prompts, args.gen, 1)
                        dec, e2e = dec + d, e2e + e
                        parsed, _, cmd = llama_speed(bench, path, args.threads, 1, 0, args.gen)
                        tg += parsed[("tg", args.gen)]["samples"]
                        L["command_tg"], L["info"] = " ".join(cmd), parsed.get("_info")
                    L["llama_tg"] = summary(tg)
                E["decode_tps"], E["decode_e2e_tps"] = summary(dec), summary(e2e)
                hits["decode"] = _hits(eng) - h0
                print(f"ember decode: {fmt_value(E['decode_tps'])} tok/s", flush=True)
            if "prefill" in secs:
                h0 = _hits(eng)
                if bench is None:
                    E["prefill_tps"] = summary(ember_prefill(eng, prompts, args.prompt, args.runs))
                else:  # interleaved, as decode
                    rates, pp = [], []
                    for _ in range(args.runs):
                        rates += ember_prefill(eng, prompts, args.prompt, 1)
                        parsed, _, cmd = llama_speed(bench, path, args.threads, 1, args.prompt, 0)
                        pp += parsed[("pp", args.prompt)]["samples"]
                        L["command_pp"], L["info"] = " ".join(cmd), parsed.get("_info")
                    E["prefill_tps"], L["llama_pp"] = summary(rates), summary(pp)
                hits["prefill"] = _hits(eng) - h0
                print(f"ember prefill: {fmt_value(E['prefill_tps'])} tok/s", flush=True)
            if "concurrent" in secs:
                h0 = _hits(eng)
                tot, dec = ember_concurrent(eng, prompts, args.concurrency, args.conc_prompt,
                                            args.conc_gen, args.runs)
                E["concurrent_tps"], E["concurrent_decode_tps"] = summary(tot), summary(dec)
                hits["concurrent"] = _hits(eng) - h0
                print(f"ember concurrent: {fmt_value(E['concurrent_tps'])} tok/s", flush=True)
            E["prefix_hit_tokens"] = hits
            if any(hits.values()):
                results["notes"].append(f"prefix-cache hits during timing: {hits} (prompts should be distinct)")
        finally:
            eng.close()
    if "memory" in secs:
        rss, hwm, base = ember_rss(path, args.threads, args.mem_ctx)
        E["peak_rss_mb"], E["peak_rss_vmhwm_mb"], E["import_rss_mb"] = rss, hwm, base
        print(f"ember peak RSS: {rss:.0f} MB", flush=True)

    if bench is None:
        results["notes"].append(f"llama.cpp: {note}")
        print(f"note: {note}; the llama.cpp columns are empty", flush=True)
    else:
        # What the interleaved sections above did not measure yet.
        n_p = args.prompt if "prefill" in secs and "llama_pp" not in L else 0
        n_g = args.gen if {"decode", "concurrent"} & set(secs) and "llama_tg" not in L else 0
        if n_p or n_g:
            parsed, _, cmd = llama_speed(bench, path, args.threads, args.runs, n_p, n_g)
            L["command"] = " ".join(cmd)
            L["info"] = parsed.get("_info")
            if n_g:
                L["llama_tg"] = parsed.get(("tg", n_g))
            if n_p:
                L["llama_pp"] = parsed.get(("pp", n_p))
            print(f"llama.cpp: tg{n_g} {fmt_value(L.get('llama_tg'))}, pp{n_p} "
                  f"{fmt_value(L.get('llama_pp'))} tok/s", flush=True)
        if "memory" in secs:
            found = find_llama_cpp_python(bench)
            if found is not None:  # the rival the issue names: a llama-cpp-python process
                L["llama_rss_mb"] = llama_cpp_python_rss(found, path, args.threads, args.mem_ctx)
                L["llama_bench_rss_mb"], _ = llama_rss(bench, path, args.threads, args.mem_ctx)
                L["rss_command"] = f"llama-cpp-python ({found[0]}, LLAMA_CPP_LIB_PATH={found[1]})"
                results["notes"].append(
                    f"llama.cpp RSS is a llama-cpp-python process's (llama-bench alone: "
                    f"{L['llama_bench_rss_mb']:.0f} MB)")
            else:
                L["llama_rss_mb"], cmd = llama_rss(bench, path, args.threads, args.mem_ctx)
                L["rss_command"] = " ".join(cmd)
                results["notes"].append("llama.cpp RSS is llama-bench's (the library llama-cpp-python "
                                        "wraps; no llama-cpp-python package found next to it)")

    from bandwidth import stream_read_gbs  # same directory: on sys.path
    bw, probe = stream_read_gbs(args.threads, args.bw_mb)
    results["bandwidth"] = bb = bandwidth_bounds(bw, weight_bytes, kv_per_token, args)
    bb["read_probe"] = probe

    labels = dict(gen=args.gen, prompt=args.prompt, conc=args.concurrency, ctx=args.mem_ctx)
    results["rows"] = rows = build_rows(results, labels)
    print()
    print(format_table(rows))
    print()
    print(f"bandwidth bound: {probe} reads {bw:.1f} GB/s; decode reads "
          f"{weight_bytes / 1e6:.1f} MB of weights + "
          f"{kv_per_token * (4 + args.gen / 2) / 1e6:.2f} MB of KV per token -> "
          f"<= {bb['decode_bound_tps']:.0f} tok/s at batch 1; {args.concurrency} concurrent "
          f"(weights once per step) -> <= {bb['concurrent_bound_tps']:.0f} tok/s")
    if "concurrent_tps" in E:
        print(f"{args.concurrency}-concurrent rows compare ember's aggregate with llama.cpp's batch-1 "
              "tg; the first includes the prefill of every prompt, the second is decode only "
              f"(t({args.conc_gen} tokens) - t(1 token)).")
    if "peak_rss_mb" in E:
        print(f"peak RSS: a fresh process, ctx {args.mem_ctx} filled ({args.mem_ctx // 2} prompt + "
              f"{args.mem_ctx // 2} generated), wait4's ru_maxrss via a lean launcher (ember's child's "
              f"own VmHWM: {fmt_value(E.get('peak_rss_vmhwm_mb'), 0)} MB); llama.cpp's: see the note below.")
    for n in results["notes"]:
        print(f"note: {n}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=str)
    return results


if __name__ == "__main__":
    main()
