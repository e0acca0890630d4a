"""ExperimentConfig: the [experiment] table of a model's config.toml, checked and frozen.

    [experiment]
    name = "ranker-v3"            # required; salt defaults to it (a new salt reshuffles users)
    key = "header:x-user-id"      # the sticky key: header:<name> or body:user (OpenAI `user`)
    mode = "split"                # split | canary | bandit
    variants = [{name = "A", version = 1, weight = 0.5}, {name = "B", version = 2, weight = 0.5}]
    metric = {type = "binary", name = "conversion"}   # or numeric; higher is better
    plan = {alpha = 0.05, power = 0.8, baseline_rate = 0.10, mde = 0.02}  # numeric: sd, not rate
    [experiment.canary]   stages, stage_requests | stage_seconds, abort_if = {max_error_rate}
    [experiment.bandit]   algorithm, epsilon, min_share

Every error is a ModelError naming `where` and the key. Frozen dataclasses compare by value, so
the server can tell whether a reloaded table changed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ember.errors import ModelError
from ember.experiments import stats
from ember.experiments.bandit import ALGORITHMS

MODES = ("split", "canary", "bandit")
METRICS = ("binary", "numeric")
DEFAULT_STAGES = (0.01, 0.05, 0.25, 0.5, 1.0)


@dataclass(frozen=True)
class Variant:
    name: str
    target: tuple           # (("version", 3),) or (("model", "other-model"),): hashable
    weight: float | None    # split mode: normalised share; None elsewhere

    def target_dict(self) -> dict:
        return dict(self.target)


@dataclass(frozen=True)
class Canary:
    stages: tuple = DEFAULT_STAGES
    stage_requests: int | None = 1000
    stage_seconds: float | None = None
    max_error_rate: float | None = None
    min_requests: int = 100      # canary requests before the abort rule may fire
    abort_alpha: float = 0.05    # ... and the excess must be significant (exact binomial)


@dataclass(frozen=True)
class BanditSpec:
    algorithm: str
    epsilon: float = 0.1
    min_share: float = 0.05


@dataclass(frozen=True)
class Plan:
    alpha: float
    power: float
    mde: float
    baseline_rate: float | None = None   # binary
    sd: float | None = None              # numeric


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class _Table:
    """Takes keys out of one TOML table with type checks; done() rejects the rest."""

    def __init__(self, data, where: str):
        if not isinstance(data, dict):
            raise ModelError(f"[experiments] {where} must be a table, not {data!r}")
        self.data, self.where, self.seen = data, where, set()

    def bad(self, key, what) -> ModelError:
        return ModelError(f"[experiments] {self.where}: {key} must be {what}, "
                          f"not {self.data[key]!r}")

    def get(self, key, default=None, check=None, what=""):
        self.seen.add(key)
        if key not in self.data:
            return default
        v = self.data[key]
        if check is not None and not check(v):
            raise self.bad(key, what)
        return v

    def done(self) -> None:
        left = sorted(set(self.data) - self.seen)
        if left:
            raise ModelError(f"[experiments] {self.where}: unknown key(s) {', '.join(left)} "
                             f"(known: {', '.join(sorted(self.seen))})")


def _in01(v):
    return _num(v) and 0 < v < 1


@dataclass(frozen=True)
class ExperimentConfig:
    name: str
    salt: str
    key: str
    mode: str
    variants: tuple
    metric_type: str = "binary"
    metric_name: str = "conversion"
    canary: Canary | None = None
    bandit: BanditSpec | None = None
    plan: Plan | None = None

    @classmethod
    def from_dict(cls, d: dict, where: str = "[experiment]") -> "ExperimentConfig":
        t = _Table(d, where)
        name = t.get("name", None, lambda v: isinstance(v, str) and v.strip(), "a non-empty string")
        if name is None:
            raise ModelError(f"[experiments] {where}: name is required")
        salt = t.get("salt", name, lambda v: isinstance(v, str), "a string")
        key = t.get("key", "header:x-user-id", _key_ok, '"header:<name>" or "body:user"')
        if key.startswith("header:"):
            key = key.lower()  # HTTP header names are case-insensitive
        mode = t.get("mode", "split", lambda v: v in MODES, "one of " + ", ".join(MODES))
        m = _Table(t.get("metric", {}), f"{where}.metric")
        mtype = m.get("type", "binary", lambda v: v in METRICS, "binary or numeric")
        mname = m.get("name", "conversion", lambda v: isinstance(v, str) and v, "a string")
        m.done()
        variants = _variants(t.get("variants", None), mode, f"{where}.variants")
        canary = _canary(t.get("canary", None), mode, f"{where}.canary")
        bandit = _bandit(t.get("bandit", None), mode, mtype, len(variants), f"{where}.bandit")
        plan = _plan(t.get("plan", None), mtype, f"{where}.plan")
        t.done()
        return cls(name, salt, key, mode, variants, mtype, mname, canary, bandit, plan)

    def weights(self) -> dict:
        """The configured split weights (normalised); canary and bandit weights move: see
        Experiment.current_weights()."""
        return {v.name: v.weight for v in self.variants}

    @property
    def test_alpha(self) -> float:
        """alpha per comparison: Bonferroni over the k - 1 comparisons against the control."""
        alpha = self.plan.alpha if self.plan else 0.05
        return alpha / max(1, len(self.variants) - 1)

    def planned_n(self) -> int | None:
        """Outcomes each variant needs before a verdict (None without a plan)."""
        p = self.plan
        if p is None:
            return None
        if self.metric_type == "binary":
            return stats.sample_size_proportions(p.baseline_rate, p.baseline_rate + p.mde,
                                                 self.test_alpha, p.power)
        return stats.sample_size_means(p.mde, p.sd, self.test_alpha, p.power)


def _key_ok(v) -> bool:
    return isinstance(v, str) and (v == "body:user" or (v.startswith("header:") and len(v) > 7))


def _variants(raw, mode, where) -> tuple:
    if not isinstance(raw, list) or not 2 <= len(raw) <= 8:
        raise ModelError(f"[experiments] {where} must list 2 to 8 variants, not {raw!r}")
    if mode == "canary" and len(raw) != 2:
        raise ModelError(f"[experiments] {where}: canary mode takes exactly 2 variants (the "
                         f"control first, then the canary), not {len(raw)}")
    out, names = [], set()
    for i, item in enumerate(raw):
        v = _Table(item, f"{where}[{i}]")
        name = v.get("name", None, lambda x: isinstance(x, str) and x, "a non-empty string")
        if name is None:
            raise ModelError(f"[experiments] {v.where}: name is required")
        if name in names:
            raise ModelError(f"[experiments] {v.where}: duplicate variant name {name!r}")
        names.add(name)
        version = v.get("version", None, lambda x: isinstance(x, int) and not isinstance(x, bool)
                        and x >= 0, "a version number (int >= 0)")
        model = v.get("model", None, lambda x: isinstance(x, str) and x, "a model name")
        if (version is None) == (model is None):
            raise ModelError(f"[experiments] {v.where}: give exactly one of version or model")
        weight = v.get("weight", None, lambda x: _num(x) and x > 0, "a number > 0")
        if weight is not None and mode != "split":
            raise ModelError(f"[experiments] {v.where}: weight applies to mode = \"split\" only "
                             f"({mode} moves traffic by itself)")
        v.done()
        out.append((name, ("version", version) if model is None else ("model", model), weight))
    given = [w for _, _, w in out if w is not None]
    if mode == "split" and given and len(given) != len(out):
        raise ModelError(f"[experiments] {where}: give every variant a weight, or none (equal)")
    total = sum(given) if given else float(len(out))
    return tuple(Variant(n, (tgt,), (w if given else 1.0) / total if mode == "split" else None)
                 for n, tgt, w in out)


def _canary(raw, mode, where) -> Canary | None:
    if mode != "canary":
        if raw is not None:
            raise ModelError(f"[experiments] {where} applies to mode = \"canary\" only")
        return None
    t = _Table(raw if raw is not None else {}, where)
    stages = t.get("stages", list(DEFAULT_STAGES), lambda v: isinstance(v, list) and v and all(
        _num(s) and 0 < s <= 1 for s in v) and all(a < b for a, b in zip(v, v[1:])),
        "an increasing list of canary shares in (0, 1]")
    reqs = t.get("stage_requests", None, lambda v: isinstance(v, int) and not isinstance(v, bool)
                 and v > 0, "a positive integer")
    secs = t.get("stage_seconds", None, lambda v: _num(v) and v > 0, "a positive number")
    if reqs is not None and secs is not None:
        raise ModelError(f"[experiments] {where}: give stage_requests or stage_seconds, not both")
    a = _Table(t.get("abort_if", {}), f"{where}.abort_if")
    rate = a.get("max_error_rate", None, _in01, "a rate in (0, 1)")
    min_req = a.get("min_requests", 100, lambda v: isinstance(v, int) and not isinstance(v, bool)
                    and v >= 1, "an integer >= 1")
    alpha = a.get("alpha", 0.05, _in01, "a number in (0, 1)")
    a.done()
    t.done()
    if secs is None and reqs is None:
        reqs = 1000
    return Canary(tuple(float(s) for s in stages), reqs, secs, rate, min_req, alpha)


def _bandit(raw, mode, mtype, k, where) -> BanditSpec | None:
    if mode != "bandit":
        if raw is not None:
            raise ModelError(f"[experiments] {where} applies to mode = \"bandit\" only")
        return None
    t = _Table(raw if raw is not None else {}, where)
    default = "thompson" if mtype == "binary" else "gaussian_thompson"
    algo = t.get("algorithm", default, lambda v: v in ALGORITHMS, "one of " + ", ".join(ALGORITHMS))
    if algo == "thompson" and mtype != "binary":
        raise ModelError(f"[experiments] {where}: thompson is Beta-Bernoulli and needs a binary "
                         "metric; use gaussian_thompson or epsilon_greedy for numeric outcomes")
    eps = t.get("epsilon", 0.1, lambda v: _num(v) and 0 <= v <= 1, "a number in [0, 1]")
    floor = t.get("min_share", 0.05, lambda v: _num(v) and 0 <= v < 1 / k,
                  f"a share in [0, 1/{k}) for {k} arms")
    t.done()
    return BanditSpec(algo, float(eps), float(floor))


def _plan(raw, mtype, where) -> Plan | None:
    if raw is None:
        return None
    t = _Table(raw, where)
    alpha = t.get("alpha", 0.05, _in01, "a number in (0, 1)")
    power = t.get("power", 0.8, _in01, "a number in (0, 1)")
    mde = t.get("mde", None, lambda v: _num(v) and v > 0, "a positive number (absolute effect)")
    rate = t.get("baseline_rate", None, _in01, "a rate in (0, 1)")
    sd = t.get("sd", None, lambda v: _num(v) and v > 0, "a positive number")
    t.done()
    if mde is None:
        raise ModelError(f"[experiments] {where}: mde (the minimum detectable effect) is required")
    if mtype == "binary":
        if rate is None or sd is not None:
            raise ModelError(f"[experiments] {where}: a binary metric plans with baseline_rate "
                             "(and no sd)")
        if rate + mde >= 1:
            raise ModelError(f"[experiments] {where}: baseline_rate + mde = {rate + mde} "
                             "must stay below 1")
    elif sd is None or rate is not None:
        raise ModelError(f"[experiments] {where}: a numeric metric plans with sd (and no "
                         "baseline_rate)")
    return Plan(float(alpha), float(power), float(mde), rate, sd)
