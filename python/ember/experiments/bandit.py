"""Multi-armed bandit policies over experiment variants, each with a min_share floor.

A policy is a probability vector over arms; Bandit.choose() samples that vector, so the logged
propensity is exactly the probability the chosen arm had (what IPW analysis needs), and the
floor keeps every arm explored: p = min_share + (1 - k * min_share) * p_policy.

- thompson: Beta-Bernoulli with a Beta(1, 1) prior; outcomes 0/1.
- gaussian_thompson: normal outcomes with unknown mean and variance under the Jeffreys prior
  p(mu, sigma^2) ~ 1/sigma^2, so the mean's posterior is Student t_{n-1}(mean, s^2/n). It needs
  n >= 3 per arm (df >= 2): until every arm has that, the policy is uniform over those lacking it.
- epsilon_greedy: epsilon spread evenly, the rest to the best sample mean (unseen arms first).

Thompson's "probability that arm i is best" is computed, not sampled: for independent posteriors
P(i best) = integral f_i(x) prod_{j != i} F_j(x) dx, by the trapezoid rule on the union of each
arm's central 1 - 2e-7 quantile range: deterministic, any k, ~3 ms for 8 arms, cached until
the next outcome.
Drawing one posterior sample per arm and taking the argmax is the same policy in distribution.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as sps

ALGORITHMS = ("thompson", "gaussian_thompson", "epsilon_greedy")
_TAIL = 1e-7          # posterior mass ignored at each end of each arm's grid
_GRID = 65            # trapezoid points per arm: ~1e-5 absolute error on P(best)
_GAUSS_WARMUP = 3     # outcomes an arm needs before its t posterior (df = n - 1) is used


def _prob_best(dist, *params) -> np.ndarray:
    """P(arm i has the largest draw) for independent scipy `dist(*params[i])` posteriors."""
    params = [np.asarray(p, dtype=float) for p in params]
    k = params[0].size
    lo, hi = dist.ppf(_TAIL, *params), dist.ppf(1 - _TAIL, *params)
    grid = np.unique(np.concatenate([np.linspace(lo[i], hi[i], _GRID) for i in range(k)]))
    cols = [p[None, :] for p in params]
    pdf = dist.pdf(grid[:, None], *cols)          # [points, arms]
    cdf = dist.cdf(grid[:, None], *cols)          # [points, arms]
    probs = np.empty(k)
    for i in range(k):
        others = np.prod(np.delete(cdf, i, axis=1), axis=1)
        probs[i] = np.trapezoid(pdf[:, i] * others, grid)
    probs = np.clip(probs, 0.0, None)
    total = probs.sum()
    return probs / total if total > 0 else np.full(k, 1.0 / k)


def thompson_beta_probs(successes, failures) -> np.ndarray:
    """P(best) per arm under Beta(1 + successes, 1 + failures) posteriors."""
    s, f = np.asarray(successes, float), np.asarray(failures, float)
    return _prob_best(sps.beta, 1.0 + s, 1.0 + f)


def thompson_gaussian_probs(n, mean, var) -> np.ndarray:
    """P(best) per arm under t_{n-1}(mean, var / n) posteriors (var: sample variance, ddof 1);
    uniform over the arms with fewer than 3 outcomes while any has."""
    n, mean, var = (np.asarray(a, float) for a in (n, mean, var))
    cold = n < _GAUSS_WARMUP
    if cold.any():
        return cold / cold.sum()
    # a constant arm (var 0) still needs a scale: a tiny one relative to its mean
    var = np.maximum(var, 1e-18 * (1.0 + mean * mean))
    return _prob_best(sps.t, n - 1.0, mean, np.sqrt(var / n))


def epsilon_greedy_probs(n, mean, epsilon: float) -> np.ndarray:
    """epsilon / k to every arm, 1 - epsilon split among the best means (an arm never seen
    counts as best, so each is tried before the greedy part settles)."""
    n, mean = np.asarray(n, float), np.asarray(mean, float)
    score = np.where(n > 0, mean, np.inf)
    best = score == score.max()
    return epsilon / n.size + (1.0 - epsilon) * best / best.sum()


def apply_floor(p, min_share: float) -> np.ndarray:
    """min_share + (1 - k min_share) p: every arm keeps at least min_share of the traffic."""
    p = np.asarray(p, float)
    if not 0 <= min_share < 1.0 / p.size:
        raise ValueError(f"[experiments] min_share must be in [0, 1/{p.size}), got {min_share}")
    return min_share + (1.0 - p.size * min_share) * p


class Bandit:
    """A policy over named arms with per-arm sufficient statistics (n, sum, sum of squares).

    Thread-unsafe by itself: Experiment holds its lock around every call."""

    def __init__(self, arms, algorithm: str = "thompson", epsilon: float = 0.1,
                 min_share: float = 0.05, state: dict | None = None):
        self.arms = list(arms)
        if len(self.arms) < 2 or len(set(self.arms)) != len(self.arms):
            raise ValueError(f"[experiments] a bandit needs >= 2 distinct arms, got {self.arms}")
        if algorithm not in ALGORITHMS:
            raise ValueError(f"[experiments] unknown bandit algorithm {algorithm!r} "
                             f"(one of {', '.join(ALGORITHMS)})")
        if not 0 <= epsilon <= 1:
            raise ValueError(f"[experiments] epsilon must be in [0, 1], got {epsilon}")
        apply_floor(np.full(len(self.arms), 1.0 / len(self.arms)), min_share)  # validates it
        self.algorithm, self.epsilon, self.min_share = algorithm, float(epsilon), float(min_share)
        k = len(self.arms)
        self._n, self._sum, self._sumsq = np.zeros(k), np.zeros(k), np.zeros(k)
        self._probs = None
        if state:
            self.load_state(state)

    def _index(self, arm: str) -> int:
        try:
            return self.arms.index(arm)
        except ValueError:
            raise ValueError(f"[experiments] unknown arm {arm!r} (arms: "
                             f"{', '.join(self.arms)})") from None

    def update(self, arm: str, value: float) -> None:
        """One outcome of `arm`: 0/1 for thompson, any finite number otherwise."""
        i = self._index(arm)
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"[experiments] outcome must be finite, got {value}")
        if self.algorithm == "thompson" and value not in (0.0, 1.0):
            raise ValueError(f"[experiments] thompson (Beta-Bernoulli) takes outcomes 0 or 1, "
                             f"got {value}")
        self._n[i] += 1
        self._sum[i] += value
        self._sumsq[i] += value * value
        self._probs = None

    def policy(self) -> np.ndarray:
        """The policy's own probabilities, before the floor."""
        n, s = self._n, self._sum
        if self.algorithm == "thompson":
            return thompson_beta_probs(s, n - s)
        mean = np.divide(s, n, out=np.zeros_like(s), where=n > 0)
        if self.algorithm == "epsilon_greedy":
            return epsilon_greedy_probs(n, mean, self.epsilon)
        ss = np.maximum(self._sumsq - n * mean * mean, 0.0)
        var = np.divide(ss, n - 1, out=np.zeros_like(ss), where=n > 1)
        return thompson_gaussian_probs(n, mean, var)

    def probs(self) -> np.ndarray:
        """Floored probabilities in arm order; cached until the next update."""
        if self._probs is None:
            self._probs = apply_floor(self.policy(), self.min_share)
        return self._probs

    def probabilities(self) -> dict:
        return {a: float(p) for a, p in zip(self.arms, self.probs())}

    def choose(self, rng: np.random.Generator) -> tuple:
        """(arm, propensity): one draw from the floored policy."""
        p = self.probs()
        i = int(rng.choice(len(p), p=p / p.sum()))
        return self.arms[i], float(p[i])

    def state(self) -> dict:
        return {"algorithm": self.algorithm,
                "arms": {a: {"n": float(self._n[i]), "sum": float(self._sum[i]),
                             "sumsq": float(self._sumsq[i])} for i, a in enumerate(self.arms)}}

    def load_state(self, state: dict) -> None:
        """Restores the statistics of the arms both have; arms new to the config start empty."""
        if state.get("algorithm", self.algorithm) != self.algorithm:
            raise ValueError(f"[experiments] bandit state is for {state.get('algorithm')!r}, "
                             f"the config says {self.algorithm!r}")
        for a, st in (state.get("arms") or {}).items():
            if a in self.arms:
                i = self.arms.index(a)
                self._n[i], self._sum[i], self._sumsq[i] = st["n"], st["sum"], st["sumsq"]
        self._probs = None
