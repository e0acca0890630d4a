"""Benchmark harness: ember against a rival (onnxruntime, a second ember, numpy) side by side.

`compare` runs the engines in interleaved blocks (A A A, B B B, then B B B, A A A, ...: who goes
first alternates each round) so slow drift of the machine (other jobs, clocks, heat) falls on
both equally, and sleeps `pause_s` before each block so one engine's spinning pool workers
(ember's spin 2 ms, onnxruntime's and OpenBLAS's about as long or longer) are parked before the other
starts. It reports per-run times, median, p10/p90 and relative spread, and the ratio of each
engine's median to the first engine's, also per round (a paired ratio, steadier than the
ratio of medians when the machine drifts). An A/A run (ember against ember) gives 1.0 within
the spread.

`peak_rss` measures peak resident memory (VmHWM) in a fresh process per engine, so neither the
parent's arrays nor the other engine count. `python -m ember.bench --rss-child ...` is that child.
The CLI (`ember bench`) lives in cli_bench.py; benchmarks/ scripts build on this module.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from typing import Callable, Mapping

import numpy as np

from ember.errors import EmberError

__all__ = ["Runner", "compare", "run_case", "summarize", "paired_ratio", "ember_runner", "ort_runner", "max_abs_diff",
           "peak_rss", "machine_info", "plot_results", "require_matplotlib"]

DEFAULT_PAUSE_S = 0.05      # > onnxruntime's default spin-wait after a parallel section
TARGET_BLOCK_S = 0.25       # block=None: as many runs per block as fill about this long


class Runner:
    """A named engine: runner(feeds) -> {output name: np.ndarray}; close() frees it."""

    def __init__(self, label: str, fn: Callable, close: Callable | None = None, inputs=None):
        self.label, self._fn, self._close, self.inputs = label, fn, close, inputs

    def __call__(self, feeds):
        return self._fn(feeds)

    def close(self) -> None:
        if self._close is not None:
            self._close()
            self._close = None


def ember_runner(model, threads: int | None = None, label: str = "ember", quantize=None,
                 precision: str = "fp32") -> Runner:
    from ember.engine import Engine
    eng = Engine(model, threads=threads, quantize=quantize, precision=precision)
    return Runner(label, eng.run, eng.close, eng.inputs)


def ort_session(model, threads: int | None):
    """onnxruntime at its defaults except the thread counts: intra-op = threads, inter-op = 1."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise EmberError("[bench] --compare onnxruntime needs onnxruntime: pip install onnxruntime") from None
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    src = model if isinstance(model, (bytes, str)) else model.SerializeToString()
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def ort_runner(model, threads: int | None = None, label: str = "onnxruntime") -> Runner:
    sess = ort_session(model, threads)
    in_names = [i.name for i in sess.get_inputs()]
    out_names = [o.name for o in sess.get_outputs()]

    def run(feeds):
        return dict(zip(out_names, sess.run(out_names, {k: feeds[k] for k in in_names})))
    return Runner(label, run)


def max_abs_diff(a: Mapping, b: Mapping) -> float | None:
    """max |a - b| over the outputs both have (None when they share none; inf on a shape mismatch)."""
    worst = None
    for name in a.keys() & b.keys():
        x, y = np.asarray(a[name]), np.asarray(b[name])
        if x.shape != y.shape:
            return float("inf")
        d = float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)))) if x.size else 0.0
        worst = d if worst is None else max(worst, d)
    return worst


# ---- timing ----------------------------------------------------------------------------------

def summarize(times) -> dict:
    """Median, p10/p90 and relative spread (p90 - p10) / median of per-run times (seconds)."""
    t = np.asarray(times, dtype=np.float64)
    if t.size == 0:
        raise EmberError("[bench] no timed runs")
    med, p10, p90 = (float(v) for v in np.percentile(t, [50, 10, 90]))
    return {"median_s": med, "p10_s": p10, "p90_s": p90, "min_s": float(t.min()),
            "spread": (p90 - p10) / med if med > 0 else 0.0, "runs": int(t.size),
            "times_s": [float(v) for v in t]}


