"""Monitor: the feature streams of one served model version, the baseline they are compared
with, and the report / check / gauges the server exposes.

Every feature keeps its own values: a baseline (set_baseline rows, or else the feature's first
baseline_requests values) and a rolling window of its newest `window` values after the baseline
(disjoint from it: the two-sample tests assume independent samples). A row's features may come
in separate calls (observe, then observe_latency). All methods are thread-safe; report() works
on a snapshot taken under the lock and is cached until the next observation or feedback.
"""
from __future__ import annotations

import copy
import math
import threading
import time
from collections import deque

import numpy as np

from ember.errors import ModelError
from ember.monitor import drift, features, stats
from ember.monitor.concept import Concept
from ember.monitor.config import MonitorConfig

MAX_FEATURES = 1000     # a client inventing keys must not grow the monitor without bound
HISTOGRAM_TOP = 12      # features with histograms in report(histograms=True)
BINNING = ("numeric: `bins` quantile bins of the baseline (interior edges at its k/bins "
           "quantiles, inverted_cdf, deduplicated; outermost edges -inf/+inf; a value on an edge "
           "goes to the bin above); categorical: baseline categories seen >= 5 times (top 50) "
           "plus a catch-all for the rest and unseen ones; proportions add 0.5 to every bin count "
           "before normalising. PSI = sum (c-r) ln(c/r); KL = KL(cur||ref); JS in nats.")
RULE = ("drifted: a corrected p-value (KS, chi2) < alpha, or a distance (PSI, JS, KL) less its "
        "noise floor (its expected value without drift, in 'floor') above its threshold; "
        "score = max((distance - floor) / threshold, log(p_adj) / log(alpha)), drifted iff > 1")


def _typed(v):
    """(type, value) of one feature value, or None for what the monitor cannot use."""
    tp = type(v)
    if tp is float or tp is int:    # the common case first: this runs per value per request
        return "numeric", float(v)
    if tp is str:
        return "categorical", v
    if isinstance(v, (str, bool, np.str_, np.bool_)):
        return "categorical", str(v)
    if isinstance(v, (int, float, np.integer, np.floating)):
        return "numeric", float(v)
    return None


