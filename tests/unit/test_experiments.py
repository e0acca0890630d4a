"""Experiment as the server drives it: assign, record_request, feedback, state, report.
Simulations are seeded (np.random.default_rng(seed)) so statistical assertions cannot flake."""

import hashlib
import json
import math

import numpy as np
import pytest

from ember.errors import InputError, ModelError
from ember.experiments import Experiment, ExperimentConfig, stats, unit_hash

AB = [{"name": "A", "version": 1}, {"name": "B", "version": 2}]


def _exp(state=None, seed=0, clock=None, **over):
    d = {"name": "exp1", "variants": AB}
    d.update(over)
    cfg = ExperimentConfig.from_dict(d, "m: [experiment]")
    kw = {"clock": clock} if clock else {}
    return Experiment(cfg, state=state, rng_seed=seed, **kw)


def _restart(exp, **kw):
    """A new process: the state goes through JSON like the server's store."""
    return Experiment(exp.config, state=json.loads(json.dumps(exp.state())), **kw)


def test_unit_hash_is_sha256_of_salt_and_key():
    d = hashlib.sha256(b"exp1user-42").digest()
    assert unit_hash("exp1", "user-42") == int.from_bytes(d[:8], "big") / 2 ** 64


def test_same_key_same_variant_across_instances_and_restarts():
    a, b = _exp(seed=1), _exp(seed=2)
    first = {k: a.assign(k).variant for k in (f"u{i}" for i in range(500))}
    assert {k: b.assign(k).variant for k in first} == first
    again = _restart(a, rng_seed=3)
    assert {k: again.assign(k).variant for k in first} == first
    one = a.assign("u7")
    assert one.sticky and one.propensity == 0.5 and one.target == {"version": 2 if
                                                                     one.variant == "B" else 1}
    # a new salt reshuffles users
    other = _exp(salt="exp1-rerun")
    assert sum(other.assign(k).variant != v for k, v in first.items()) > 150


def test_split_balance_over_10k_users():
    w = {"A": 0.2, "B": 0.3, "C": 0.5}
    exp = _exp(variants=[{"name": n, "version": i, "weight": x}
                         for i, (n, x) in enumerate(w.items())])
    n = 10_000
    got = {k: 0 for k in w}
    for i in range(n):
        a = exp.assign(f"user-{i}")
        got[a.variant] += 1
        assert a.propensity == w[a.variant]
    for k, p in w.items():  # hashing is uniform: binomial counts, 4.5 sd is a 1-in-150k miss
        assert abs(got[k] - n * p) <= 4.5 * math.sqrt(n * p * (1 - p)), got


def test_no_key_is_a_random_draw():
    exp = _exp(seed=5)
    draws = [exp.assign(None) for _ in range(2000)]
    assert not any(a.sticky for a in draws)
    assert 850 < sum(a.variant == "A" for a in draws) < 1150
    assert not exp.assign("").sticky  # an empty header is no key


def _canary(stages=(0.01, 0.05, 0.25, 0.5, 1.0), clock=None, **canary):
    return _exp(mode="canary", clock=clock, canary={"stages": list(stages), **canary})


def test_canary_users_stay_in_the_canary_as_the_ramp_grows():
    exp = _canary(stage_requests=10)
    keys = [f"user-{i}" for i in range(5000)]
    previous, shares = set(), []
    for stage in range(5):
        w = exp.current_weights()
        shares.append(w["B"])
        now = {k for k in keys if exp.assign(k).variant == "B"}
        assert previous <= now
        assert abs(len(now) / len(keys) - w["B"]) < 0.03
        previous = now
        for _ in range(10):
            exp.record_request("A")
    assert shares == [0.01, 0.05, 0.25, 0.5, 1.0]
    assert exp.assign("user-1").propensity == 1.0


def test_ramp_advances_after_stage_requests_and_seconds():
    exp = _canary(stage_requests=100)
    for _ in range(99):
        exp.record_request("A")
    assert exp.current_weights() == {"A": 0.99, "B": 0.01}
    exp.record_request("B")
    assert exp.current_weights() == {"A": 0.95, "B": 0.05}
    assert _restart(exp).current_weights() == {"A": 0.95, "B": 0.05}  # the stage survives
    now = [1000.0]
    timed = _canary(clock=lambda: now[0], stage_seconds=60)
    timed.record_request("A")
    now[0] += 59
    assert timed.current_weights()["B"] == 0.01
    now[0] += 2
    assert timed.current_weights()["B"] == 0.05
    now[0] += 3600  # one stage per check: each lasts at least stage_seconds
    assert timed.current_weights()["B"] == 0.25


