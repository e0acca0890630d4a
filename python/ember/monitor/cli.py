"""`ember monitor report --url URL --model NAME [--version V] --out report.html`: fetches a served
model's drift report (GET {url}/v2/models/{name}[/versions/{v}]/drift?histograms=1) and writes it
as a self-contained HTML file."""

from __future__ import annotations

import json
import os
import sys

from ember.errors import EmberError


def add_parser(sub):
    p = sub.add_parser("monitor", help="drift monitoring of served models (report)")
    msub = p.add_subparsers(dest="monitor_cmd", metavar="COMMAND", required=True)
    r = msub.add_parser("report", help="fetch a model's drift report from a server as HTML")
    r.add_argument("--url", required=True, help="server base URL, e.g. http://localhost:8000")
    r.add_argument("--model", required=True, help="model name")
    r.add_argument("--version", default=None, help="model version (default: the server's pick)")
    r.add_argument("--out", default="report.html", help="HTML file to write (default report.html)")
    r.add_argument("--json", metavar="OUT.json", default=None, help="also write the raw report")
    r.add_argument("--timeout", type=float, default=30.0, help="HTTP timeout in s (default 30)")
    r.add_argument("--api-key", default=os.environ.get("EMBER_API_KEY"),
                   help="the server's API key (default: $EMBER_API_KEY)")
    r.set_defaults(fn=cmd_report)
    return p


def drift_url(url: str, model: str, version: str | None) -> str:
    from urllib.parse import quote
    base = f"{url.rstrip('/')}/v2/models/{quote(model, safe='')}"
    if version is not None:
        base += f"/versions/{quote(str(version), safe='')}"
    return base + "/drift?histograms=1"


def fetch_report(url: str, model: str, version: str | None = None, timeout: float = 30.0,
                 transport=None, api_key: str | None = None) -> dict:
    """The server's drift report; transport: an httpx transport (tests use httpx.MockTransport)."""
    from ember.serve.client import request_json
    target = drift_url(url, model, version)
    rep = request_json("GET", target, area="monitor", api_key=api_key, timeout=timeout,
                       transport=transport)
    if "features" not in rep:
        raise EmberError(f"[monitor] GET {target}: the reply is not a drift report "
                         "(no 'features' key)")
    return rep


def cmd_report(args, transport=None):
    from ember.monitor.html import write_report
    rep = fetch_report(args.url, args.model, args.version, args.timeout, transport,
                       getattr(args, "api_key", None))
    title = f"ember drift report: {args.model}" + (f" v{args.version}" if args.version else "")
    write_report(rep, rep.get("histograms"), args.out, title=title)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rep, f, indent=1)
    alerts = rep.get("alerts") or []
    print(f"{args.out}: status {rep.get('status')}, {len(rep['features'])} features"
          + (f", drifted: {', '.join(alerts)}" if alerts else ""), file=sys.stderr)
    return 0
