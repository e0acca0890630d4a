"""`ember experiment report` (a running server's analysis, as a table or --json) and
`ember experiment plan` (the sample size per variant, offline). Registered by ember/cli.py."""

from __future__ import annotations

import json
import os
import urllib.parse

from ember.errors import InputError


def add_parser(sub):
    p = sub.add_parser("experiment", help="A/B tests, canaries and bandits: report, plan")
    cmds = p.add_subparsers(dest="experiment_cmd", metavar="{report,plan}", required=True)
    r = cmds.add_parser("report", help="the analysis of a model's experiment on a running server",
                        description="GETs URL/v2/models/NAME/experiment and prints the verdict "
                        "and the numbers per variant.")
    r.add_argument("--url", default="http://127.0.0.1:8000", help="the server (default %(default)s)")
    r.add_argument("--model", required=True, help="the model's public name")
    r.add_argument("--json", action="store_true", help="print the report as JSON, unformatted")
    r.add_argument("--api-key", default=os.environ.get("EMBER_API_KEY"))
    r.set_defaults(fn=cmd_report)
    q = cmds.add_parser("plan", help="outcomes per variant to detect an effect (offline)",
                        description="Per-variant n for a two-sided test at --alpha and --power: "
                        "binary with --baseline-rate (pooled z test), numeric with --sd.")
    q.add_argument("--baseline-rate", type=float, help="the control's rate (binary metric)")
    q.add_argument("--sd", type=float, help="the outcome's standard deviation (numeric metric)")
    q.add_argument("--mde", type=float, required=True,
                   help="minimum detectable effect, absolute (0.02: 10%% -> 12%%)")
    q.add_argument("--alpha", type=float, default=0.05)
    q.add_argument("--power", type=float, default=0.8)
    q.add_argument("--variants", type=int, default=2,
                   help="variants including the control; > 2 splits alpha (Bonferroni)")
    q.set_defaults(fn=cmd_plan)
    return p


def fetch_report(url: str, model: str, api_key: str | None = None, transport=None) -> dict:
    from ember.serve.client import request_json
    target = f"{url.rstrip('/')}/v2/models/{urllib.parse.quote(model, safe='')}/experiment"
    return request_json("GET", target, area="experiments", api_key=api_key, transport=transport)


def cmd_report(args) -> int:
    rep = fetch_report(args.url, args.model, args.api_key)
    print(json.dumps(rep, indent=1) if args.json else format_report(rep))
    return 0


def _num(x, fmt=".4g"):
    return "-" if x is None else format(x, fmt)


def _table(header, rows) -> list:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    return ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()
            for r in [header, *rows]]


def _target(t: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in t.items())


def format_report(rep: dict) -> str:
    """The report as text: verdict first, then a table per section."""
    m = rep.get("metric", {})
    head = (f"experiment {rep.get('experiment')} ({rep.get('mode')}; {m.get('type')} metric "
            f"{m.get('name')!r}; key {rep.get('key')})")
    lines = [head, f"verdict: {rep.get('verdict')}", ""]
    rows = [[v["name"], _target(v["target"]), _num(v["weight"], ".3f"), v["requests"],
             "-" if v["share"] is None else f"{100 * v['share']:.1f}%",
             v["errors"], v["n"], _num(v["mean"]), _num(v["sd"])] for v in rep.get("variants", [])]
    lines += _table(["variant", "target", "weight", "requests", "share", "errors", "n", "mean",
                     "sd"], rows)
    planned = rep.get("planned_n")
    lines.append("")
    lines.append(f"planned n per variant: {planned if planned is not None else '- (no plan)'}"
                 f" (alpha {rep.get('alpha'):.4g} per comparison)")
    srm = rep.get("srm", {})
    if srm.get("checked"):
        lines.append(f"sample ratio: chi-square p={srm['p']:.3g} "
                     f"({'MISMATCH' if srm['mismatch'] else 'ok'}; {srm['note']})")
    else:
        lines.append(f"sample ratio: {srm.get('note', 'not checked')}")
    if "canary" in rep:
        c = rep["canary"]
        lines.append(f"canary: stage {c['stage']}/{len(c['stages'])}, share {100 * c['share']:.3g}%"
                     f", next after {c['advance_after']} ({c['stage_requests']} so far)"
                     + (", ABORTED" if c["aborted"] else ""))
    if "bandit" in rep:
        b = rep["bandit"]
        lines.append(f"bandit: {b['algorithm']}, min_share {b['min_share']}")
    if rep.get("tests"):
        lines += ["", "fixed-horizon tests against the control:"]
        lines += _table(["variant", "vs", "statistic", "p", "diff", "CI", "method"], [
            [t["variant"], t["vs"], _num(t.get("statistic")), _num(t.get("p"), ".3g"),
             _num(t.get("diff"), "+.4g"), _ci(t.get("ci")), t["method"]] for t in rep["tests"]])
    if rep.get("ipw"):
        lines += ["", "IPW (Hajek) estimates per arm:"]
        lines += _table(["variant", "mean", "se", "CI", "n", "n_eff"], [
            [r["variant"], _num(r["mean"]), _num(r["se"]), _ci(r["ci"]), r["n"],
             _num(r["n_eff"], ".1f")] for r in rep["ipw"]])
    for note in rep.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)


def _ci(ci) -> str:
    if not ci or ci[0] is None:
        return "-"
    return f"[{ci[0]:+.4g}, {ci[1]:+.4g}]"


def cmd_plan(args) -> int:
    from ember.experiments import stats
    if (args.baseline_rate is None) == (args.sd is None):
        raise InputError("[experiments] give --baseline-rate (binary) or --sd (numeric)")
    if args.variants < 2:
        raise InputError(f"[experiments] --variants must be >= 2, got {args.variants}")
    alpha = args.alpha / (args.variants - 1)
    try:
        if args.baseline_rate is not None:
            p1, p2 = args.baseline_rate, args.baseline_rate + args.mde
            n = stats.sample_size_proportions(p1, p2, alpha, args.power)
            what = f"binary: {p1:g} -> {p2:g}"
        else:
            n = stats.sample_size_means(args.mde, args.sd, alpha, args.power)
            what = f"numeric: difference {args.mde:g}, sd {args.sd:g}"
    except ValueError as e:
        raise InputError(str(e)) from None
    print(f"{n} outcomes per variant, {n * args.variants} in all ({what}; two-sided alpha "
          f"{alpha:.4g} per comparison, power {args.power:g})")
    return 0
