"""Two-sample drift statistics on one feature, and the multiple-testing corrections.

Binning rule (numeric features): `bins` quantile bins of the baseline — interior edges at the
baseline's k/bins quantiles (k = 1..bins-1; numpy's inverted_cdf, so each edge is a baseline
value), deduplicated (ties merge bins), outermost edges
-inf/+inf; a value equal to an edge falls in the bin above it. Categorical features: one bin per
baseline category seen at least MIN_CATEGORY_COUNT times (at most MAX_CATEGORIES, the most
frequent), plus a catch-all bin for every other value, so an unseen category lands somewhere.
Proportions add 0.5 to every bin count (Jeffreys-style) before normalising, so no bin is empty:
    PSI = sum (c - r) ln(c / r)      KL = KL(cur || ref) = sum c ln(c / r)
    JS  = (KL(c || m) + KL(r || m)) / 2,  m = (c + r) / 2, natural log (JS <= ln 2)
p-values: KS = scipy.stats.ks_2samp; chi2 = Pearson's chi-square test of homogeneity of the
2 x bins table of raw counts (scipy.stats.chi2_contingency, no Yates correction).
"""
from __future__ import annotations

import numpy as np
from scipy import stats

MIN_CATEGORY_COUNT = 5      # rarer baseline categories join the catch-all (chi2 needs counts)
MAX_CATEGORIES = 50         # high-cardinality features keep their most frequent categories
OTHER = "(other)"           # the catch-all bin's name


def quantile_edges(ref: np.ndarray, bins: int) -> np.ndarray:
    """Interior edges of the quantile bins of `ref` (ascending, unique); the outer edges are
    -inf/+inf implicitly, so len(edges) + 1 bins."""
    # inverted_cdf: edges are baseline values, so discrete features get no in-between edges
    qs = np.quantile(np.asarray(ref, dtype=np.float64), np.arange(1, bins) / bins,
                     method="inverted_cdf")
    return np.unique(qs)


def bin_counts(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts of x in (-inf, e0), [e0, e1), ..., [e_last, inf)."""
    idx = np.searchsorted(edges, np.asarray(x, dtype=np.float64), side="right")
    return np.bincount(idx, minlength=len(edges) + 1)


def categories(ref: list) -> list:
    """The named categorical bins of a baseline (most frequent first); OTHER takes the rest."""
    vals, counts = np.unique(np.asarray(ref, dtype=object).astype(str), return_counts=True)
    order = np.lexsort((vals, -counts))     # by count descending, then name for stability
    keep = [str(vals[i]) for i in order if counts[i] >= MIN_CATEGORY_COUNT]
    return [c for c in keep[:MAX_CATEGORIES] if c != OTHER]


def category_counts(x: list, cats: list) -> np.ndarray:
    """Counts of x over cats + [OTHER]."""
    index = {c: i for i, c in enumerate(cats)}
    counts = np.zeros(len(cats) + 1, dtype=np.int64)
    for v in x:
        counts[index.get(str(v), len(cats))] += 1
    return counts


def smoothed(counts: np.ndarray) -> np.ndarray:
    """Proportions after adding 0.5 to every count."""
    c = np.asarray(counts, dtype=np.float64) + 0.5
    return c / c.sum()


def psi(ref_counts, cur_counts) -> float:
    r, c = smoothed(ref_counts), smoothed(cur_counts)
    return float(np.sum((c - r) * np.log(c / r)))


def kl(ref_counts, cur_counts) -> float:
    """KL(cur || ref): the information lost describing the current data with the baseline."""
    r, c = smoothed(ref_counts), smoothed(cur_counts)
    return float(np.sum(c * np.log(c / r)))


def js(ref_counts, cur_counts) -> float:
    r, c = smoothed(ref_counts), smoothed(cur_counts)
    m = (r + c) / 2
    return float(0.5 * np.sum(c * np.log(c / m)) + 0.5 * np.sum(r * np.log(r / m)))


def ks(ref: np.ndarray, cur: np.ndarray) -> tuple[float, float]:
    """(statistic, p) of the two-sample Kolmogorov-Smirnov test."""
    res = stats.ks_2samp(ref, cur)
    return float(res.statistic), float(res.pvalue)


def chi2(ref_counts, cur_counts) -> tuple[float, float]:
    """(statistic, p) of the chi-square test that both count vectors share one distribution.

    A two-sample test, not goodness of fit against the baseline's proportions: the baseline is a
    sample too, and treating it as exact would double the null variance for equal sizes.
    """
    table = np.array([ref_counts, cur_counts], dtype=np.float64)
    table = table[:, table.sum(axis=0) > 0]    # a bin empty on both sides carries no evidence
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 0.0, 1.0
    res = stats.chi2_contingency(table, correction=False)
    return float(res.statistic), float(res.pvalue)


def correct(p: list[float], method: str) -> np.ndarray:
    """Adjusted p-values of one family: "bh" (Benjamini-Hochberg, controls the false discovery
    rate) or "holm" (Holm-Bonferroni, controls the family-wise error rate)."""
    p = np.asarray(p, dtype=np.float64)
    m = len(p)
    if m == 0:
        return p
    order = np.argsort(p)
    ranked = p[order]
    if method == "bh":
        adj = ranked * m / np.arange(1, m + 1)
        adj = np.minimum.accumulate(adj[::-1])[::-1]      # monotone from the largest down
    elif method == "holm":
        adj = ranked * (m - np.arange(m))
        adj = np.maximum.accumulate(adj)                  # monotone from the smallest up
    else:
        raise ValueError(f"[monitor] unknown correction {method!r} (bh, holm)")
    out = np.empty(m)
    out[order] = np.minimum(adj, 1.0)
    return out


def numeric_summary(x: np.ndarray, nonfinite: int) -> dict:
    if len(x) == 0:
        return {"n": 0, "nonfinite": nonfinite}
    q = np.quantile(x, [0.05, 0.5, 0.95])
    return {"n": int(len(x)), "mean": float(x.mean()), "std": float(x.std()),
            "min": float(x.min()), "p05": float(q[0]), "p50": float(q[1]), "p95": float(q[2]),
            "max": float(x.max()), "nonfinite": nonfinite}


def categorical_summary(x: list, top: int = 5) -> dict:
    vals, counts = np.unique(np.asarray(x, dtype=object).astype(str), return_counts=True)
    order = np.lexsort((vals, -counts))[:top]
    n = max(len(x), 1)
    return {"n": len(x), "categories": int(len(vals)),
            "top": {str(vals[i]): float(counts[i] / n) for i in order}}
