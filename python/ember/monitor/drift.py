"""The drift verdict of one check: every feature's tests, one multiple-testing correction over
all their p-values, then the rule and the ranking.

Drift rule: a feature is drifted when
  (a) any of its corrected p-values (KS, chi2; corrected together across all features of the
      check, BH or Holm) is below alpha, OR
  (b) any of its distances (PSI, JS, KL), less its noise floor, exceeds its threshold.
(a) is the statistical evidence and what bounds the false-alarm rate; (b) flags a change large
enough to matter even where many features make the correction strict. The noise floor is the
distance's expected value when nothing drifted, (bins-1)(1/n_ref + 1/n_cur) for PSI (PSI times
n_ref*n_cur/(n_ref+n_cur) is about chi-square with bins-1 degrees of freedom), half that for KL
and an eighth for JS (their second-order expansions); without it a window of 200 rows crosses
PSI 0.25 by noise on about 1 feature in 400.

Score (the ranking): the largest of (distance - floor) / threshold and log(p_adj) / log(alpha),
so a feature is drifted exactly when its score exceeds 1, and scores of different tests compare.
"""
from __future__ import annotations

import math

import numpy as np

from ember.monitor import stats
from ember.monitor.config import DISTANCES, P_TESTS, MonitorConfig

P_FLOOR = 1e-300    # log of a p-value of 0 (KS on disjoint samples) would be inf
FLOOR_SHARE = {"psi": 1.0, "kl": 0.5, "js": 0.125}   # of (bins-1)(1/n_ref + 1/n_cur)


def numeric_values(values) -> tuple[np.ndarray, int]:
    """The finite values as float64 and the count of the others (NaN, inf) left out."""
    x = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(x)
    return x[ok], int(len(x) - ok.sum())


def compare(name: str, ftype: str, ref: list, cur: list, cfg: MonitorConfig) -> dict:
    """One feature's entry of the report, before correction: tests with raw p-values, or
    "skipped" with the reason."""
    entry = {"name": name, "type": ftype, "tests": {}, "drifted": False, "score": 0.0}
    if ftype == "numeric":
        r, r_bad = numeric_values(ref)
        c, c_bad = numeric_values(cur)
        entry["ref_summary"] = stats.numeric_summary(r, r_bad)
        entry["cur_summary"] = stats.numeric_summary(c, c_bad)
    else:
        r, c = list(ref), list(cur)
        entry["ref_summary"] = stats.categorical_summary(r)
        entry["cur_summary"] = stats.categorical_summary(c)
    if min(len(r), len(c)) < cfg.min_window:
        entry["skipped"] = (f"insufficient data: {len(r)} baseline and {len(c)} current values "
                            f"(min_window {cfg.min_window})")
        return entry
    if ftype == "numeric":
        if r.min() == r.max() == c.min() == c.max():
            entry["skipped"] = "constant: one value in the baseline and the window"
            return entry
        edges = stats.quantile_edges(r, cfg.bins)
        rc, cc = stats.bin_counts(r, edges), stats.bin_counts(c, edges)
        if "ks" in cfg.tests:
            d, p = stats.ks(r, c)
            entry["tests"]["ks"] = {"statistic": d, "p": p}
    else:
        cats = stats.categories(r)
        rc, cc = stats.category_counts(r, cats), stats.category_counts(c, cats)
        if np.count_nonzero(rc + cc) < 2:
            entry["skipped"] = "constant: one category in the baseline and the window"
            return entry
    # Categorical features always get chi2: it is their only p-value (KS needs an order).
    if "chi2" in cfg.tests or (ftype == "categorical" and "ks" in cfg.tests):
        x2, p = stats.chi2(rc, cc)
        entry["tests"]["chi2"] = {"statistic": x2, "p": p, "bins": int(len(rc))}
    noise = (np.count_nonzero(rc + cc) - 1) * (1 / len(r) + 1 / len(c))
    for d in DISTANCES:
        if d in cfg.tests:
            entry["tests"][d] = getattr(stats, d)(rc, cc)
            entry.setdefault("floor", {})[d] = FLOOR_SHARE[d] * noise
    return entry


def evaluate(entries: list[dict], cfg: MonitorConfig) -> list[dict]:
    """Corrects all p-values together, applies the rule, scores and ranks (in place; returned)."""
    slots = [(e, t) for e in entries for t in P_TESTS if t in e["tests"]]
    adjusted = stats.correct([e["tests"][t]["p"] for e, t in slots], cfg.correction)
    for (e, t), pa in zip(slots, adjusted):
        e["tests"][t]["p_adj"] = float(pa)
    log_alpha = math.log(cfg.alpha)
    for e in entries:
        if "skipped" in e:
            continue
        scores = [math.log(max(e["tests"][t]["p_adj"], P_FLOOR)) / log_alpha
                  for t in P_TESTS if t in e["tests"]]
        scores += [(e["tests"][d] - e["floor"][d]) / cfg.threshold(d)
                   for d in DISTANCES if d in e["tests"]]
        e["score"] = float(max(scores, default=0.0))
        # p_adj < alpha  <=>  log(p_adj)/log(alpha) > 1: the rule and the score agree.
        e["drifted"] = e["score"] > 1.0
    entries.sort(key=lambda e: ("skipped" in e, -e["score"], e["name"]))
    return entries