def paired_ratio(a, b) -> dict:
    """{median, p10, p90} of a[r] / b[r] over rounds r (a pair ran back to back: drift cancels)."""
    paired = np.asarray(a, dtype=np.float64) / np.maximum(np.asarray(b, dtype=np.float64), 1e-12)
    med, p10, p90 = (float(v) for v in np.percentile(paired, [50, 10, 90]))
    return {"median": med, "p10": p10, "p90": p90}


def compare(engines: Mapping[str, Callable], feeds=None, warmup: int = 3, rounds: int = 10,
            block: int | None = None, pause_s: float = DEFAULT_PAUSE_S,
            block_warmup: int | None = None, target_block_s: float = TARGET_BLOCK_S,
            clock=time.perf_counter, sleep=time.sleep) -> dict:
    """Times each engine fn(feeds) in interleaved blocks; the first engine is the reference.

    warmup: untimed runs of each engine (interleaved too), after which block=None picks the
    runs per block so a block of the slowest engine lasts about target_block_s (1..20).
    Round r runs the engines in the order rotated by r (two engines: A,B then B,A, ...), each
    as one block after a pause of pause_s seconds: block_warmup untimed runs (they wake the
    engine's parked workers; None: 1 when a run takes under 0.1 s, else 0), then `block` timed.
    Returns {"engines": {label: summarize(...)}, "ratio": {label: median / first's median},
    "ratio_rounds": {label: paired_ratio(its round medians, the first's)}, "round_medians":
    {label: [median of its block in each round]}, "block", "block_warmup", "rounds", "warmup",
    "pause_s"}.
    """
    labels = list(engines)
    if not labels:
        raise EmberError("[bench] compare needs at least one engine")
    if rounds < 1 or warmup < 0 or (block is not None and block < 1):
        raise EmberError(f"[bench] need rounds >= 1, warmup >= 0, block >= 1 "
                         f"(got {rounds}, {warmup}, {block})")
    warm = {k: [] for k in labels}
    for _ in range(warmup):
        for k in labels:
            sleep(pause_s)
            t0 = clock()
            engines[k](feeds)
            warm[k].append(clock() - t0)
    if block is None:
        slowest = max((float(np.median(v)) for v in warm.values() if v), default=0.0)
        block = 1 if slowest <= 0 else int(min(20, max(1, round(target_block_s / slowest))))
    if block_warmup is None:
        quickest = min((float(np.median(v)) for v in warm.values() if v), default=0.0)
        block_warmup = 1 if quickest < 0.1 else 0
    times = {k: [] for k in labels}
    per_round = {k: [] for k in labels}
    for r in range(rounds):
        shift = r % len(labels)
        for k in labels[shift:] + labels[:shift]:
            sleep(pause_s)
            for _ in range(block_warmup):
                engines[k](feeds)
            got = []
            for _ in range(block):
                t0 = clock()
                engines[k](feeds)
                got.append(clock() - t0)
            times[k] += got
            per_round[k].append(float(np.median(got)))
    stats = {k: summarize(times[k]) for k in labels}
    ref = labels[0]
    ratio, ratio_rounds = {}, {}
    for k in labels:
        ratio[k] = stats[k]["median_s"] / stats[ref]["median_s"] if stats[ref]["median_s"] else float("nan")
        ratio_rounds[k] = paired_ratio(per_round[k], per_round[ref])
    return {"engines": stats, "ratio": ratio, "ratio_rounds": ratio_rounds,
            "round_medians": per_round, "block": block, "block_warmup": block_warmup, "rounds": rounds, "warmup": warmup, "pause_s": pause_s}


