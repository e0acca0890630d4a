"""Gated rollout, the comparison half: a candidate model against the serving (baseline) model on
reference data, with limits that decide whether the candidate may replace it.

Graph models run the data in batches; per output: max/mean abs diff, cosine per row (mean, min),
top-1 agreement and accuracy against labels of classifier-like outputs ([N, C] floats: argmax,
[N] integers: ids; NOTE: a [N, dim] embedding is [N, C] too: min_top1_agreement = false skips it);
latency is the median of interleaved timed passes; memory is weights + one batch's plan (arena,
outputs, plan-time folds) as the session reports them. LLMs: perplexity on the texts, greedy
token agreement of short generations, latency of one fixed generation, weights + KV cache.
Without a baseline only the absolute checks apply (finite outputs, min_accuracy).
"""
from __future__ import annotations

import dataclasses
import json
import os
import time

import numpy as np

from ember.errors import EmberError, ModelError

GEN_TOKENS = 16       # greedy tokens per prompt for LLM agreement and latency


@dataclasses.dataclass(frozen=True)
class ValidationLimits:
    """Bounds a candidate must meet; None switches a check off (TOML: false, CLI: none)."""

    min_cosine: float | None = 0.99
    max_abs_diff: float | None = None
    min_top1_agreement: float | None = 0.98
    max_accuracy_drop: float | None = 0.01
    min_accuracy: float | None = None
    max_latency_ratio: float | None = 1.5
    max_memory_ratio: float | None = 2.0
    max_perplexity_ratio: float | None = 1.05
    min_token_agreement: float | None = 0.9
    batch_size: int = 32

    @classmethod
    def from_dict(cls, d: dict, where: str = "validation", ignore=()) -> "ValidationLimits":
        """A [validation] table -> limits; keys in `ignore` belong to another reader (the
        server's feeds/prompt). ModelError names the key for unknown keys and bad values."""
        fields = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(fields) - set(ignore)) if isinstance(d, dict) else None
        if unknown is None or unknown:
            raise ModelError(f"[validate] {where}: " + (f"unknown key(s) {', '.join(unknown)}"
                             if unknown else "must be a table") + f"; limits: {', '.join(fields)}")
        return cls(**{k: _limit_value(k, v, f"{where}.{k}") for k, v in d.items() if k in fields})


def _limit_value(key, v, where):
    if key == "batch_size":
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 1 << 20:
            raise ModelError(f"[validate] {where} must be an integer in [1, 1048576], not {v!r}")
        return v
    if v is None or v is False:          # TOML has no null: false switches a check off
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
        raise ModelError(f"[validate] {where} must be a finite number or false, not {v!r}")
    lo, hi = {"min_cosine": (-1, 1), "max_accuracy_drop": (-1, 1)}.get(
        key, (0, 1) if "agreement" in key or key == "min_accuracy" else (0, float("inf")))
    if not lo <= v <= hi:
        raise ModelError(f"[validate] {where} must be in [{lo}, {hi}], not {v!r}")
    return float(v)


