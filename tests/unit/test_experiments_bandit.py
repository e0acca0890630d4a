"""ember.experiments.bandit: policy probabilities against Monte Carlo, the min_share floor, state
round trips, and seeded simulations that the right arm wins."""

import json

import numpy as np
import pytest

from ember.experiments import bandit
from ember.experiments.bandit import Bandit


def _mc_best(draws):
    """Share of Monte Carlo rounds each arm's draw is the largest. draws: [arms, rounds]."""
    return np.bincount(draws.argmax(axis=0), minlength=draws.shape[0]) / draws.shape[1]


def test_thompson_beta_matches_monte_carlo():
    rng = np.random.default_rng(0)
    s = np.array([5.0, 12.0, 9.0, 0.0])
    f = np.array([95.0, 90.0, 60.0, 3.0])
    p = bandit.thompson_beta_probs(s, f)
    mc = _mc_best(rng.beta(1 + s[:, None], 1 + f[:, None], (4, 400_000)))
    assert p == pytest.approx(mc, abs=3e-3)
    assert p.sum() == pytest.approx(1.0)
    assert bandit.thompson_beta_probs([0, 0, 0], [0, 0, 0]) == pytest.approx([1 / 3] * 3)


def test_thompson_gaussian_matches_monte_carlo():
    rng = np.random.default_rng(1)
    n = np.array([10.0, 12.0, 5.0])
    mean = np.array([1.0, 1.2, 0.3])
    var = np.array([1.0, 2.0, 0.5])
    p = bandit.thompson_gaussian_probs(n, mean, var)
    draws = mean[:, None] + np.sqrt(var / n)[:, None] * rng.standard_t((n - 1)[:, None], (3, 400_000))
    assert p == pytest.approx(_mc_best(draws), abs=3e-3)
    # arms with fewer than 3 outcomes are explored first, evenly
    assert bandit.thompson_gaussian_probs([5, 2, 0], [9, 0, 0], [1, 1, 1]) == pytest.approx([0, .5, .5])
    # a constant arm (variance 0) does not break the integral
    assert bandit.thompson_gaussian_probs([5, 5], [1.0, 2.0], [0.0, 0.0]) == pytest.approx([0, 1])


def test_epsilon_greedy_and_floor():
    p = bandit.epsilon_greedy_probs([10, 10, 10], [0.1, 0.3, 0.2], 0.3)
    assert p == pytest.approx([0.1, 0.8, 0.1])
    assert bandit.epsilon_greedy_probs([10, 0], [0.9, 0.0], 0.0) == pytest.approx([0, 1])  # unseen
    floored = bandit.apply_floor([0.0, 0.0, 1.0], 0.05)
    assert floored == pytest.approx([0.05, 0.05, 0.9]) and floored.sum() == pytest.approx(1)
    with pytest.raises(ValueError, match="min_share"):
        bandit.apply_floor([0.5, 0.5, 0.0], 1 / 3)


def test_state_round_trips_through_json():
    b = Bandit(["a", "b", "c"], "thompson", min_share=0.05)
    for arm, v in [("a", 1), ("a", 0), ("b", 1), ("c", 0), ("c", 0)]:
        b.update(arm, v)
    back = Bandit(["a", "b", "c"], "thompson", min_share=0.05,
                  state=json.loads(json.dumps(b.state())))
    assert back.probabilities() == b.probabilities()
    assert back.state() == b.state()
    # the cached policy travels too: a restart between refreshes serves the same vector
    for _ in range(1000):
        b.update("b", 1)
    b.probabilities()
    b.update("c", 1)
    b.update("c", 1)  # 2 outcomes behind; the next refresh comes after 1007 / 200
    back = Bandit(["a", "b", "c"], "thompson", min_share=0.05,
                  state=json.loads(json.dumps(b.state())))
    assert back.probabilities() == b.probabilities()
    fresh = Bandit(["a", "b", "c"], "thompson", min_share=0.05, state={"arms": b.state()["arms"]})
    assert fresh.probabilities() != b.probabilities()  # what a lost cache would change
    # a new arm in the config starts empty; an arm no longer configured is dropped
    grown = Bandit(["a", "c", "d"], "thompson", state=b.state())
    assert grown.state()["arms"]["d"] == {"n": 0.0, "sum": 0.0, "sumsq": 0.0}
    assert grown.state()["arms"]["a"] == b.state()["arms"]["a"]


def test_bad_arguments():
    with pytest.raises(ValueError, match="algorithm"):
        Bandit(["a", "b"], "ucb")
    with pytest.raises(ValueError, match="distinct"):
        Bandit(["a", "a"])
    b = Bandit(["a", "b"])
    with pytest.raises(ValueError, match="0 or 1"):
        b.update("a", 0.5)
    with pytest.raises(ValueError, match="unknown arm"):
        b.update("z", 1)


def _simulate(algorithm, arms_means, steps, seed, draw):
    rng = np.random.default_rng(seed)
    names = [f"arm{i}" for i in range(len(arms_means))]
    b = Bandit(names, algorithm, epsilon=0.1, min_share=0.05)
    chosen = np.empty(steps, dtype=int)
    for t in range(steps):
        arm, p = b.choose(rng)
        assert 0.05 <= p <= 1
        i = names.index(arm)
        chosen[t] = i
        b.update(arm, draw(rng, arms_means[i]))
    return chosen, b


def test_thompson_routes_traffic_to_the_best_arm():
    chosen, b = _simulate("thompson", [0.05, 0.10, 0.15], 20_000, 3,
                          lambda rng, p: float(rng.random() < p))
    last = np.bincount(chosen[-5000:], minlength=3) / 5000
    assert last[2] >= 0.80
    overall = np.bincount(chosen, minlength=3) / chosen.size
    assert overall.min() >= 0.045  # the floor keeps every arm explored
    assert b.probs()[:2] == pytest.approx([0.05, 0.05], abs=0.01)


@pytest.mark.parametrize("algorithm", ["gaussian_thompson", "epsilon_greedy"])
def test_numeric_policies_find_the_best_arm(algorithm):
    chosen, _ = _simulate(algorithm, [1.0, 1.5, 1.2], 4000, 5,
                          lambda rng, mu: float(rng.normal(mu, 1.0)))
    last = np.bincount(chosen[-1000:], minlength=3) / 1000
    assert last[1] >= 0.75
    assert last.min() >= 0.03
