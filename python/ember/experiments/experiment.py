"""Experiment: assigns requests to variants and accumulates what the analysis needs.

Split and canary assignment with a key is sticky: u = first 8 bytes of sha256(salt + key) as a
uniform in [0, 1), mapped through the cumulative weights (split) or compared with the canary's
share (canary: u < share, so a user in the canary stays in it while the share grows). Without a
key, u is a random draw. Bandit assignment is a fresh draw from the policy on every request,
keyed or not: a sticky bandit would stop adapting for returning users.

The propensity of an assignment is the probability its variant had under the weights in force
(for a sticky user, the share of users the weights sent there); feedback() takes it back, so
IPW estimates stay right when the weights move (canary ramp, bandit).

State (state()) is plain JSON: per-variant counters, the canary's stage; bandit posteriors are
rebuilt from the same counters (plus the policy cache, so a restart serves the same policy).
Every method is thread-safe.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from dataclasses import dataclass

import numpy as np

from ember.errors import InputError, ModelError
from ember.experiments import report as report_mod
from ember.experiments import stats
from ember.experiments.bandit import Bandit
from ember.experiments.config import ExperimentConfig

STATE_FORMAT = 1
_COUNTERS = ("requests", "errors", "n", "sum", "sumsq", "w", "wy", "w2", "w2y", "w2y2")


@dataclass(frozen=True)
class Assignment:
    variant: str
    target: dict          # {"version": int} or {"model": str}
    propensity: float     # P(this variant) under the weights in force
    sticky: bool          # True when a key decided it (same key -> same variant)


def unit_hash(salt: str, key: str) -> float:
    """sha256(salt + key), first 8 bytes big-endian, as a uniform number in [0, 1)."""
    digest = hashlib.sha256((salt + key).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


class Experiment:
    def __init__(self, config: ExperimentConfig, state: dict | None = None, rng_seed=None,
                 clock=time.time):
        self.config = config
        self._names = [v.name for v in config.variants]
        self._targets = {v.name: v.target_dict() for v in config.variants}
        self._lock = threading.Lock()
        self._rng = np.random.default_rng(rng_seed)
        self._clock = clock  # stage_seconds only; injectable for tests
        self._arms = {n: dict.fromkeys(_COUNTERS, 0.0) for n in self._names}
        self._stage, self._stage_started = 0, clock()
        self._stage_counts = dict.fromkeys(self._names, 0)
        self._aborted: str | None = None
        self._bandit = None
        if config.mode == "bandit":
            b = config.bandit
            self._bandit = Bandit(self._names, b.algorithm, b.epsilon, b.min_share)
        if state:
            self._load(state)

    # ---- assignment ----

    def assign(self, key: str | None) -> Assignment:
        with self._lock:
            if self._bandit is not None:
                arm, p = self._bandit.choose(self._rng)
                return Assignment(arm, dict(self._targets[arm]), p, False)
            self._advance()
            sticky = bool(key)
            u = unit_hash(self.config.salt, key) if sticky else float(self._rng.random())
            weights = self._weights()
            if self.config.mode == "canary":
                control, canary = self._names
                name = canary if u < weights[canary] else control
            else:
                name, acc = self._names[-1], 0.0  # the last takes any rounding remainder
                for n in self._names:
                    acc += weights[n]
                    if u < acc:
                        name = n
                        break
            return Assignment(name, dict(self._targets[name]), weights[name], sticky)

    def current_weights(self) -> dict:
        """Split weights, the canary ramp's stage (all to the control after an abort), or the
        bandit policy's probabilities with the min_share floor."""
        with self._lock:
            self._advance()
            return self._weights()

    def _weights(self) -> dict:
        mode = self.config.mode
        if mode == "bandit":
            return self._bandit.probabilities()
        if mode == "canary":
            share = 0.0 if self._aborted else self.config.canary.stages[self._stage]
            return {self._names[0]: 1.0 - share, self._names[1]: share}
        return self.config.weights()

    # ---- outcomes ----

    def _arm(self, variant: str) -> dict:
        arm = self._arms.get(variant)
        if arm is None:
            raise InputError(f"[experiments] {self.config.name}: unknown variant {variant!r} "
                             f"(variants: {', '.join(self._names)})")
        return arm

    def record_request(self, variant: str, error: bool = False) -> None:
        """One served request of `variant` (error: it failed): SRM counts, the canary's error
        rate and its ramp (stage_requests counts every variant's requests in the stage)."""
        with self._lock:
            arm = self._arm(variant)
            arm["requests"] += 1
            arm["errors"] += bool(error)
            if self.config.mode == "canary":
                self._stage_counts[variant] += 1
                self._check_abort()
                self._advance()

    def feedback(self, variant: str, value: float, propensity: float) -> None:
        """One outcome (0/1 for a binary metric) of a request assigned with `propensity`."""
        try:
            value, propensity = float(value), float(propensity)
        except (TypeError, ValueError):
            raise InputError(f"[experiments] feedback value and propensity must be numbers, got "
                             f"{value!r}, {propensity!r}") from None
        if not math.isfinite(value):
            raise InputError(f"[experiments] feedback value must be finite, got {value}")
        if self.config.metric_type == "binary" and value not in (0.0, 1.0):
            raise InputError(f"[experiments] {self.config.name}: metric "
                             f"{self.config.metric_name!r} is binary: value must be 0 or 1, "
                             f"got {value}")
        if not 0 < propensity <= 1:
            raise InputError(f"[experiments] propensity must be in (0, 1], got {propensity}")
        with self._lock:
            arm = self._arm(variant)
            w = 1.0 / propensity
            arm["n"] += 1
            arm["sum"] += value
            arm["sumsq"] += value * value
            arm["w"] += w
            arm["wy"] += w * value
            arm["w2"] += w * w
            arm["w2y"] += w * w * value
            arm["w2y2"] += w * w * value * value
            if self._bandit is not None:
                self._bandit.update(variant, value)

    # ---- canary ramp ----

    def _check_abort(self) -> None:
        c = self.config.canary
        if self._aborted or c.max_error_rate is None:
            return
        arm = self._arms[self._names[1]]
        n, errors = int(arm["requests"]), int(arm["errors"])
        if n < c.min_requests or errors <= c.max_error_rate * n:
            return
        p = stats.error_rate_exceeds(errors, n, c.max_error_rate)
        if p < c.abort_alpha:
            self._aborted = (f"canary error rate {errors / n:.4f} ({errors}/{n}) is above "
                             f"max_error_rate {c.max_error_rate} (one-sided binomial p={p:.2g})")
            self._new_stage()

    def _advance(self) -> None:
        c = self.config.canary
        if c is None or self._aborted or self._stage >= len(c.stages) - 1:
            return
        if c.stage_seconds is not None:
            due = self._clock() - self._stage_started >= c.stage_seconds
        else:
            due = sum(self._stage_counts.values()) >= c.stage_requests
        if due:  # one stage at a time: each lasts at least its requests or seconds
            self._stage += 1
            self._new_stage()

    def _new_stage(self) -> None:
        self._stage_started = self._clock()
        self._stage_counts = dict.fromkeys(self._names, 0)

    # ---- state and report ----

    def state(self) -> dict:
        with self._lock:
            return self._state()

    def _state(self) -> dict:
        out = {"format": STATE_FORMAT, "experiment": self.config.name, "mode": self.config.mode,
               "variants": {n: dict(a) for n, a in self._arms.items()}}
        if self.config.mode == "canary":
            out["canary"] = {"stage": self._stage, "stage_started": self._stage_started,
                             "stage_counts": dict(self._stage_counts), "aborted": self._aborted}
        if self._bandit is not None:  # its statistics are the variants' own: only the cache
            out["bandit"] = {"cached": self._bandit.state()["cached"]}
        return out

    def _load(self, state: dict) -> None:
        """Counters of the variants the config still has; new variants start at zero."""
        try:
            if state.get("format") != STATE_FORMAT:
                raise ValueError(f"format {state.get('format')!r}, expected {STATE_FORMAT}")
            for name, saved in state["variants"].items():
                if name in self._arms:
                    self._arms[name] = {k: float(saved.get(k, 0.0)) for k in _COUNTERS}
            can = state.get("canary")
            if can and self.config.mode == "canary":
                self._stage = min(int(can["stage"]), len(self.config.canary.stages) - 1)
                self._stage_started = float(can["stage_started"])
                counts = can.get("stage_counts") or {}
                self._stage_counts = {n: int(counts.get(n, 0)) for n in self._names}
                self._aborted = can.get("aborted") or None
            if self._bandit is not None:
                cached = (state.get("bandit") or {}).get("cached")
                self._bandit.load_state({"cached": cached,
                                         "arms": {n: {k: a[k] for k in ("n", "sum", "sumsq")}
                                                  for n, a in self._arms.items()}})
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            raise ModelError(f"[experiments] {self.config.name}: saved state is unreadable "
                             f"({type(e).__name__}: {e}); remove it to start over") from None

    def report(self) -> dict:
        """The analysis as JSON-ready data; see ember.experiments.report."""
        with self._lock:
            self._advance()
            state, weights = self._state(), self._weights()
        return report_mod.build(self.config, state, weights)
