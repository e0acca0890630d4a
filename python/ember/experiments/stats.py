"""Statistics for experiments, usable alone: sample sizes, fixed-horizon tests from sufficient
statistics, the sample-ratio-mismatch check and inverse-propensity (Hajek) estimates.

Differences are always group 2 minus group 1 (treatment minus control). Every result is a
NamedTuple of plain floats (`._asdict()` for JSON); an undefined value (no data) is nan here and
None in Experiment.report(). The references are scipy.stats: tests/unit/test_experiments_stats.py.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy import stats as sps


class ZTest(NamedTuple):
    statistic: float     # pooled z
    p: float             # two-sided
    diff: float          # p2 - p1
    ci: tuple            # Newcombe hybrid score interval (his method 10) for p2 - p1


class TTest(NamedTuple):
    statistic: float     # Welch t
    df: float            # Welch-Satterthwaite
    p: float             # two-sided
    diff: float          # mean2 - mean1
    ci: tuple            # diff +- t_{1-alpha/2, df} * se


class Srm(NamedTuple):
    statistic: float     # chi-square goodness of fit
    p: float
    mismatch: bool       # p < alpha


class Ipw(NamedTuple):
    mean: float          # Hajek: sum(w y) / sum(w), w = 1 / propensity
    se: float            # linearised (sandwich) standard error; nan without the squared sums
    ci: tuple            # normal interval
    n: int               # outcomes behind the estimate
    n_eff: float         # Kish effective sample size (sum w)^2 / sum w^2


def _z(q: float) -> float:
    return float(sps.norm.ppf(q))


def _z_alpha(alpha: float, two_sided: bool) -> float:
    if not 0 < alpha < 1:
        raise ValueError(f"[experiments] alpha must be in (0, 1), got {alpha}")
    return _z(1 - alpha / 2) if two_sided else _z(1 - alpha)


def _z_power(power: float) -> float:
    if not 0 < power < 1:
        raise ValueError(f"[experiments] power must be in (0, 1), got {power}")
    return _z(power)


def sample_size_proportions(p1: float, p2: float, alpha: float = 0.05, power: float = 0.8,
                            two_sided: bool = True) -> int:
    """Per-group n to detect p1 -> p2 with a pooled two-proportion z test (normal approximation,
    Fleiss without continuity correction): 0.10 -> 0.12 at alpha .05, power .8 gives 3841."""
    if not (0 < p1 < 1 and 0 < p2 < 1) or p1 == p2:
        raise ValueError(f"[experiments] need 0 < p1 != p2 < 1, got p1={p1}, p2={p2}")
    za, zb = _z_alpha(alpha, two_sided), _z_power(power)
    pbar = (p1 + p2) / 2
    num = za * math.sqrt(2 * pbar * (1 - pbar)) + zb * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    return math.ceil(num * num / (p1 - p2) ** 2)


def sample_size_means(delta: float, sd: float, alpha: float = 0.05, power: float = 0.8,
                      two_sided: bool = True) -> int:
    """Per-group n to detect a mean difference delta with common sd: 2 (z_a + z_b)^2 sd^2 / delta^2
    (normal approximation; the t test needs a few more for small n)."""
    if delta == 0 or not sd > 0:
        raise ValueError(f"[experiments] need delta != 0 and sd > 0, got delta={delta}, sd={sd}")
    za, zb = _z_alpha(alpha, two_sided), _z_power(power)
    return math.ceil(2 * (za + zb) ** 2 * sd * sd / (delta * delta))


def wilson_interval(x: float, n: float, alpha: float = 0.05) -> tuple:
    """Wilson score interval for a proportion x / n."""
    if n <= 0:
        return (math.nan, math.nan)
    z = _z(1 - alpha / 2)
    p = x / n
    mid = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (mid - half, mid + half)


def two_proportion_ztest(x1: float, n1: float, x2: float, n2: float,
                         alpha: float = 0.05) -> ZTest:
    """Pooled z test of p2 - p1 (its p equals the uncorrected chi-square test of the 2x2 table)
    and Newcombe's hybrid score CI, which keeps its coverage near 0 and 1 where Wald's does not."""
    if n1 <= 0 or n2 <= 0:
        return ZTest(math.nan, math.nan, math.nan, (math.nan, math.nan))
    p1, p2 = x1 / n1, x2 / n2
    diff = p2 - p1
    pool = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pool * (1 - pool) * (1 / n1 + 1 / n2))
    if se == 0:  # all 0 or all 1: identical groups
        z, p = 0.0, 1.0
    else:
        z = diff / se
        p = float(2 * sps.norm.sf(abs(z)))
    l1, u1 = wilson_interval(x1, n1, alpha)
    l2, u2 = wilson_interval(x2, n2, alpha)
    lo = diff - math.sqrt((p2 - l2) ** 2 + (u1 - p1) ** 2)
    hi = diff + math.sqrt((u2 - p2) ** 2 + (p1 - l1) ** 2)
    return ZTest(z, p, diff, (lo, hi))


def welch_ttest(mean1: float, var1: float, n1: float, mean2: float, var2: float, n2: float,
                alpha: float = 0.05) -> TTest:
    """Welch's t test of mean2 - mean1 from sufficient statistics (var = sample variance, ddof 1);
    matches scipy.stats.ttest_ind(b, a, equal_var=False) on the raw data."""
    if n1 < 2 or n2 < 2:
        return TTest(math.nan, math.nan, math.nan, mean2 - mean1 if n1 and n2 else math.nan,
                     (math.nan, math.nan))
    a, b = var1 / n1, var2 / n2
    diff = mean2 - mean1
    se = math.sqrt(a + b)
    if se == 0:
        return TTest(0.0 if diff == 0 else math.copysign(math.inf, diff), math.nan,
                     1.0 if diff == 0 else 0.0, diff, (diff, diff))
    df = (a + b) ** 2 / (a * a / (n1 - 1) + b * b / (n2 - 1))
    t = diff / se
    p = float(2 * sps.t.sf(abs(t), df))
    half = float(sps.t.ppf(1 - alpha / 2, df)) * se
    return TTest(t, df, p, diff, (diff - half, diff + half))


def srm_check(observed_counts, expected_weights, alpha: float = 0.001) -> Srm:
    """Sample ratio mismatch: chi-square goodness of fit of the counts to the weights. A small
    alpha because it runs continuously; a mismatch means the assignment or logging is broken,
    and no effect estimate from that traffic can be trusted."""
    obs = np.asarray(observed_counts, dtype=float)
    w = np.asarray(expected_weights, dtype=float)
    if obs.shape != w.shape or obs.ndim != 1:
        raise ValueError(f"[experiments] srm_check: {obs.size} counts for {w.size} weights")
    if np.any(w < 0) or w.sum() <= 0:
        raise ValueError("[experiments] srm_check: weights must be >= 0 with a positive sum")
    total = obs.sum()
    if total <= 0:
        return Srm(math.nan, math.nan, False)
    live = w > 0
    if np.any(obs[~live] > 0):  # traffic where none is expected: a mismatch whatever the rest
        return Srm(math.inf, 0.0, True)
    if live.sum() < 2:
        return Srm(0.0, 1.0, False)
    exp = total * w[live] / w[live].sum()
    res = sps.chisquare(obs[live], exp)
    p = float(res.pvalue)
    return Srm(float(res.statistic), p, bool(p < alpha))


def ipw_estimate(sum_w_y: float, sum_w: float, n: int, sum_w2: float | None = None,
                 sum_w2_y: float | None = None, sum_w2_y2: float | None = None,
                 alpha: float = 0.05) -> Ipw:
    """Self-normalised (Hajek) inverse-propensity estimate of one arm's mean over the whole
    population, from the sums over that arm's outcomes of w = 1/propensity: sum w y, sum w, and
    for the standard error sum w^2, sum w^2 y, sum w^2 y^2. The SE linearises the ratio:
    var = sum w^2 (y - mean)^2 / (sum w)^2. With adaptive allocation this is an approximation
    that holds while propensities stay away from 0 (the bandit's min_share floor bounds w)."""
    if n <= 0 or sum_w <= 0:
        return Ipw(math.nan, math.nan, (math.nan, math.nan), int(n), 0.0)
    mean = sum_w_y / sum_w
    if sum_w2 is None or sum_w2_y is None or sum_w2_y2 is None:
        return Ipw(mean, math.nan, (math.nan, math.nan), int(n), math.nan)
    ss = max(sum_w2_y2 - 2 * mean * sum_w2_y + mean * mean * sum_w2, 0.0)
    se = math.sqrt(ss) / sum_w
    half = _z(1 - alpha / 2) * se
    n_eff = sum_w * sum_w / sum_w2 if sum_w2 > 0 else 0.0
    return Ipw(mean, se, (mean - half, mean + half), int(n), n_eff)


def diff_interval(est2: float, se2: float, est1: float, se1: float, alpha: float = 0.05):
    """est2 - est1 with a normal CI and two-sided p, treating the two estimates as independent
    (they come from disjoint requests)."""
    diff = est2 - est1
    se = math.hypot(se1, se2)
    if not se > 0:
        return diff, (math.nan, math.nan), math.nan
    half = _z(1 - alpha / 2) * se
    return diff, (diff - half, diff + half), float(2 * sps.norm.sf(abs(diff) / se))


def error_rate_exceeds(errors: int, n: int, max_rate: float) -> float:
    """One-sided exact binomial p-value of errors/n > max_rate (small: the rate is above it)."""
    if n <= 0:
        return 1.0
    return float(sps.binomtest(int(errors), int(n), max_rate, alternative="greater").pvalue)
