"""ember.experiments.stats against scipy.stats, numpy and textbook values."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from ember.experiments import stats


def test_sample_size_proportions_textbook():
    # Fleiss (pooled, no continuity correction): 10% -> 12%, alpha .05 two-sided, power .8
    assert stats.sample_size_proportions(0.10, 0.12) == 3841
    assert stats.sample_size_proportions(0.12, 0.10) == 3841  # symmetric
    # the same formula written out with scipy's quantiles
    za, zb = sps.norm.ppf(0.975), sps.norm.ppf(0.9)
    p1, p2, pbar = 0.3, 0.4, 0.35
    ref = (za * math.sqrt(2 * pbar * (1 - pbar)) + zb * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))) ** 2 \
        / 0.01
    assert stats.sample_size_proportions(0.3, 0.4, power=0.9) == math.ceil(ref)
    assert stats.sample_size_proportions(0.10, 0.12, two_sided=False) < 3841


def test_sample_size_means_textbook():
    # d = 0.5 (medium effect), alpha .05, power .8: 63 per group by the normal approximation
    assert stats.sample_size_means(0.5, 1.0) == 63
    za, zb = sps.norm.ppf(0.975), sps.norm.ppf(0.8)
    assert stats.sample_size_means(2.0, 10.0) == math.ceil(2 * (za + zb) ** 2 * 100 / 4)
    with pytest.raises(ValueError, match=r"\[experiments\]"):
        stats.sample_size_means(0.0, 1.0)
    with pytest.raises(ValueError, match="alpha"):
        stats.sample_size_proportions(0.1, 0.2, alpha=1.5)


def test_ztest_matches_uncorrected_chi_square():
    for x1, n1, x2, n2 in [(120, 1000, 150, 1000), (48, 80, 56, 70), (3, 400, 9, 380)]:
        r = stats.two_proportion_ztest(x1, n1, x2, n2)
        table = np.array([[x1, n1 - x1], [x2, n2 - x2]])
        chi2, p, _, _ = sps.chi2_contingency(table, correction=False)
        assert r.statistic ** 2 == pytest.approx(chi2, rel=1e-9)
        assert r.p == pytest.approx(p, rel=1e-9)
        assert r.diff == pytest.approx(x2 / n2 - x1 / n1)
        assert r.statistic > 0 if r.diff > 0 else r.statistic < 0


def test_ztest_newcombe_interval():
    # Newcombe (1998), Stat Med 17:873, example (a): 56/70 vs 48/80, method 10 -> 0.0524, 0.3339
    r = stats.two_proportion_ztest(48, 80, 56, 70)
    assert r.diff == pytest.approx(0.2)
    assert r.ci[0] == pytest.approx(0.0524, abs=5e-5)
    assert r.ci[1] == pytest.approx(0.3339, abs=5e-5)
    # Wilson's interval agrees with scipy's binomtest
    ci = sps.binomtest(56, 70).proportion_ci(method="wilson")
    assert stats.wilson_interval(56, 70) == pytest.approx((ci.low, ci.high), rel=1e-9)
    # degenerate: no conversions anywhere
    assert stats.two_proportion_ztest(0, 50, 0, 60).p == 1.0


def test_welch_from_sufficient_statistics_matches_scipy(rng):
    for n1, n2, s2 in [(30, 45, 3.0), (7, 200, 0.5), (1000, 800, 1.0)]:
        a = rng.normal(1.0, 1.0, n1)
        b = rng.normal(1.3, s2, n2)
        r = stats.welch_ttest(a.mean(), a.var(ddof=1), n1, b.mean(), b.var(ddof=1), n2, 0.05)
        ref = sps.ttest_ind(b, a, equal_var=False)
        assert r.statistic == pytest.approx(ref.statistic, rel=1e-9)
        assert r.p == pytest.approx(ref.pvalue, rel=1e-7)
        assert r.df == pytest.approx(ref.df, rel=1e-9)
        ci = ref.confidence_interval(0.95)
        assert r.ci == pytest.approx((ci.low, ci.high), rel=1e-7)
        assert r.diff == pytest.approx(b.mean() - a.mean())
    assert math.isnan(stats.welch_ttest(1, 1, 1, 2, 1, 10).p)  # one outcome: no variance


def test_srm_detects_a_skewed_split():
    bad = stats.srm_check([5200, 4800], [0.5, 0.5])
    assert bad.mismatch and bad.p < 0.001
    ref = sps.chisquare([5200, 4800], [5000, 5000])
    assert bad.statistic == pytest.approx(ref.statistic) and bad.p == pytest.approx(ref.pvalue)
    assert not stats.srm_check([5030, 4970], [0.5, 0.5]).mismatch
    assert not stats.srm_check([2010, 2990, 5000], [2, 3, 5]).mismatch  # weights normalised
    assert stats.srm_check([10, 3], [1.0, 0.0]).mismatch  # traffic where none is expected
    assert math.isnan(stats.srm_check([0, 0], [0.5, 0.5]).p)


def _bandit_logs(rng, means, rounds):
    """A logging policy that drifts over time, with the propensity of each logged arm."""
    k = len(means)
    probs = rng.dirichlet(np.full(k, 2.0), size=rounds) * (1 - 0.05 * k) + 0.05
    arms = (rng.random((rounds, 1)) > np.cumsum(probs, axis=1)).sum(axis=1)
    prop = probs[np.arange(rounds), arms]
    y = (rng.random(rounds) < np.asarray(means)[arms]).astype(float)
    return arms, prop, y


def _ipw_for(arms, prop, y, a):
    sel = arms == a
    w, yy = 1 / prop[sel], y[sel]
    return stats.ipw_estimate((w * yy).sum(), w.sum(), sel.sum(), (w * w).sum(),
                              (w * w * yy).sum(), (w * w * yy * yy).sum())


def test_ipw_recovers_arm_means_within_ci():
    rng = np.random.default_rng(7)  # a CI misses 5% of the time: fixed data, not a flaky test
    means = [0.05, 0.10, 0.15]
    arms, prop, y = _bandit_logs(rng, means, 20000)
    for a, mu in enumerate(means):
        est = _ipw_for(arms, prop, y, a)
        sel = arms == a
        w = 1 / prop[sel]
        assert est.mean == pytest.approx(np.sum(w * y[sel]) / np.sum(w))  # Hajek by hand
        assert est.ci[0] < mu < est.ci[1]
        assert 0 < est.n_eff <= est.n
    # no squared sums: the point estimate, no standard error
    bare = stats.ipw_estimate(10.0, 100.0, 80)
    assert bare.mean == 0.1 and math.isnan(bare.se)


def test_ipw_interval_coverage():
    # the linearised SE is honest: ~95% of 300 replications cover the true mean
    rng = np.random.default_rng(11)
    hits = 0
    for _ in range(300):
        arms, prop, y = _bandit_logs(rng, [0.3, 0.6], 600)
        est = _ipw_for(arms, prop, y, 1)
        hits += est.ci[0] < 0.6 < est.ci[1]
    assert 0.91 <= hits / 300 <= 0.98


def test_ipw_equals_plain_mean_with_constant_propensity(rng):
    y = rng.normal(2.0, 1.0, 500)
    w = np.full(500, 1 / 0.25)
    est = stats.ipw_estimate((w * y).sum(), w.sum(), 500, (w * w).sum(), (w * w * y).sum(),
                             (w * w * y * y).sum())
    assert est.mean == pytest.approx(y.mean())
    assert est.se == pytest.approx(y.std(ddof=0) / math.sqrt(500))
    assert est.n_eff == pytest.approx(500)


def test_diff_interval_and_error_rate():
    d, ci, p = stats.diff_interval(0.12, 0.01, 0.10, 0.01)
    assert d == pytest.approx(0.02)
    assert ci == pytest.approx((0.02 - 1.959964 * math.sqrt(2) * 0.01,
                                0.02 + 1.959964 * math.sqrt(2) * 0.01), rel=1e-6)
    assert p == pytest.approx(2 * sps.norm.sf(0.02 / (math.sqrt(2) * 0.01)))
    assert stats.error_rate_exceeds(20, 100, 0.05) < 1e-5
    assert stats.error_rate_exceeds(5, 100, 0.05) > 0.3