@dataclasses.dataclass
class ValidationReport:
    """Rows of measurements, the limits they were held to, and what failed."""

    kind: str                       # "graph" | "llm"
    candidate: str
    baseline: str | None
    samples: int
    limits: ValidationLimits
    rows: list = dataclasses.field(default_factory=list)
    failures: list = dataclasses.field(default_factory=list)
    notes: list = dataclasses.field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def add(self, metric, value, limit=None, candidate=None, baseline=None):
        """One row; checked against getattr(limits, limit) when that limit is set."""
        bound = getattr(self.limits, limit) if limit else None
        ok = None
        if bound is not None and value is not None:
            ok = bool(value >= bound if limit.startswith("min_") else value <= bound)
            if not ok:      # NaN compares False: a NaN measurement fails
                side = "below" if limit.startswith("min_") else "above"
                self.failures.append(f"{limit}: {metric} is {value:.6g}, {side} the bound {bound:g}")
        self.rows.append(dict(metric=metric, candidate=candidate, baseline=baseline, value=value,
                              limit=limit, bound=bound, ok=ok))

    def fail(self, what, message):
        self.failures.append(f"{what}: {message}")
        self.rows.append(dict(metric=what, candidate=None, baseline=None, value=None, limit=what,
                              bound=None, ok=False))

    def to_dict(self) -> dict:
        clean = lambda v: None if isinstance(v, float) and not np.isfinite(v) else v  # noqa: E731
        return dict(passed=self.passed, kind=self.kind, candidate=self.candidate,
                    baseline=self.baseline, samples=self.samples,
                    limits=dataclasses.asdict(self.limits),
                    metrics=[{k: clean(v) for k, v in r.items()} for r in self.rows],
                    failures=list(self.failures), notes=list(self.notes))

    def text(self) -> str:
        fmt = lambda v: "-" if v is None else f"{v:.6g}" if isinstance(v, float) else str(v)  # noqa: E731
        out = [f"ember validate ({self.kind}, {self.samples} samples)",
               f"  candidate: {self.candidate}",
               f"  baseline:  {self.baseline or '(none: absolute checks only)'}",
               "", f"{'metric':<40} {'candidate':>11} {'baseline':>11} {'value':>11}  check"]
        for r in self.rows:
            op = ">=" if (r["limit"] or "").startswith("min_") else "<="
            check = (f"{r['limit']} {op} {r['bound']:g}" if r["bound"] is not None
                     else f"{r['limit']} (off)" if r["limit"] and r["ok"] is None else r["limit"] or "")
            mark = {True: "  ok", False: "  FAIL", None: ""}[r["ok"]]
            out.append(f"{r['metric']:<40} {fmt(r['candidate']):>11} {fmt(r['baseline']):>11} "
                       f"{fmt(r['value']):>11}  {check}{mark}")
        out += [""] + [f"note: {n}" for n in self.notes]
        out.append("PASSED" if self.passed else f"FAILED ({len(self.failures)}):")
        out += [f"  - {f}" for f in self.failures]
        return "\n".join(out)


# ---- data -----------------------------------------------------------------------------------

LABELS = "__labels__"


