"""The HTML drift report and `ember monitor report` (against a mock HTTP transport)."""
import argparse
import base64
import json
import re

import pytest

from ember.errors import EmberError
from ember.monitor import Monitor, MonitorConfig
from ember.monitor import cli as monitor_cli
from ember.monitor.html import write_report


def _drifted_monitor(rng):
    cfg = MonitorConfig.from_dict({"window": 300, "baseline_requests": 300})
    mon = Monitor(cfg, "graph", [], [])
    for i in range(600):
        shift = 1.0 if i >= 300 else 0.0
        mon.observe({"age": float(rng.normal(shift)), "income<b>": float(rng.normal()),
                     "city": str(rng.choice(["paris", "oslo"] + (["<script>x"] if shift else [])))})
    return mon


def _pngs(text):
    return re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)


@pytest.mark.parametrize("source", ["monitor", "histograms"])
def test_html_report(tmp_path, rng, source):
    mon = _drifted_monitor(rng)
    rep = mon.report(histograms=True)
    json.loads(json.dumps(rep, allow_nan=False))
    out = tmp_path / "r.html"
    write_report(rep, mon if source == "monitor" else rep["histograms"], str(out))
    text = out.read_text()
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert text.count("<table") == text.count("</table>") >= 3
    for name in ("age", "city", "income&lt;b&gt;", "&lt;script&gt;x"):
        assert name in text
    assert "<script" not in text and "income<b>" not in text
    pngs = _pngs(text)
    assert len(pngs) == len(rep["alerts"]) >= 2
    assert all(base64.b64decode(p).startswith(b"\x89PNG") for p in pngs)


def test_html_report_without_histograms(tmp_path):
    rep = Monitor(MonitorConfig.from_dict({}), "llm", [], []).report()
    write_report(rep, None, str(tmp_path / "e.html"))
    text = (tmp_path / "e.html").read_text()
    assert "insufficient data" in text and not _pngs(text)


def _args(tmp_path, **kw):
    p = argparse.ArgumentParser()
    monitor_cli.add_parser(p.add_subparsers())
    argv = ["monitor", "report", "--url", "http://srv:8000/", "--model", "my model",
            "--out", str(tmp_path / "out.html")]
    for k, v in kw.items():
        argv += [f"--{k}", v]
    return p.parse_args(argv)


def test_cli_report(tmp_path, rng, capsys):
    import httpx
    rep = _drifted_monitor(rng).report(histograms=True)
    seen = []

    def handler(request):
        seen.append(str(request.url))
        return httpx.Response(200, json=rep)

    args = _args(tmp_path, version="2", json=str(tmp_path / "raw.json"))
    assert args.fn(args, transport=httpx.MockTransport(handler)) == 0
    assert seen == ["http://srv:8000/v2/models/my%20model/versions/2/drift?histograms=1"]
    text = (tmp_path / "out.html").read_text()
    assert "age" in text and len(_pngs(text)) >= 2
    assert json.loads((tmp_path / "raw.json").read_text())["status"] == "drift"
    assert "status drift" in capsys.readouterr().err


def test_cli_report_errors(tmp_path):
    import httpx
    args = _args(tmp_path)
    for resp in (httpx.Response(404, text="no model"), httpx.Response(200, text="<html>"),
                 httpx.Response(200, json={"x": 1})):
        with pytest.raises(EmberError, match=r"^\[monitor\] GET http://srv:8000/v2/models/"):
            args.fn(args, transport=httpx.MockTransport(lambda r, resp=resp: resp))

    def refuse(request):
        raise httpx.ConnectError("refused")

    with pytest.raises(EmberError, match="ConnectError"):
        args.fn(args, transport=httpx.MockTransport(refuse))
    assert monitor_cli.drift_url("http://h", "m", None) == "http://h/v2/models/m/drift?histograms=1"