def test_canary_aborts_on_errors_and_returns_traffic_to_control():
    rng = np.random.default_rng(0)
    exp = _canary(stages=(0.5,), abort_if={"max_error_rate": 0.05})
    for i in range(400):
        a = exp.assign(f"u{i}")
        exp.record_request(a.variant, error=a.variant == "B" and rng.random() < 0.2)
    assert exp.current_weights() == {"A": 1.0, "B": 0.0}
    a = exp.assign("anyone")
    assert a.variant == "A" and a.propensity == 1.0
    rep = exp.report()
    assert rep["decision"] == "abort" and rep["verdict"].startswith("abort: canary error rate")
    assert rep["canary"]["aborted"] and _restart(exp).current_weights()["B"] == 0.0
    # healthy canary, and a bad one still under min_requests: no abort
    ok = _canary(stages=(0.5,), abort_if={"max_error_rate": 0.05})
    for i in range(2000):
        a = ok.assign(f"u{i}")
        ok.record_request(a.variant, error=a.variant == "B" and rng.random() < 0.03)
    assert ok.current_weights()["B"] == 0.5
    young = _canary(stages=(0.5,), abort_if={"max_error_rate": 0.05})
    for _ in range(99):
        young.record_request("B", error=True)
    assert young.current_weights()["B"] == 0.5


def test_srm_in_the_report():
    skewed = _exp()
    for v, n in (("A", 5200), ("B", 4800)):
        for _ in range(n):
            skewed.record_request(v)
    rep = skewed.report()
    assert rep["srm"]["checked"] and rep["srm"]["mismatch"] and rep["decision"] == "srm_mismatch"
    fair = _exp()
    for i in range(10_000):
        fair.record_request(fair.assign(f"u{i}").variant)
    assert fair.report()["srm"]["mismatch"] is False
    assert _exp(mode="bandit").report()["srm"]["checked"] is False


def _run_split(exp, rates, n, rng):
    for i in range(n):
        a = exp.assign(f"u{i}")
        exp.record_request(a.variant)
        exp.feedback(a.variant, float(rng.random() < rates[a.variant]), a.propensity)


def test_verdict_refused_before_the_planned_n_then_given():
    rng = np.random.default_rng(1)
    plan = {"baseline_rate": 0.10, "mde": 0.03}
    planned = stats.sample_size_proportions(0.10, 0.13)
    exp = _exp(plan=plan)
    _run_split(exp, {"A": 0.10, "B": 0.16}, 2000, rng)
    rep = exp.report()
    assert rep["planned_n"] == planned and rep["decision"] == "insufficient_data"
    assert rep["verdict"].startswith("insufficient data (n=")
    assert f"planned {planned}" in rep["verdict"]
    _run_split(exp, {"A": 0.10, "B": 0.16}, 3000, rng)
    rep = exp.report()
    assert rep["decision"] == "significant" and rep["verdict"].startswith("B better than A")
    t = rep["tests"][0]
    assert t["ci"][0] < 0.06 < t["ci"][1] and t["p"] < 0.05
    assert _exp().report()["decision"] == "no_plan"


def test_numeric_split_uses_welch():
    rng = np.random.default_rng(2)
    exp = _exp(metric={"type": "numeric", "name": "rating"}, plan={"sd": 1.0, "mde": 0.3})
    for i in range(1000):
        a = exp.assign(f"u{i}")
        exp.feedback(a.variant, rng.normal(3.0, 1.0), a.propensity)
    rep = exp.report()
    assert rep["tests"][0]["method"] == "Welch t test" and rep["tests"][0]["df"] > 900
    assert rep["decision"] == "no_significant_difference"
    assert "no significant difference" in rep["verdict"]


def test_bandit_routes_to_the_best_arm_and_ipw_recovers_means():
    rng = np.random.default_rng(3)
    means = {"a": 0.05, "b": 0.10, "c": 0.15}
    exp = _exp(mode="bandit", variants=[{"name": k, "version": i} for i, k in enumerate(means)],
               bandit={"min_share": 0.05}, seed=4)
    chosen = []
    for i in range(20_000):
        a = exp.assign(f"user-{i % 50}")
        assert not a.sticky
        exp.record_request(a.variant)
        exp.feedback(a.variant, float(rng.random() < means[a.variant]), a.propensity)
        chosen.append(a.variant)
    last = chosen[-5000:]
    assert last.count("c") / len(last) >= 0.8
    assert min(chosen.count(k) for k in means) / len(chosen) >= 0.045
    rep = exp.report()
    assert any("fixed-horizon test is not valid" in n for n in rep["notes"])
    for row in rep["ipw"]:
        assert row["ci"][0] < means[row["variant"]] < row["ci"][1], row
    w = exp.current_weights()
    assert sum(w.values()) == pytest.approx(1) and w["c"] > 0.85
    # mid-batch (the policy refreshes every ~0.5% of outcomes): a restart serves the same one
    exp.feedback("a", 1.0, 0.05)
    back = _restart(exp)
    assert back.current_weights() == exp.current_weights() == w
    assert back.report()["variants"] == exp.report()["variants"]