def run_case(runners, feeds, warmup=3, rounds=10, block=None, pause_s=DEFAULT_PAUSE_S,
             rss_model=None, threads=None) -> dict:
    """One case of a model benchmark: runners[0] (ember) against the rest on these feeds.

    Checks outputs first (max abs diff of runners[1] vs runners[0]), then `compare`s them. With
    rss_model (the model's path), also each engine's peak RSS in a fresh process (a second
    "ember (B)" is not measured again). Returns {"feeds", "engines", "block", "block_warmup",
    "round_medians" ({label: each round's median}),
    "max_abs_diff", and with a rival "rival", "ratio" (ember / rival median), "ratio_rounds"
    (p10/median/p90 of the per-round ember / rival ratio), and "rss" {label: peak_rss(...)}}.
    """
    outs = [r(feeds) for r in runners]
    res = compare({r.label: r for r in runners}, feeds, warmup=warmup, rounds=rounds,
                  block=block, pause_s=pause_s)
    row = {"feeds": {k: list(np.shape(v)) for k, v in feeds.items()}, "engines": res["engines"],
           "block": res["block"], "block_warmup": res["block_warmup"],
           "round_medians": res["round_medians"],
           "max_abs_diff": max_abs_diff(outs[0], outs[1]) if len(outs) > 1 else None}
    if len(runners) > 1:
        ours, rival = runners[0].label, runners[1].label
        st = res["engines"]
        row.update(rival=rival, ratio=st[ours]["median_s"] / max(st[rival]["median_s"], 1e-12),
                   ratio_rounds=paired_ratio(res["round_medians"][ours], res["round_medians"][rival]))
    if rss_model is not None:
        row["rss"] = {}
        for r in runners:
            kind = "onnxruntime" if r.label == "onnxruntime" else "ember"
            if kind == "ember" and r is not runners[0]:
                continue
            print(f"[bench]   peak RSS of {r.label} (fresh process)", file=sys.stderr, flush=True)
            row["rss"][r.label] = peak_rss(rss_model, kind, threads, feeds)
    return row


# ---- peak memory in a fresh process ------------------------------------------------------------

