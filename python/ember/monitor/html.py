"""A drift report as one self-contained HTML file: the summary, the ranked features and, for the
top drifted features, the baseline vs current distribution on the rule's bins (matplotlib PNGs
embedded as base64). Every string from the report is escaped: feature names come from clients.
"""
from __future__ import annotations

import base64
import html
import io
import math
import time

TOP_PLOTS = 12
_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:left;font-size:13px}th{background:#f3f3f3}.drift{background:#fde2e2}
.ok{color:#176f2c}.bad{color:#b00020;font-weight:bold}.muted{color:#777}
figure{display:inline-block;margin:0.5em}figcaption{font-size:13px}"""


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def _num(x, digits=4) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        if not math.isfinite(x):
            return _e(x)
        return f"{x:.{digits}g}"
    return _e(x)


def _histogram_source(monitor_or_histograms):
    """A function name -> (edges, ref, cur) or None, from a Monitor or report["histograms"]."""
    src = monitor_or_histograms
    if src is None:
        return lambda name: None
    if hasattr(src, "histograms"):
        def from_monitor(name):
            try:
                return src.histograms(name)
            except KeyError:
                return None
        return from_monitor
    return lambda name: ((src[name]["edges"], src[name]["ref"], src[name]["cur"])
                         if name in src else None)


def _labels(ftype: str, edges: list) -> list[str]:
    if ftype == "categorical":
        return [str(c)[:20] for c in edges]
    n = len(edges) - 1
    return [f"[{edges[i]:.3g}, {edges[i + 1]:.3g}{']' if i == n - 1 else ')'}" for i in range(n)]


def _figure_png(name: str, ftype: str, hist) -> str:
    """Base64 PNG of baseline vs current proportions per bin."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg   # no pyplot: no global state
    from matplotlib.figure import Figure

    edges, ref, cur = hist
    labels = _labels(ftype, edges)
    n = len(ref)
    rs, cs = max(sum(ref), 1), max(sum(cur), 1)
    fig = Figure(figsize=(6.0, 3.2), dpi=80)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    x = list(range(n))
    ax.bar([i - 0.2 for i in x], [v / rs for v in ref], width=0.4, label="baseline")
    ax.bar([i + 0.2 for i in x], [v / cs for v in cur], width=0.4, label="current")
    ax.set_xticks(x)
    ax.set_xticklabels(labels[:n], rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("share of values")
    ax.set_title(name, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _table(headers: list[str], rows: list[list[str]], row_class=None) -> str:
    """Cells must already be escaped (they may hold markup)."""
    out = ["<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in headers) + "</tr>"]
    for i, r in enumerate(rows):
        cls = f' class="{row_class[i]}"' if row_class and row_class[i] else ""
        out.append(f"<tr{cls}>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _summary(rep: dict) -> str:
    status = rep.get("status", "?")
    cls = "bad" if status == "drift" else "ok" if status == "ok" else "muted"
    when = rep.get("time")
    rows = [["status", f'<span class="{cls}">{_e(status)}</span>'],
            ["kind", _e(rep.get("kind", "?"))],
            ["window (rows)", _num(rep.get("window"))],
            ["baseline (rows)", _num(rep.get("baseline"))],
            ["features", _num(len(rep.get("features", [])))],
            ["alerts", _e(", ".join(rep.get("alerts", [])) or "none")]]
    if isinstance(when, (int, float)):
        rows.append(["computed", _e(time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(when)))])
    return _table(["", ""], rows)


def _test(tests: dict, name: str, key: str) -> str:
    t = tests.get(name)
    if t is None:
        return "-"
    return _num(t.get(key) if isinstance(t, dict) else t)


def _brief(summary: dict | None, ftype: str) -> str:
    if not summary or not summary.get("n"):
        return "-"
    if ftype == "categorical":
        top = summary.get("top", {})
        return _e(", ".join(f"{k}: {v:.0%}" for k, v in list(top.items())[:3]))
    return f"mean {_num(summary.get('mean'))}, sd {_num(summary.get('std'))}"


def _features(rep: dict) -> str:
    headers = ["#", "feature", "type", "drifted", "score", "KS D", "KS p_adj", "chi2 p_adj",
               "PSI", "JS", "KL", "baseline", "current", "note"]
    rows, classes = [], []
    for i, f in enumerate(rep.get("features", []), 1):
        t, ftype = f.get("tests", {}), f.get("type", "")
        rows.append([str(i), _e(f.get("name")), _e(ftype), "yes" if f.get("drifted") else "no",
                     _num(f.get("score"), 3), _test(t, "ks", "statistic"),
                     _test(t, "ks", "p_adj"), _test(t, "chi2", "p_adj"), _test(t, "psi", ""),
                     _test(t, "js", ""), _test(t, "kl", ""),
                     _brief(f.get("ref_summary"), ftype), _brief(f.get("cur_summary"), ftype),
                     _e(f.get("skipped", ""))])
        classes.append("drift" if f.get("drifted") else "")
    return _table(headers, rows, classes)


def _concept(rep: dict) -> str:
    c = rep.get("concept")
    if not c:
        return "<p class=\"muted\">No feedback received.</p>"
    rows = []
    for side in ("reference", "current"):
        m = c.get(side, {})
        rows.append([_e(side)] + [_num(m.get(k)) for k in ("n", "accuracy", "brier", "ece", "mae")])
    parts = [f"<p>mode: {_e(c.get('mode'))}; drifted: {'yes' if c.get('drifted') else 'no'}; "
             f"pending predictions: {_num(c.get('pending'))}</p>",
             _table(["", "n", "accuracy", "Brier", "ECE", "MAE"], rows)]
    for name, t in (c.get("tests") or {}).items():
        parts.append(f"<p>{_e(name)}: " + ", ".join(f"{_e(k)} = {_num(v)}" for k, v in t.items())
                     + "</p>")
    if c.get("skipped"):
        parts.append(f"<p class=\"muted\">{_e(c['skipped'])}</p>")
    return "\n".join(parts)


def _plots(rep: dict, source) -> str:
    feats = [f for f in rep.get("features", []) if "skipped" not in f]
    chosen = [f for f in feats if f.get("drifted")][:TOP_PLOTS]
    title = "Top drifted features"
    if not chosen:
        chosen, title = feats[:6], "Top-ranked features (none drifted)"
    figs = []
    for f in chosen:
        hist = source(f["name"])
        if not hist or not hist[1]:
            continue
        png = _figure_png(f["name"], f.get("type", "numeric"), hist)
        figs.append(f'<figure><img alt="{_e(f["name"])}" src="data:image/png;base64,{png}">'
                    f'<figcaption>{_e(f["name"])} (score {_num(f.get("score"), 3)})'
                    "</figcaption></figure>")
    if not figs:
        return ""
    return f"<h2>{_e(title)}</h2>\n" + "\n".join(figs)


def render(report: dict, monitor_or_histograms=None, title: str = "ember drift report") -> str:
    cfg = report.get("config") or {}
    cfg_rows = [[_e(k), _e(v)] for k, v in cfg.items()]
    body = [f"<h1>{_e(title)}</h1>", "<h2>Summary</h2>", _summary(report),
            _plots(report, _histogram_source(monitor_or_histograms)),
            "<h2>Features (ranked by drift score)</h2>", _features(report),
            "<h2>Concept drift</h2>", _concept(report),
            "<h2>Method</h2>", f"<p>{_e(report.get('rule', ''))}</p>",
            f"<p>{_e(report.get('binning', ''))}</p>",
            "<h2>Configuration</h2>", _table(["key", "value"], cfg_rows)]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def write_report(report: dict, monitor_or_histograms, path: str, title: str = "ember drift report"):
    """Writes the HTML report; monitor_or_histograms: a Monitor, report["histograms"], or None."""
    text = render(report, monitor_or_histograms, title)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path