def _clean(x):
    """JSON-safe copy: NaN/inf -> None, numpy scalars -> Python."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


class Monitor:
    def __init__(self, cfg: MonitorConfig, kind: str, inputs: list, outputs: list):
        if kind not in ("graph", "llm"):
            raise ModelError(f"[monitor] kind must be graph or llm, not {kind!r}")
        self.cfg, self.kind = cfg, kind
        self.inputs, self.outputs = list(inputs or []), list(outputs or [])
        self._proj = features.Projector(cfg.projections)
        self._lock = threading.Lock()
        self._check_lock = threading.Lock()
        self._types: dict[str, str] = {}
        self._base: dict[str, list] = {}
        self._cur: dict[str, deque] = {}
        self._fixed: set = set()            # features whose baseline set_baseline gave
        self._explicit_rows: int | None = None
        self._base_rows = self._cur_rows = self._since_check = self._version = 0
        self._cache: tuple | None = None    # (version, report)
        self._alerted: set = set()
        self._streak: dict = {}             # feature -> consecutive checks it was drifted
        n_ref = cfg.baseline_requests or cfg.min_window
        self._concept = Concept(cfg.window, cfg.max_pending, n_ref, cfg.min_window)

    # -- features --------------------------------------------------------------------------

    def features_graph(self, feeds: dict, outputs: dict) -> list[dict]:
        """One feature row per batch row of a graph model's run."""
        tensors = []
        for infos, arrays, fn in ((self.inputs, feeds, features.input_features),
                                  (self.outputs, outputs, features.output_features)):
            declared = {t.name: t.shape for t in infos}
            names = [t.name for t in infos] if infos else list(arrays)
            tensors += [(n, np.asarray(arrays[n]), declared.get(n), fn)
                        for n in names if n in arrays]
        batched = [t for t in tensors if t[1].ndim >= 1]
        if not batched:
            return []
        batch = batched[0][1].shape[0]
        cols = {}
        for name, a, declared, fn in batched:
            if a.shape[0] == batch and batch > 0:   # a tensor without the batch axis says nothing
                cols.update(fn(name, a, declared, self._proj))
        return features.rows_from_columns(cols, batch)

    @staticmethod
    def features_llm(prompt_tokens: int, completion_tokens: int,
                     mean_logprob: float | None) -> dict:
        row = {"prompt_tokens": int(prompt_tokens), "completion_tokens": int(completion_tokens)}
        if mean_logprob is not None:
            row["mean_logprob"] = float(mean_logprob)
        return row

    # -- observations ----------------------------------------------------------------------

    def _add(self, name: str, value):
        """Routes one value to the feature's baseline or window (lock held)."""
        tv = _typed(value)
        if tv is None:
            return
        t = self._types.get(name)
        if t is None:
            if len(self._types) >= MAX_FEATURES:
                return
            t = self._types[name] = tv[0]
            self._base[name], self._cur[name] = [], deque(maxlen=self.cfg.window)
        v = tv[1]
        if t != tv[0]:      # a feature keeps the type of its first value
            if t == "categorical":
                v = str(value)
            else:
                return
        if name not in self._fixed and len(self._base[name]) < self.cfg.baseline_requests:
            self._base[name].append(v)
        else:
            self._cur[name].append(v)

    def observe(self, features: dict, request_id: str | None = None, prediction=None):
        """One request's feature row; `prediction` is kept for feedback(request_id, ...)."""
        with self._lock:
            auto = self._explicit_rows is None and self.cfg.baseline_requests > 0
            in_baseline = auto and self._base_rows < self.cfg.baseline_requests
            if in_baseline:
                self._base_rows += 1
            else:
                self._cur_rows += 1
            for name, v in features.items():
                self._add(name if type(name) is str else str(name), v)
            if request_id is not None and prediction is not None:
                self._concept.predicted(request_id, prediction, in_baseline if auto else None)
            self._since_check += 1
            self._version += 1

    def observe_latency(self, seconds: float):
        with self._lock:
            self._add("latency_s", float(seconds))
            self._version += 1

    def set_baseline(self, rows: list[dict]):
        """The baseline from reference rows (e.g. reference feeds run through the model)."""
        if not rows:
            raise ModelError("[monitor] set_baseline needs at least one row")
        with self._lock:
            types = dict(self._types)
        base: dict[str, list] = {}      # built outside the lock: serving goes on meanwhile
        for row in rows:
            for name, value in row.items():
                tv = _typed(value)
                if tv is None:
                    continue
                t = types.get(name) or types.setdefault(name, tv[0])
                if t == tv[0]:
                    base.setdefault(name, []).append(tv[1])
                elif t == "categorical":
                    base.setdefault(name, []).append(str(value))
        with self._lock:
            for name, vals in base.items():
                t = self._types.setdefault(name, types[name])
                if t != types[name]:    # observe() typed it meanwhile: its type wins
                    if t != "categorical":
                        continue
                    vals = [str(v) for v in vals]
                self._base[name] = vals
                self._cur.setdefault(name, deque(maxlen=self.cfg.window))
            self._fixed = set(base)
            self._explicit_rows = len(rows)
            self._version += 1

    def feedback(self, request_id: str, outcome: float) -> bool:
        """The true outcome of a request observed with a prediction; False if the id is unknown
        (never observed with one, answered already, or evicted from the max_pending LRU).
        InputError for an outcome that is not a finite number."""
        with self._lock:
            known = self._concept.feedback(request_id, outcome)
            if known:
                self._version += 1
            return known

    # -- verdicts --------------------------------------------------------------------------

    def _snapshot(self):
        with self._lock:
            feats = [(n, self._types[n], list(self._base[n]), list(self._cur[n]))
                     for n in sorted(self._types)]
            concept = self._concept.report(self.cfg.alpha)
            base_n = self._explicit_rows if self._explicit_rows is not None else self._base_rows
            return self._version, feats, concept, base_n, min(self._cur_rows, self.cfg.window)

    def _compute(self) -> dict:
        with self._lock:
            if self._cache is not None and self._cache[0] == self._version:
                return self._cache[1]
        version, feats, concept, base_n, window_n = self._snapshot()
        entries = drift.evaluate([drift.compare(n, t, r, c, self.cfg) for n, t, r, c in feats],
                                 self.cfg)
        alerts = [e["name"] for e in entries if e["drifted"]]
        if concept is not None and concept["drifted"]:
            alerts.append("concept")
        if alerts:
            status = "drift"
        elif all("skipped" in e and e["skipped"].startswith("insufficient") for e in entries):
            status = "insufficient data"
        else:
            status = "ok"
        rep = _clean({"kind": self.kind, "window": window_n, "baseline": base_n,
                      "status": status, "features": entries, "alerts": alerts,
                      "concept": concept, "config": self.cfg.as_dict(), "binning": BINNING,
                      "rule": RULE, "time": time.time()})
        with self._lock:
            self._cache = (version, rep)
        return rep

    def report(self, histograms: bool = False) -> dict:
        """The JSON-serialisable drift report (features ranked by score); with histograms, a
        "histograms" key for the top HISTOGRAM_TOP features (see histograms())."""
        rep = copy.deepcopy(self._compute())
        if histograms:
            names = [e["name"] for e in rep["features"] if "skipped" not in e][:HISTOGRAM_TOP]
            rep["histograms"] = {}
            for n in names:
                edges, rc, cc = self.histograms(n)
                rep["histograms"][n] = _clean({"edges": edges, "ref": rc, "cur": cc})
        return rep

    def histograms(self, name: str) -> tuple[list, list, list]:
        """(edges, ref_counts, cur_counts) of one feature on the rule's bins. Numeric: len(bins)+1
        edges, the outermost at the smallest/largest value seen; categorical: the bin names."""
        with self._lock:
            if name not in self._types:
                raise KeyError(f"[monitor] no feature named {name!r}")
            t, ref, cur = self._types[name], list(self._base[name]), list(self._cur[name])
        if t == "categorical":
            cats = stats.categories(ref)
            return (cats + [stats.OTHER], stats.category_counts(ref, cats).tolist(),
                    stats.category_counts(cur, cats).tolist())
        r, _ = drift.numeric_values(ref)
        c, _ = drift.numeric_values(cur)
        if len(r) == 0:
            return [], [], []
        inner = stats.quantile_edges(r, self.cfg.bins)
        both = np.concatenate([r, c])
        edges = [float(both.min()), *inner.tolist(), float(both.max())]
        return edges, stats.bin_counts(r, inner).tolist(), stats.bin_counts(c, inner).tolist()

    def due(self) -> bool:
        """Whether check() would run a drift check now (check_every observations since the last)."""
        with self._lock:
            return self._since_check >= self.cfg.check_every

    def check(self) -> list[dict]:
        """Every check_every observations: the drift check; returns the events to log or export:
        {"event": "drift"} for features that newly crossed, {"event": "recovered"} for features
        alerted before whose verdict is now no drift. Otherwise []."""
        with self._lock:
            if self._since_check < self.cfg.check_every:
                return []
            self._since_check = 0
        with self._check_lock:
            rep = self._compute()
            entries = {e["name"]: e for e in rep["features"]}
            now = set(rep["alerts"])
            clear = {n for n, e in entries.items() if "skipped" not in e and not e["drifted"]}
            if rep["concept"] is not None and "tests" in rep["concept"] and "concept" not in now:
                clear.add("concept")
            # A feature alerts once it drifted in alert_after consecutive checks: checks repeat
            # every check_every rows, and one noisy window must not page anyone.
            self._streak = {n: self._streak.get(n, 0) + 1 for n in now}
            firing = {n for n, k in self._streak.items() if k >= self.cfg.alert_after}
            events = []
            for name in sorted(firing - self._alerted):
                events.append(self._event("drift", name, entries, rep))
            for name in sorted(self._alerted & clear):
                events.append(self._event("recovered", name, entries, rep))
            self._alerted = (self._alerted - clear) | firing
            return events

    def _event(self, kind: str, name: str, entries: dict, rep: dict) -> dict:
        ev = {"event": kind, "feature": name, "status": rep["status"], "window": rep["window"],
              "baseline": rep["baseline"], "time": rep["time"]}
        if name in entries:
            ev.update(score=entries[name]["score"], tests=entries[name]["tests"])
        elif name == "concept":
            ev["tests"] = rep["concept"].get("tests", {})
        return ev

    def gauges(self) -> dict[str, float]:
        """Per-feature drift score (drifted iff > 1) and drift_alert 0/1, for Prometheus."""
        rep = self._compute()
        g = {e["name"]: float(e["score"]) for e in rep["features"] if "skipped" not in e}
        g["drift_alert"] = 1.0 if rep["status"] == "drift" else 0.0
        return g