def _vm_hwm_kib() -> int:
    """Peak resident set of this process in KiB: VmHWM, else getrusage (KiB on Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    import resource
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _rss_child(argv) -> int:
    """Child of peak_rss: import the engine, load the model, run a few times, print JSON."""
    import argparse
    p = argparse.ArgumentParser(prog="python -m ember.bench --rss-child")
    p.add_argument("--rss-child", action="store_true")
    p.add_argument("--engine", required=True, choices=["ember", "onnxruntime"])
    p.add_argument("--model", required=True)
    p.add_argument("--feeds", required=True, help=".npz of the feeds")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--runs", type=int, default=3)
    a = p.parse_args(argv)
    with np.load(a.feeds, allow_pickle=False) as z:
        feeds = {k: z[k] for k in z.files}
    base = _vm_hwm_kib()
    make = ember_runner if a.engine == "ember" else ort_runner
    runner = make(a.model, a.threads or None)
    loaded = _vm_hwm_kib()
    for _ in range(max(1, a.runs)):
        runner(feeds)
    print(json.dumps({"engine": a.engine, "base_kib": base, "loaded_kib": loaded,
                      "peak_kib": _vm_hwm_kib()}))
    return 0


def peak_rss(model: str, engine_kind: str, threads: int | None, feeds: Mapping,
             runs: int = 3, timeout_s: float = 600) -> dict:
    """Peak RSS of a fresh process that imports engine_kind ("ember" | "onnxruntime"), loads
    `model` (a path or known name), and runs `feeds` `runs` times.

    Returns MiB: {"peak_mib", "base_mib" (after Python, numpy and the feeds), "model_mib"
    (peak - base: what the engine, model and runs add)}. The child is `python -m ember.bench
    --rss-child`, so ember's package is imported in both (its C++ module only for ember)."""
    if engine_kind not in ("ember", "onnxruntime"):
        raise EmberError(f"[bench] peak_rss: engine must be 'ember' or 'onnxruntime', not {engine_kind!r}")
    pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with tempfile.TemporaryDirectory(prefix="ember-bench-") as tmp:
        path = os.path.join(tmp, "feeds.npz")
        np.savez(path, **{k: np.asarray(v) for k, v in feeds.items()})
        cmd = [sys.executable, "-m", "ember.bench", "--rss-child", "--engine", engine_kind,
               "--model", str(model), "--feeds", path, "--threads", str(threads or 0),
               "--runs", str(runs)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise EmberError(f"[bench] peak_rss child ({engine_kind}) took over {timeout_s:.0f} s") from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise EmberError(f"[bench] peak_rss child ({engine_kind}) exited {proc.returncode}: "
                         + " | ".join(tail))
    try:
        got = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise EmberError(f"[bench] peak_rss child ({engine_kind}) printed no result: "
                         f"{proc.stdout[-300:]!r}") from None
    return {"peak_mib": got["peak_kib"] / 1024, "base_mib": got["base_kib"] / 1024,
            "model_mib": (got["peak_kib"] - got["base_kib"]) / 1024}


# ---- reporting -------------------------------------------------------------------------------

def machine_info(threads: int | None = None) -> dict:
    """What a result needs to be read later: CPU, cores, ISA, versions, commit."""
    info = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "threads": threads, "python": platform.python_version(), "numpy": np.__version__,
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        from ember import _core
        info["ember_isa"] = _core.cpu_isa()
        info["ember_pool_threads"] = _core.thread_pool_size()
    except ImportError:
        pass
    try:
        import onnxruntime
        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        out = subprocess.run(["git", "-C", here, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=5)
        if out.returncode == 0:
            info["commit"] = out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def require_matplotlib():
    """matplotlib.pyplot (Agg backend), or an EmberError that says how to get it."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise EmberError("[bench] plotting needs matplotlib, which is not installed: "
                         "pip install matplotlib (or drop --plot)") from None
    return plt


def plot_results(rows, path: str, title: str = "", unit: str = "ms") -> None:
    """Grouped bar chart per case and engine, whiskers at p10/p90 (log scale when values span
    more than 20x). unit "s" | "ms" | "us": median time; "GFLOP/s": row["flop"] / time.

    rows: [{"case": str, "engines": {label: summarize(...)}, "flop": float (GFLOP/s only)}]."""
    plt = require_matplotlib()
    labels = list(dict.fromkeys(k for r in rows for k in r["engines"]))
    width = 0.8 / max(1, len(labels))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(rows) + 2), 4))
    every = []
    for i, label in enumerate(labels):
        xs, vals, lo, hi = [], [], [], []
        for j, r in enumerate(rows):
            s = r["engines"].get(label)
            if s is None:
                continue
            if unit == "GFLOP/s":
                v, a, b = (r["flop"] / 1e9 / s[k] for k in ("median_s", "p90_s", "p10_s"))
            else:
                scale = {"ms": 1e3, "s": 1.0, "us": 1e6}[unit]
                v, a, b = (s[k] * scale for k in ("median_s", "p10_s", "p90_s"))
            xs.append(j + (i - (len(labels) - 1) / 2) * width)
            vals.append(v)
            lo.append(max(0.0, v - a))
            hi.append(max(0.0, b - v))
        every += vals
        ax.bar(xs, vals, width, yerr=[lo, hi], capsize=3, label=label)
    if every and min(every) > 0 and max(every) / min(every) > 20:
        ax.set_yscale("log")
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([r["case"] for r in rows], rotation=15)
    what = "GFLOP/s at the median" if unit == "GFLOP/s" else f"median time per run ({unit})"
    ax.set_ylabel(f"{what}; whiskers p10-p90")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def fmt_time(s: float) -> str:
    if s >= 1:
        return f"{s:.3f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.1f} us"


def fmt_stat(st: Mapping) -> str:
    """'12.34 ms ±3%': median and half the relative p10-p90 spread."""
    return f"{fmt_time(st['median_s'])} ±{st['spread'] * 50:.0f}%"


def print_table(headers, rows, out=None) -> None:
    """Left-aligned first column, right-aligned others; widths from the content."""
    out = out or sys.stdout
    cols = [headers] + [[str(c) for c in r] for r in rows]
    w = [max(len(r[i]) for r in cols) for i in range(len(headers))]
    for n, r in enumerate(cols):
        print("  ".join(c.ljust(w[i]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(r)), file=out)
        if n == 0:
            print("  ".join("-" * x for x in w), file=out)


if __name__ == "__main__":
    if "--rss-child" in sys.argv[1:]:
        sys.exit(_rss_child(sys.argv[1:]))
    print("usage: ember bench MODEL ... (this module's own entry point is the --rss-child of "
          "peak_rss)", file=sys.stderr)
    sys.exit(2)
