"""`ember experiment report|plan`: the parser, the HTTP fetch (a mock transport, no server) and
the text table."""

import argparse
import json

import httpx
import numpy as np
import pytest

from ember.errors import EmberError, InputError
from ember.experiments import Experiment, ExperimentConfig
from ember.experiments import cli


def _parser():
    p = argparse.ArgumentParser(prog="ember")
    cli.add_parser(p.add_subparsers(dest="command"))
    return p


def _report(mode="split"):
    d = {"name": "exp1", "mode": mode, "plan": {"baseline_rate": 0.1, "mde": 0.05},
         "variants": [{"name": "A", "version": 1}, {"name": "B", "version": 2}]}
    exp = Experiment(ExperimentConfig.from_dict(d, "m"), rng_seed=0)
    rng = np.random.default_rng(0)
    for i in range(300):
        a = exp.assign(f"u{i}")
        exp.record_request(a.variant, error=i % 50 == 0)
        exp.feedback(a.variant, float(rng.random() < 0.2), a.propensity)
    return dict(exp.report(), model="ranker", weights=exp.current_weights())


def test_plan_prints_the_sample_size(capsys):
    args = _parser().parse_args(["experiment", "plan", "--baseline-rate", "0.1", "--mde", "0.02"])
    assert args.fn(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("3841 outcomes per variant, 7682 in all")
    args = _parser().parse_args(["experiment", "plan", "--sd", "1", "--mde", "0.5"])
    args.fn(args)
    assert capsys.readouterr().out.startswith("63 outcomes per variant")
    for bad in (["--mde", "0.02"], ["--baseline-rate", "0.1", "--sd", "1", "--mde", "0.1"],
                ["--baseline-rate", "0.99", "--mde", "0.02"]):
        args = _parser().parse_args(["experiment", "plan", *bad])
        with pytest.raises(InputError, match=r"^\[experiments\]"):
            args.fn(args)


def test_fetch_report_gets_the_experiment_route():
    rep = _report()
    seen = []

    def handler(request):
        seen.append(request)
        return httpx.Response(200, json=rep)

    got = cli.fetch_report("http://h:8000/", "my model", api_key="k",
                           transport=httpx.MockTransport(handler))
    assert got == json.loads(json.dumps(rep))
    assert seen[0].url.raw_path == b"/v2/models/my%20model/experiment"  # the name is quoted
    assert seen[0].headers["authorization"] == "Bearer k"


def test_fetch_report_errors_say_why():
    def missing(request):
        return httpx.Response(404, json={"error": "[experiments] model 'm' has no [experiment] "
                                                  "section"})

    with pytest.raises(EmberError, match="HTTP 404.*no \\[experiment\\] section"):
        cli.fetch_report("http://h", "m", transport=httpx.MockTransport(missing))

    def down(request):
        raise httpx.ConnectError("refused")

    with pytest.raises(EmberError, match=r"^\[experiments\] GET http://h/.*cannot reach the server"):
        cli.fetch_report("http://h", "m", transport=httpx.MockTransport(down))


@pytest.mark.parametrize("mode", ["split", "canary", "bandit"])
def test_format_report_shows_verdict_and_numbers(mode):
    rep = _report(mode)
    text = cli.format_report(rep)
    lines = text.splitlines()
    assert lines[0].startswith(f"experiment exp1 ({mode}; binary metric 'conversion'")
    assert lines[1] == f"verdict: {rep['verdict']}"
    assert "insufficient data" in lines[1]
    row = next(ln for ln in lines if ln.startswith("A "))
    a = rep["variants"][0]
    assert str(a["requests"]) in row and f"{a['mean']:.4g}" in row and "version 1" in row
    assert ("fixed-horizon tests" in text) == (mode == "split")
    assert ("IPW (Hajek)" in text) == (mode != "split")
    if mode == "canary":
        assert "canary: stage 1/5" in text


def test_report_command_prints_table_or_json(monkeypatch, capsys):
    rep = _report()
    monkeypatch.setattr(cli, "fetch_report", lambda url, model, key: rep)
    args = _parser().parse_args(["experiment", "report", "--model", "ranker"])
    assert args.fn(args) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith("verdict: ")
    args = _parser().parse_args(["experiment", "report", "--model", "ranker", "--json"])
    args.fn(args)
    assert json.loads(capsys.readouterr().out) == rep
