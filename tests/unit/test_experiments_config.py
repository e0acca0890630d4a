"""ExperimentConfig.from_dict: defaults, normalisation, and a ModelError naming every bad key."""

import pytest

from ember.errors import ModelError
from ember.experiments import ExperimentConfig

WHERE = "ranker: [experiment]"


def _cfg(**over):
    d = {"name": "exp1", "variants": [{"name": "A", "version": 1}, {"name": "B", "version": 2}]}
    d.update(over)
    return ExperimentConfig.from_dict(d, WHERE)


def test_defaults():
    c = _cfg()
    assert (c.salt, c.key, c.mode, c.metric_type, c.metric_name) == \
        ("exp1", "header:x-user-id", "split", "binary", "conversion")
    assert c.weights() == {"A": 0.5, "B": 0.5}
    assert c.variants[1].target_dict() == {"version": 2}
    assert c.planned_n() is None and c.canary is None and c.bandit is None
    assert _cfg() == _cfg()  # the server compares configs to skip a no-op reload


def test_weights_are_normalised_and_targets_may_name_models():
    c = _cfg(variants=[{"name": "A", "version": 1, "weight": 1},
                       {"name": "B", "model": "ranker-distilled", "weight": 3}])
    assert c.weights() == {"A": 0.25, "B": 0.75}
    assert c.variants[1].target_dict() == {"model": "ranker-distilled"}


def test_mode_tables_and_plan():
    c = _cfg(mode="canary", canary={"stages": [0.1, 0.5, 1.0], "abort_if": {"max_error_rate": 0.05}})
    assert c.canary.stages == (0.1, 0.5, 1.0) and c.canary.stage_requests == 1000
    assert c.canary.max_error_rate == 0.05 and c.canary.min_requests == 100
    assert _cfg(mode="canary", canary={"stage_seconds": 600}).canary.stage_requests is None
    b = _cfg(mode="bandit", bandit={"min_share": 0.1})
    assert (b.bandit.algorithm, b.bandit.epsilon, b.bandit.min_share) == ("thompson", 0.1, 0.1)
    assert _cfg(mode="bandit", metric={"type": "numeric"}).bandit.algorithm == "gaussian_thompson"
    assert _cfg(plan={"baseline_rate": 0.1, "mde": 0.02}).planned_n() == 3841
    numeric = _cfg(metric={"type": "numeric", "name": "rating"}, plan={"sd": 1.0, "mde": 0.5})
    assert numeric.planned_n() == 63
    # three variants: two comparisons against the control, Bonferroni alpha 0.025
    three = _cfg(variants=[{"name": n, "version": i} for i, n in enumerate("ABC")],
                 plan={"baseline_rate": 0.1, "mde": 0.02})
    assert three.test_alpha == 0.025 and three.planned_n() > 3841
    assert _cfg(key="header:X-Session").key == "header:x-session"
    assert _cfg(key="body:user").key == "body:user"


@pytest.mark.parametrize("over, needle", [
    ({"name": None}, "name"),
    ({"colour": "red"}, "unknown key(s) colour"),
    ({"mode": "ab"}, "mode"),
    ({"key": "cookie:uid"}, "key"),
    ({"variants": [{"name": "A", "version": 1}]}, "2 to 8 variants"),
    ({"variants": [{"name": f"v{i}", "version": i} for i in range(9)]}, "2 to 8 variants"),
    ({"variants": [{"name": "A", "version": 1}, {"name": "A", "version": 2}]}, "duplicate"),
    ({"variants": [{"name": "A", "version": 1, "model": "m"}, {"name": "B", "version": 2}]},
     "exactly one of version or model"),
    ({"variants": [{"name": "A"}, {"name": "B", "version": 2}]}, "exactly one of version or model"),
    ({"variants": [{"name": "A", "version": "1"}, {"name": "B", "version": 2}]}, "version"),
    ({"variants": [{"name": "A", "version": 1, "weight": 1}, {"name": "B", "version": 2}]},
     "every variant a weight"),
    ({"variants": [{"name": "A", "version": 1, "weight": -1}, {"name": "B", "version": 2,
                                                               "weight": 1}]}, "weight"),
    ({"variants": [{"name": "A", "version": 1, "wieght": 1}, {"name": "B", "version": 2}]},
     "wieght"),
    ({"mode": "canary", "variants": [{"name": n, "version": i} for i, n in enumerate("ABC")]},
     "exactly 2"),
    ({"mode": "canary", "variants": [{"name": "A", "version": 1, "weight": 1},
                                     {"name": "B", "version": 2, "weight": 1}]}, "weight"),
    ({"mode": "canary", "canary": {"stages": [0.5, 0.1]}}, "stages"),
    ({"mode": "canary", "canary": {"stages": [0.5, 1.5]}}, "stages"),
    ({"mode": "canary", "canary": {"stage_requests": 10, "stage_seconds": 5}}, "not both"),
    ({"mode": "canary", "canary": {"abort_if": {"max_error_rate": 2}}}, "max_error_rate"),
    ({"mode": "canary", "canary": {"abort_if": {"max_errors": 2}}}, "max_errors"),
    ({"canary": {"stages": [0.5]}}, "canary"),
    ({"bandit": {}}, "bandit"),
    ({"mode": "bandit", "bandit": {"min_share": 0.5}}, "min_share"),
    ({"mode": "bandit", "bandit": {"algorithm": "ucb1"}}, "algorithm"),
    ({"mode": "bandit", "metric": {"type": "numeric"}, "bandit": {"algorithm": "thompson"}},
     "binary"),
    ({"metric": {"type": "ordinal"}}, "type"),
    ({"plan": {"baseline_rate": 0.1}}, "mde"),
    ({"plan": {"sd": 1.0, "mde": 0.1}}, "baseline_rate"),
    ({"plan": {"baseline_rate": 0.99, "mde": 0.02}}, "below 1"),
    ({"metric": {"type": "numeric"}, "plan": {"baseline_rate": 0.1, "mde": 0.1}}, "sd"),
    ({"plan": {"baseline_rate": 0.1, "mde": 0.02, "power": 80}}, "power"),
])
def test_errors_name_the_key(over, needle):
    d = {"name": "exp1", "variants": [{"name": "A", "version": 1}, {"name": "B", "version": 2}]}
    d.update(over)
    if d["name"] is None:
        del d["name"]
    with pytest.raises(ModelError) as e:
        ExperimentConfig.from_dict(d, WHERE)
    msg = str(e.value)
    assert msg.startswith("[experiments] ") and WHERE in msg and needle in msg, msg


def test_not_a_table():
    with pytest.raises(ModelError, match="must be a table"):
        ExperimentConfig.from_dict(["name"], WHERE)