def load_data(path) -> dict | list:
    """.npz -> {input: array} (batch on axis 0; "__labels__" kept for compare_models), or
    .jsonl (a string or {"text"|"prompt": ...} per line) / .txt (one per line) -> LLM texts."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelError(f"[validate] {path}: no such data file")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError) as e:
            raise ModelError(f"[validate] {path}: not a readable .npz: {e}") from None
        _check_feeds(data, path)
        return data
    if ext not in (".jsonl", ".txt"):
        raise ModelError(f"[validate] {path}: expected .npz (graph feeds) or .jsonl / .txt "
                         "(LLM texts)")
    try:
        with open(path, encoding="utf-8") as f:
            lines = [(i, ln.rstrip("\n")) for i, ln in enumerate(f, 1) if ln.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise ModelError(f"[validate] {path}: {e}") from None
    texts = [ln if ext == ".txt" else _jsonl_text(ln, f"{path}:{i}") for i, ln in lines]
    if not texts:
        raise ModelError(f"[validate] {path}: no texts")
    return texts


def _jsonl_text(line, where) -> str:
    try:
        v = json.loads(line)
    except json.JSONDecodeError as e:
        raise ModelError(f"[validate] {where}: not JSON: {e}") from None
    v = v.get("text", v.get("prompt")) if isinstance(v, dict) else v
    if not isinstance(v, str) or not v:
        raise ModelError(f"[validate] {where}: expected a string or {{\"text\": string}}")
    return v


def _check_feeds(data, where) -> int:
    """Rows in the data; ModelError unless every array has the same axis-0 length >= 1."""
    sizes = {k: v.shape[0] if v.ndim else 0 for k, v in data.items()}
    if not set(data) - {LABELS} or not all(sizes.values()):
        got = ", ".join(f"{k}{list(v.shape)}" for k, v in data.items()) or "none"
        raise ModelError(f"[validate] {where}: needs input arrays, each with a batch axis 0 of "
                         f"at least 1 row; got {got}")
    if len(set(sizes.values())) > 1:
        raise ModelError(f"[validate] {where}: arrays disagree on the batch size (axis 0): "
                         + ", ".join(f"{k}={n}" for k, n in sizes.items()))
    if LABELS in data and (data[LABELS].ndim != 1 or data[LABELS].dtype.kind not in "iu"):
        raise ModelError(f"[validate] {where}: {LABELS} must be a 1-D integer array of classes")
    return next(iter(sizes.values()))


# ---- comparison -----------------------------------------------------------------------------

def compare_models(candidate, baseline, data, limits: ValidationLimits | None = None,
                   labels=None, runs: int = 5) -> ValidationReport:
    """Measures candidate (and baseline, if any) on data; see the module docstring."""
    limits = limits or ValidationLimits()
    is_llm = getattr(candidate, "_llm", None) is not None
    if baseline is not None and (getattr(baseline, "_llm", None) is not None) != is_llm:
        raise ModelError("[validate] candidate and baseline must both be LLMs or both graphs")
    if not isinstance(runs, int) or runs < 0:
        raise ModelError(f"[validate] runs must be an integer >= 0, not {runs!r}")
    name = lambda e: None if e is None else str(getattr(e, "_source", None) or "<in memory>")  # noqa: E731
    if is_llm:
        if isinstance(data, str) or not isinstance(data, (list, tuple)) or not data \
                or not all(isinstance(t, str) and t for t in data):
            raise ModelError("[validate] an LLM is validated on a non-empty list of texts")
        report = ValidationReport("llm", name(candidate), name(baseline), len(data), limits)
        _compare_llms(report, candidate, baseline, list(data), runs)
        return report
    if not isinstance(data, dict):
        raise ModelError("[validate] a graph model is validated on a dict of input arrays")
    data = {k: np.asarray(v) for k, v in data.items()}
    if labels is not None:
        data[LABELS] = np.asarray(labels)
    n = _check_feeds(data, "data")
    labels = data.pop(LABELS, None)
    report = ValidationReport("graph", name(candidate), name(baseline), n, limits)
    _compare_graphs(report, candidate, baseline, data, labels, runs)
    return report


def _run_all(report, engines, fn):
    """fn(engine) for each engine; a candidate that raises fails the report (None back), a
    baseline that raises is an error: the reference itself cannot run the data."""
    results = []
    for role, eng in zip(("candidate", "baseline"), engines):
        try:
            results.append(fn(eng))
        except EmberError as e:
            if role == "baseline":
                raise ModelError(f"[validate] the baseline cannot run the data: "
                                 f"{type(e).__name__}: {e}") from None
            report.fail("runs", f"the candidate cannot run the data: {type(e).__name__}: {e}")
            return None
    return results


def _latency_memory(report, engines, run_once, mem, runs, what):
    """Latency: median of `runs` timed passes, the engines interleaved and who goes first
    alternating (the measured pass was the warm-up); mem: bytes per engine. Rows with ratios."""
    times = [[] for _ in engines]
    for r in range(runs):
        for i in (range(len(engines)) if r % 2 == 0 else reversed(range(len(engines)))):
            t0 = time.perf_counter()
            run_once(engines[i])
            times[i].append(1e3 * (time.perf_counter() - t0))
    for metric, vals, limit in ((f"latency ms ({what})", [np.median(t) for t in times if t],
                                 "max_latency_ratio"), ("memory MiB", mem, "max_memory_ratio")):
        if vals and all(v is not None for v in vals):
            vals = [float(v) / (2**20 if limit == "max_memory_ratio" else 1) for v in vals]
            two = len(vals) == 2
            report.add(metric, vals[0] / vals[1] if two and vals[1] else None,
                       limit if two else None, vals[0], vals[1] if two else None)


# ---- graph models ---------------------------------------------------------------------------

def _compare_graphs(report, cand, base, data, labels, runs):
    n, bs = report.samples, report.limits.batch_size
    batches = [{k: v[i:i + bs] for k, v in data.items()} for i in range(0, n, bs)]
    sizes = [len(next(iter(b.values()))) for b in batches]
    engines = [cand] + ([base] if base is not None else [])
    outs = _run_all(report, engines, lambda e: [e.run(b) for b in batches])
    if outs is None:
        return
    scored = False
    for name in outs[0][0]:
        c = [o[name] for o in outs[0]]
        bad = sum(int((~np.isfinite(a)).sum()) for a in c if a.dtype.kind in "fV")
        if bad:
            report.fail("finite", f"candidate output '{name}' has {bad} non-finite values "
                        f"(of {sum(a.size for a in c)})")
        b = [o.get(name) for o in outs[1]] if base is not None else None
        if b is not None and b[0] is None:
            report.notes.append(f"output '{name}' is new in the candidate: not compared")
            b = None
        elif b is not None and any(x.shape != y.shape for x, y in zip(c, b)):
            report.fail("outputs", f"output '{name}': the candidate's shape {list(c[0].shape)} "
                        f"vs the baseline's {list(b[0].shape)}")
            continue
        if b is not None:
            _compare_output(report, name, c, b, sizes)
        pred = _predictions(c, sizes)
        if labels is not None and pred is not None:
            scored = True
            acc = float(np.mean(pred == labels))
            acc_b = float(np.mean(_predictions(b, sizes) == labels)) if b is not None else None
            report.add(f"{name} accuracy", acc, "min_accuracy", acc, acc_b)
            if b is not None:
                report.add(f"{name} accuracy drop", acc_b - acc, "max_accuracy_drop", acc, acc_b)
    if base is not None:
        for name in set(outs[1][0]) - set(outs[0][0]):
            report.fail("outputs", f"baseline output '{name}' is missing from the candidate")
    if labels is not None and not scored:
        raise ModelError("[validate] labels given, but no output is [N, C] float scores or "
                         "[N] integer classes to score them against")
    report.notes.append(f"memory: weights and constants after the graph passes + the plan of "
                        f"one batch of {sizes[0]} rows (arena, outputs, plan-time folds), as the "
                        "session reports them; not RSS, which both models share")
    _latency_memory(report, engines, lambda e: [e.run(b) for b in batches],
                    [_graph_memory(report, e, batches[0]) for e in engines], runs, f"{n} rows")


def _f64(a):
    return np.asarray(a).astype(np.float64)


def _compare_output(report, name, c, b, sizes):
    """Diffs and per-row cosine; non-finite elements (either side) are zeroed on both sides."""
    mx, total, count, cos = 0.0, 0.0, 0, []
    for x, y, rows in zip(c, b, sizes):
        x, y = _f64(x), _f64(y)
        keep = np.isfinite(x) & np.isfinite(y)
        x, y = np.where(keep, x, 0.0), np.where(keep, y, 0.0)
        d = np.abs(x - y)
        mx, total, count = max(mx, float(d.max(initial=0.0))), total + float(d.sum()), count + d.size
        if c[0].dtype.kind in "fV":
            r = rows if x.ndim and x.shape[0] == rows else 1   # batch-major, else one row a batch
            x, y = x.reshape(r, -1), y.reshape(r, -1)
            nx, ny = np.linalg.norm(x, axis=1), np.linalg.norm(y, axis=1)
            both = (nx > 0) & (ny > 0)
            cos.append(np.where(both, (x * y).sum(1) / np.where(both, nx * ny, 1.0),
                                np.where((nx == 0) & (ny == 0), 1.0, 0.0)))
    report.add(f"{name} max abs diff", mx, "max_abs_diff")
    report.add(f"{name} mean abs diff", total / max(count, 1))
    if cos:
        cos = np.concatenate(cos)
        report.add(f"{name} cosine (mean)", float(cos.mean()))
        report.add(f"{name} cosine (min)", float(cos.min()), "min_cosine")
    pc, pb = _predictions(c, sizes), _predictions(b, sizes)
    if pc is not None:
        report.add(f"{name} top-1 agreement", float(np.mean(pc == pb)), "min_top1_agreement")


def _predictions(chunks, sizes):
    """Class per row of a classifier-like output ([N, C] float: argmax; [N] or [N, 1] integers:
    the ids), else None."""
    a = chunks[0]
    if a.ndim == 2 and a.shape[1] >= 2 and a.dtype.kind in "fV":
        pick = lambda x: _f64(x).argmax(1)                       # noqa: E731
    elif a.dtype.kind in "iu" and (a.ndim == 1 or a.ndim == 2 and a.shape[1] == 1):
        pick = lambda x: x.reshape(-1)                           # noqa: E731
    else:
        return None
    if any(x.shape[0] != rows for x, rows in zip(chunks, sizes)):
        return None
    return np.concatenate([pick(x) for x in chunks])


def _graph_memory(report, eng, feeds):
    try:
        plan = eng.plan_info(feeds)
        return (eng._live_session().constant_bytes + plan["arena_bytes"] + plan["output_bytes"]
                + plan["folded_bytes"])
    except (AttributeError, KeyError, EmberError) as e:
        report.notes.append(f"memory: not reported ({type(e).__name__}: {e})")
        return None


# ---- LLMs -----------------------------------------------------------------------------------

def _compare_llms(report, cand, base, texts, runs):
    prompts = texts[:report.limits.batch_size]

    def gen(e):
        return e.generate(prompts, max_tokens=GEN_TOKENS, temperature=0.0, ignore_eos=True)

    engines = [cand] + ([base] if base is not None else [])
    res = _run_all(report, engines, lambda e: (e.score(texts), [c.token_ids for c in gen(e)]))
    if res is None:
        return
    ppl = []
    for scores, _ in res:
        lps = [lp for s in scores for lp in s["logprobs"][1:]]
        ppl.append(float(np.exp(-np.mean(lps))) if lps else float("nan"))
    if not np.isfinite(ppl[0]):
        report.fail("finite", f"the candidate's perplexity is {ppl[0]} on {len(texts)} texts")
    has_base = base is not None
    report.add("perplexity", ppl[0] / ppl[1] if has_base else None,
               "max_perplexity_ratio" if has_base else None, ppl[0], ppl[1] if has_base else None)
    if has_base:
        agree = [_prefix(a, b) / max(len(a), len(b), 1) for a, b in zip(res[0][1], res[1][1])]
        report.add(f"greedy token agreement ({GEN_TOKENS} tokens)", float(np.mean(agree)),
                   "min_token_agreement")
    _latency_memory(report, engines, gen, [_llm_memory(report, e) for e in engines], runs,
                    f"{len(prompts)} prompts x {GEN_TOKENS} tokens")
    report.notes += ["perplexity: exp of the mean token NLL over all texts (per each model's "
                     "tokenizer); agreement: share of greedy tokens before the first divergence",
                     "memory: weights + KV cache as each engine's memory_plan reports them"]


def _prefix(a, b) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def _llm_memory(report, eng):
    try:
        return eng.memory_plan["weight_bytes"] + eng.memory_plan["kv_cache_bytes"]
    except (AttributeError, KeyError, EmberError) as e:
        report.notes.append(f"memory: not reported ({type(e).__name__}: {e})")
        return None