def test_ipw_corrects_a_drifting_canary_ramp():
    # Everyone converts less as the day goes on; the canary is no different but gets most of its
    # traffic late. The naive means make it look worse; IPW does not.
    rng = np.random.default_rng(6)
    exp = _canary(stages=(0.1, 0.3, 0.6), stage_requests=4000)
    for i in range(12_000):
        a = exp.assign(None)
        exp.record_request(a.variant)
        exp.feedback(a.variant, float(rng.random() < 0.30 - 0.2 * i / 12_000), a.propensity)
    rep = exp.report()
    naive = {v["name"]: v["mean"] for v in rep["variants"]}
    assert naive["A"] - naive["B"] > 0.03
    diff = next(d for d in rep["ipw_diffs"] if d["variant"] == "B" and d["vs"] == "A")
    assert diff["ci"][0] < 0 < diff["ci"][1]
    assert rep["srm"]["note"].startswith("within the current stage")


def test_state_round_trip_keeps_every_number():
    rng = np.random.default_rng(8)
    exp = _exp(plan={"baseline_rate": 0.1, "mde": 0.05})
    _run_split(exp, {"A": 0.1, "B": 0.2}, 700, rng)
    back = _restart(exp)
    assert back.state() == exp.state() and back.report() == exp.report()
    bigger = _exp(state=exp.state(), variants=AB + [{"name": "C", "version": 3}])
    assert bigger.state()["variants"]["C"]["n"] == 0
    assert bigger.state()["variants"]["A"] == exp.state()["variants"]["A"]
    with pytest.raises(ModelError, match=r"\[experiments\] exp1: saved state is unreadable"):
        _exp(state={"format": 1, "variants": {"A": "garbage"}})


@pytest.mark.parametrize("mode", ["split", "canary", "bandit"])
def test_report_is_strict_json_even_when_empty(mode):
    for exp in (_exp(mode=mode), _exp(mode=mode, metric={"type": "numeric"})):
        json.dumps(exp.report(), allow_nan=False)
        exp.feedback("A", 1.0, 0.5)
        exp.record_request("B", error=True)
        json.dumps(exp.report(), allow_nan=False)


def test_bad_calls():
    exp = _exp()
    with pytest.raises(InputError, match="unknown variant 'Z'"):
        exp.record_request("Z")
    with pytest.raises(InputError, match="binary"):
        exp.feedback("A", 0.5, 0.5)
    with pytest.raises(InputError, match="propensity"):
        exp.feedback("A", 1, 0.0)
    with pytest.raises(InputError, match="finite"):
        _exp(metric={"type": "numeric"}).feedback("A", float("nan"), 0.5)


def test_adaptive_verdicts_once_the_plan_is_met():
    rng = np.random.default_rng(9)
    means = {"a": 0.1, "b": 0.3, "c": 0.6}
    plan = {"baseline_rate": 0.1, "mde": 0.25}  # a small plan: ~50 per variant
    exp = _exp(mode="bandit", variants=[{"name": k, "version": i} for i, k in enumerate(means)],
               bandit={"min_share": 0.1}, plan=plan, seed=2)
    for _ in range(3000):
        a = exp.assign(None)
        exp.feedback(a.variant, float(rng.random() < means[a.variant]), a.propensity)
    rep = exp.report()
    assert rep["decision"] == "significant" and rep["verdict"].startswith("c is best by IPW")
    can = _exp(mode="canary", canary={"stages": [0.2, 0.5], "stage_requests": 1000}, plan=plan)
    for i in range(3000):
        a = can.assign(f"u{i}")
        can.record_request(a.variant)
        can.feedback(a.variant, float(rng.random() < (0.2 if a.variant == "A" else 0.5)),
                     a.propensity)
    rep = can.report()
    assert rep["verdict"].startswith("IPW: B better than A") and rep["decision"] == "significant"


def test_canary_with_all_the_traffic_skips_srm():
    exp = _canary(stages=(0.5, 1.0), stage_requests=10)
    for _ in range(10):
        exp.record_request("A")
    for _ in range(50):
        exp.record_request("A")  # in flight from the 50% stage: no false mismatch
    rep = exp.report()
    assert not rep["srm"]["checked"] and "all the traffic" in rep["srm"]["note"]
    assert any("covers only earlier stages" in n for n in rep["notes"])
