"""Experiment.report(): the analysis of one experiment, from its config and state alone.

Order of the verdict: a canary abort, then a sample ratio mismatch (the traffic itself is wrong),
then no plan, then fewer outcomes than planned in some variant (no winner is declared before
every variant reaches the planned n), then the comparison against the control (first variant):
- split: the fixed-horizon test (pooled z with a Newcombe CI for binary, Welch for numeric);
- canary and bandit: traffic was allocated adaptively, so the fixed-horizon test is not valid;
  each arm gets a Hajek IPW estimate of its mean over all traffic and differences get normal CIs;
  a canary is compared with the control, a bandit names its best arm only when that arm's lead
  over every other arm is significant.
More than two variants: Bonferroni over the comparisons (config.test_alpha, also in the plan).
Undefined numbers are None, so the result is strict JSON.
"""

from __future__ import annotations

import math

from ember.experiments import stats

ADAPTIVE_NOTE = ("traffic was allocated adaptively ({why}): the fixed-horizon test is not valid "
                 "for it; the estimates are inverse-propensity weighted (Hajek) per arm")
MIN_SRM_EXPECTED = 5  # chi-square needs about 5 expected requests per variant


def _f(x):
    """float, or None for nan/inf (strict JSON)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _ci(ci):
    return [_f(ci[0]), _f(ci[1])]


def _mean_var(a):
    n = a["n"]
    if n <= 0:
        return None, None
    mean = a["sum"] / n
    var = max(a["sumsq"] - n * mean * mean, 0.0) / (n - 1) if n > 1 else None
    return mean, var


def _variants(cfg, state, weights):
    arms = state["variants"]
    total = sum(a["requests"] for a in arms.values())
    rows = []
    for v in cfg.variants:
        a = arms[v.name]
        mean, var = _mean_var(a)
        rows.append({
            "name": v.name, "target": v.target_dict(), "weight": _f(weights[v.name]),
            "requests": int(a["requests"]),
            "share": _f(a["requests"] / total) if total else None,
            "errors": int(a["errors"]),
            "error_rate": _f(a["errors"] / a["requests"]) if a["requests"] else None,
            "n": int(a["n"]), "mean": _f(mean),
            "sd": _f(math.sqrt(var)) if var is not None else None,
            "conversion": _f(mean) if cfg.metric_type == "binary" else None})
    return rows


def _srm(cfg, state, weights):
    names = [v.name for v in cfg.variants]
    if cfg.mode == "bandit":
        return {"checked": False, "note": "not checked: bandit weights move with every outcome"}
    if cfg.mode == "canary":
        can = state["canary"]
        if can["aborted"]:
            return {"checked": False, "note": "not checked: the canary was aborted"}
        if min(weights.values()) <= 0:
            # a control request still in flight from the last stage would read as a mismatch
            return {"checked": False, "note": "not checked: the canary has all the traffic"}
        counts = [int(can["stage_counts"][n]) for n in names]
        scope = f"within the current stage ({can['stage'] + 1}); not checked across stages"
    else:
        counts = [int(state["variants"][n]["requests"]) for n in names]
        scope = "all requests"
    w = [weights[n] for n in names]
    total = sum(counts)
    live = [x for x in w if x > 0]
    if not live or total * min(live) / sum(w) < MIN_SRM_EXPECTED:
        return {"checked": False, "note": f"too few requests ({total}) to check, {scope}"}
    res = stats.srm_check(counts, w)
    return {"checked": True, "statistic": _f(res.statistic), "p": _f(res.p),
            "mismatch": res.mismatch, "observed": dict(zip(names, counts)),
            "expected_weights": dict(zip(names, w)), "alpha": 0.001, "note": scope}


def _fixed_tests(cfg, arms):
    names = [v.name for v in cfg.variants]
    ctrl, alpha, out = arms[names[0]], cfg.test_alpha, []
    for name in names[1:]:
        a = arms[name]
        if cfg.metric_type == "binary":
            r = stats.two_proportion_ztest(ctrl["sum"], ctrl["n"], a["sum"], a["n"], alpha)
            row = {"method": "two-proportion z test (pooled), Newcombe hybrid score CI"}
        else:
            m1, v1 = _mean_var(ctrl)
            m2, v2 = _mean_var(a)
            if v1 is None or v2 is None:
                out.append({"variant": name, "vs": names[0], "method": "Welch t test",
                            "note": "needs >= 2 outcomes per variant"})
                continue
            r = stats.welch_ttest(m1, v1, ctrl["n"], m2, v2, a["n"], alpha)
            row = {"method": "Welch t test", "df": _f(r.df)}
        row.update(variant=name, vs=names[0], statistic=_f(r.statistic), p=_f(r.p),
                   diff=_f(r.diff), ci=_ci(r.ci), alpha=alpha,
                   significant=bool(r.p is not None and r.p < alpha))
        out.append(row)
    return out


def _ipw(cfg, arms):
    names, alpha = [v.name for v in cfg.variants], cfg.test_alpha
    est = {}
    for n in names:
        a = arms[n]
        est[n] = stats.ipw_estimate(a["wy"], a["w"], a["n"], a["w2"], a["w2y"], a["w2y2"], alpha)
    rows = [{"variant": n, "mean": _f(e.mean), "se": _f(e.se), "ci": _ci(e.ci), "n": e.n,
             "n_eff": _f(e.n_eff)} for n, e in est.items()]
    diffs = []
    for ref in names:  # every ordered pair: the verdict needs best-vs-each (bandit)
        for n in names:
            if n == ref or not (math.isfinite(est[n].se) and math.isfinite(est[ref].se)):
                continue
            d, ci, p = stats.diff_interval(est[n].mean, est[n].se, est[ref].mean, est[ref].se,
                                           alpha)
            diffs.append({"variant": n, "vs": ref, "diff": _f(d), "ci": _ci(ci), "p": _f(p),
                          "significant": bool(math.isfinite(p) and p < alpha)})
    return rows, diffs


def _fmt_diff(d, level):
    lo, hi = d["ci"]
    ci = "CI n/a" if lo is None else f"{level} CI {lo:+.4g}..{hi:+.4g}"
    return f"{d['diff']:+.4g}, {ci}, p={d['p']:.3g}" if d["p"] is not None else "n/a"


def _compare(cfg, rows):
    """Verdict lines for comparisons against the control (split, canary)."""
    level = f"{100 * (1 - cfg.test_alpha):.4g}%"
    control, parts, any_sig = cfg.variants[0].name, [], False
    for d in rows:
        if d.get("diff") is None:
            parts.append(f"{d['variant']} vs {control}: not computable")
            continue
        if d["significant"]:
            any_sig = True
            word = "better" if d["diff"] > 0 else "worse"
            parts.append(f"{d['variant']} {word} than {control} ({_fmt_diff(d, level)})")
        else:
            parts.append(f"{d['variant']} vs {control}: no significant difference "
                         f"({_fmt_diff(d, level)})")
    return "; ".join(parts), "significant" if any_sig else "no_significant_difference"


def _best_arm(cfg, ipw_rows, diffs):
    level = f"{100 * (1 - cfg.test_alpha):.4g}%"
    ok = [r for r in ipw_rows if r["mean"] is not None]
    if not ok:
        return "no outcomes yet", "insufficient_data"
    best = max(ok, key=lambda r: r["mean"])["variant"]
    vs = [d for d in diffs if d["variant"] == best]
    if vs and all(d["significant"] for d in vs) and len(vs) == len(cfg.variants) - 1:
        worst = min(vs, key=lambda d: d["diff"])
        return (f"{best} is best by IPW; its smallest lead is over {worst['vs']} "
                f"({_fmt_diff(worst, level)})"), "significant"
    return (f"no arm is significantly best yet by IPW (highest estimate: {best})",
            "no_significant_difference")


def build(cfg, state, weights) -> dict:
    arms = state["variants"]
    planned = cfg.planned_n()
    out = {"experiment": cfg.name, "mode": cfg.mode, "key": cfg.key,
           "metric": {"type": cfg.metric_type, "name": cfg.metric_name},
           "alpha": cfg.test_alpha, "planned_n": planned,
           "variants": _variants(cfg, state, weights), "srm": _srm(cfg, state, weights),
           "notes": []}
    if cfg.mode == "canary":
        c, can = cfg.canary, state["canary"]
        canary = arms[cfg.variants[1].name]
        out["canary"] = {
            "stage": can["stage"] + 1, "stages": list(c.stages),
            "share": weights[cfg.variants[1].name],
            "stage_requests": sum(can["stage_counts"].values()),
            "advance_after": (f"{c.stage_requests} requests" if c.stage_seconds is None
                              else f"{c.stage_seconds:g} s"),
            "max_error_rate": c.max_error_rate, "aborted": bool(can["aborted"]),
            "abort_reason": can["aborted"],
            "canary_error_rate": _f(canary["errors"] / canary["requests"])
            if canary["requests"] else None}
    if cfg.mode == "bandit":
        b = cfg.bandit
        out["bandit"] = {"algorithm": b.algorithm, "epsilon": b.epsilon, "min_share": b.min_share,
                         "policy": dict(weights)}
    if cfg.mode == "split":
        out["tests"] = _fixed_tests(cfg, arms)
    else:
        why = "a canary ramp" if cfg.mode == "canary" else "a bandit"
        out["notes"].append(ADAPTIVE_NOTE.format(why=why))
        if cfg.mode == "canary" and weights[cfg.variants[0].name] <= 0 and not can["aborted"]:
            out["notes"].append("the canary has all the traffic: the control's IPW estimate "
                                "covers only earlier stages (biased if outcomes drift in time)")
        out["ipw"], diffs = _ipw(cfg, arms)
        out["ipw_diffs"] = diffs
    out["verdict"], out["decision"] = _verdict(cfg, out, planned)
    return out


def _verdict(cfg, out, planned):
    if cfg.mode == "canary" and out["canary"]["aborted"]:
        return (f"abort: {out['canary']['abort_reason']}; all traffic back to "
                f"{cfg.variants[0].name}"), "abort"
    if out["srm"].get("mismatch"):
        return (f"sample ratio mismatch (p={out['srm']['p']:.2g}): assignment or logging is "
                "broken; do not trust the comparison"), "srm_mismatch"
    if planned is None:
        return ("no verdict: add [experiment.plan] (mde and baseline_rate or sd) to fix the "
                "sample size in advance"), "no_plan"
    low = min(out["variants"], key=lambda v: v["n"])
    if low["n"] < planned:
        return (f"insufficient data (n={low['n']} for {low['name']}, planned {planned} "
                "per variant)"), "insufficient_data"
    if cfg.mode == "split":
        return _compare(cfg, out["tests"])
    if cfg.mode == "canary":
        control = cfg.variants[0].name
        rows = [d for d in out["ipw_diffs"] if d["vs"] == control]
        if not rows:
            return "IPW comparison not computable", "insufficient_data"
        text, decision = _compare(cfg, rows)
        return "IPW: " + text, decision
    return _best_arm(cfg, out["ipw"], out["ipw_diffs"])
