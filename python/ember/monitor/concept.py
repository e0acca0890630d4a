"""Concept drift: does the model still predict the outcomes it is told about later?

A prediction is kept (bounded LRU, max_pending) under its request id; feedback(id, outcome)
pairs it with the truth. Pairs for requests observed while the automatic baseline was being
collected form the reference (with an explicit baseline, the first baseline_requests pairs, or
min_window when that is 0); later ones a rolling window of `window` pairs. Modes, from the
prediction:
  class index (int)                     -> accuracy (prediction == outcome)
  probability in [0, 1], outcome 0/1    -> accuracy at 0.5, Brier score, ECE over 10 equal bins
  any other number (regression)         -> mean absolute error
Verdict (needs min_window pairs on both sides; one test, at alpha, outside the feature family):
accuracy by a one-sided two-proportion z-test for a drop; regression by a one-sided Welch t-test
for a larger absolute error.
"""
from __future__ import annotations

import math
from collections import OrderedDict, deque

import numpy as np
from scipy import stats

from ember.errors import InputError

ECE_BINS = 10


def mode_of(prediction) -> str:
    if isinstance(prediction, (bool, np.bool_)):
        return "class"
    if isinstance(prediction, (int, np.integer)):
        return "class"
    return "probability" if 0.0 <= float(prediction) <= 1.0 else "regression"


def ece(prob: np.ndarray, y: np.ndarray) -> float:
    """Expected calibration error: sum over 10 equal-width bins of |mean p - mean y| * share."""
    idx = np.minimum((prob * ECE_BINS).astype(int), ECE_BINS - 1)
    total = 0.0
    for b in range(ECE_BINS):
        sel = idx == b
        if sel.any():
            total += sel.mean() * abs(prob[sel].mean() - y[sel].mean())
    return float(total)


def metrics(pairs: list, mode: str) -> dict:
    """Metrics of (prediction, outcome) pairs of one mode."""
    out = {"n": len(pairs)}
    if not pairs:
        return out
    pred = np.array([p for p, _ in pairs], dtype=np.float64)
    y = np.array([o for _, o in pairs], dtype=np.float64)
    if mode == "class":
        out["accuracy"] = float(np.mean(pred == y))
    elif mode == "probability":
        out["accuracy"] = float(np.mean((pred >= 0.5) == (y >= 0.5)))
        out["brier"] = float(np.mean((pred - y) ** 2))
        out["ece"] = ece(pred, y)
    else:
        out["mae"] = float(np.mean(np.abs(pred - y)))
    return out


def accuracy_drop(ref: dict, cur: dict) -> dict:
    """One-sided two-proportion z-test that the current accuracy is lower."""
    n1, n2 = ref["n"], cur["n"]
    k1, k2 = ref["accuracy"] * n1, cur["accuracy"] * n2
    pooled = (k1 + k2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return {"z": 0.0, "p": 1.0}
    z = (ref["accuracy"] - cur["accuracy"]) / se
    return {"z": float(z), "p": float(stats.norm.sf(z))}


class Concept:
    """Pending predictions and the feedback pairs; not thread-safe (Monitor holds the lock)."""

    def __init__(self, window: int, max_pending: int, n_ref: int, min_pairs: int):
        self.pending: OrderedDict = OrderedDict()   # request id -> (prediction, in baseline)
        self.max_pending, self.n_ref, self.min_pairs = max_pending, n_ref, min_pairs
        self.ref: list = []
        self.cur: deque = deque(maxlen=window)
        self.mode: str | None = None

    def predicted(self, request_id: str, prediction, in_baseline: bool | None):
        """in_baseline: True/False during/after an automatic baseline; None with an explicit one."""
        if self.max_pending == 0:
            return
        if isinstance(prediction, (list, tuple, np.ndarray)):   # class scores -> class index
            prediction = int(np.argmax(prediction))
        if not isinstance(prediction, (int, float, np.integer, np.floating)):
            return      # nothing to compare an outcome with
        self.pending[request_id] = (prediction, in_baseline)
        self.pending.move_to_end(request_id)
        while len(self.pending) > self.max_pending:
            self.pending.popitem(last=False)

    def feedback(self, request_id: str, outcome: float) -> bool:
        if isinstance(outcome, (bool, np.bool_)):
            outcome = int(outcome)
        number = isinstance(outcome, (int, float, np.integer, np.floating))
        if not number or not math.isfinite(outcome):
            raise InputError(f"[monitor] feedback outcome must be a finite number, not {outcome!r}")
        item = self.pending.pop(request_id, None)
        if item is None:
            return False
        prediction, in_baseline = item
        mode = mode_of(prediction)
        if self.mode is None:
            self.mode = mode
        elif mode != self.mode and {mode, self.mode} != {"class", "probability"}:
            return True     # a stray prediction of another kind: counted as answered, not used
        if self.mode == "probability" and mode == "class":
            prediction = float(prediction)
        pair = (float(prediction), float(outcome))
        to_ref = in_baseline if in_baseline is not None else len(self.ref) < self.n_ref
        (self.ref.append if to_ref else self.cur.append)(pair)
        return True

    def report(self, alpha: float) -> dict | None:
        if self.mode is None:
            return None
        ref, cur = metrics(self.ref, self.mode), metrics(list(self.cur), self.mode)
        out = {"mode": self.mode, "reference": ref, "current": cur, "drifted": False,
               "pending": len(self.pending)}
        if min(ref["n"], cur["n"]) < self.min_pairs:
            out["skipped"] = (f"insufficient data: {ref['n']} reference and {cur['n']} current "
                              f"outcomes (min_window {self.min_pairs})")
            return out
        if "accuracy" in ref:
            test = accuracy_drop(ref, cur)
            out["tests"] = {"accuracy_drop": test}
        else:
            e1 = np.abs(np.diff(np.array(self.ref), axis=1)).ravel()
            e2 = np.abs(np.diff(np.array(list(self.cur)), axis=1)).ravel()
            res = stats.ttest_ind(e2, e1, equal_var=False, alternative="greater")
            test = {"t": float(res.statistic), "p": float(res.pvalue)}
            out["tests"] = {"error_increase": test}
        out["drifted"] = bool(test["p"] < alpha)
        return out
