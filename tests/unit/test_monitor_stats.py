"""ember.monitor statistics against scipy and direct numpy computations, and the corrections
against hand-computed values."""
import numpy as np
import pytest
from scipy import stats as sps

from ember.monitor import stats


def test_ks_equals_scipy(rng):
    a, b = rng.normal(size=700), rng.normal(0.1, 1.2, size=513)
    d, p = stats.ks(a, b)
    ref = sps.ks_2samp(a, b)
    assert d == ref.statistic and p == ref.pvalue


def _props(counts):
    c = np.asarray(counts, dtype=float) + 0.5
    return c / c.sum()


@pytest.mark.parametrize("ref_counts,cur_counts", [
    ([10, 20, 30, 40], [40, 30, 20, 10]),
    ([100, 0, 5, 7, 1], [90, 12, 0, 3, 9]),
    ([5, 5], [5, 5]),
])
def test_distances_match_numpy(ref_counts, cur_counts):
    r, c = _props(ref_counts), _props(cur_counts)
    m = (r + c) / 2
    assert stats.psi(ref_counts, cur_counts) == pytest.approx(np.sum((c - r) * np.log(c / r)))
    assert stats.kl(ref_counts, cur_counts) == pytest.approx(np.sum(c * np.log(c / r)))
    js = 0.5 * np.sum(c * np.log(c / m)) + 0.5 * np.sum(r * np.log(r / m))
    assert stats.js(ref_counts, cur_counts) == pytest.approx(js)
    # scipy's jensenshannon is the square root of the divergence (natural log by default)
    assert stats.js(ref_counts, cur_counts) == pytest.approx(
        sps.entropy(r, m) / 2 + sps.entropy(c, m) / 2)


def test_js_bounded_by_ln2():
    assert stats.js([1000, 0], [0, 1000]) < np.log(2)
    assert stats.js([1000, 0], [0, 1000]) > 0.6


def test_quantile_bins(rng):
    ref = rng.normal(size=1000)
    edges = stats.quantile_edges(ref, 10)
    assert len(edges) == 9 and np.all(np.diff(edges) > 0)
    counts = stats.bin_counts(ref, edges)
    assert counts.sum() == 1000 and np.all(np.abs(counts - 100) <= 1)
    # ties merge bins; a value on an edge falls in the bin above
    edges = stats.quantile_edges(np.array([0.0] * 80 + [1.0] * 20), 10)
    assert edges.tolist() == [0.0, 1.0]
    assert stats.bin_counts(np.array([-1.0, 0.0, 0.5, 1.0, 7.0]), edges).tolist() == [1, 2, 2]


def test_chi2_is_scipy_homogeneity():
    r, c = [30, 50, 20, 0], [25, 40, 35, 0]
    x2, p = stats.chi2(r, c)
    ref = sps.chi2_contingency(np.array([[30, 50, 20], [25, 40, 35]]), correction=False)
    assert x2 == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue)
    assert stats.chi2([10, 0], [7, 0]) == (0.0, 1.0)


def test_categories_catch_all():
    ref = ["a"] * 50 + ["b"] * 30 + ["rare"] * 2
    cats = stats.categories(ref)
    assert cats == ["a", "b"]
    counts = stats.category_counts(["a", "b", "new", "rare", "a"], cats)
    assert counts.tolist() == [2, 1, 2]


def test_bh_by_hand():
    p = [0.01, 0.04, 0.03, 0.005, 0.5]
    # sorted 0.005 0.01 0.03 0.04 0.5 -> *5/rank: 0.025 0.025 0.05 0.05 0.5, then running min
    # from the top (already monotone)
    expected = [0.025, 0.05, 0.05, 0.025, 0.5]
    assert stats.correct(p, "bh") == pytest.approx(expected)
    assert stats.correct(p, "bh") == pytest.approx(sps.false_discovery_control(p, method="bh"))


def test_bh_monotone_step():
    # sorted 0.01 0.02 0.021 -> *3/rank: 0.03 0.03 0.021 -> running min from the top: 0.021 x3
    assert stats.correct([0.02, 0.021, 0.01], "bh") == pytest.approx([0.021, 0.021, 0.021])


def test_holm_by_hand():
    p = [0.01, 0.04, 0.03, 0.005, 0.5]
    # sorted 0.005 0.01 0.03 0.04 0.5 -> *(5,4,3,2,1): 0.025 0.04 0.09 0.08 0.5; running max
    # from the bottom: 0.025 0.04 0.09 0.09 0.5
    expected = [0.04, 0.09, 0.09, 0.025, 0.5]
    assert stats.correct(p, "holm") == pytest.approx(expected)
    assert stats.correct([0.9, 0.6], "holm") == pytest.approx([1.0, 1.0])


def test_correct_random_against_loops(rng):
    p = rng.uniform(size=37) ** 3
    m = len(p)
    order = np.argsort(p)
    bh = np.empty(m)
    holm = np.empty(m)
    for k, i in enumerate(order):
        bh[i] = min(1.0, min(p[order[j]] * m / (j + 1) for j in range(k, m)))
        holm[i] = min(1.0, max(p[order[j]] * (m - j) for j in range(k + 1)))
    assert stats.correct(p, "bh") == pytest.approx(bh)
    assert stats.correct(p, "holm") == pytest.approx(holm)
    assert stats.correct([], "bh").size == 0
