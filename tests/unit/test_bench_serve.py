"""`ember bench serve`: its parsing helpers, and a short sweep against a fake streaming server
(FastAPI + uvicorn on a free local port) that fails some requests on purpose."""

import argparse
import asyncio
import json
import socket
import sys
import threading
import time

import numpy as np
import pytest

pytest.importorskip("httpx", reason="bench serve needs httpx (the serving extras)")
fastapi = pytest.importorskip("fastapi", reason="the fake server needs fastapi")
uvicorn = pytest.importorskip("uvicorn", reason="the fake server needs uvicorn")
prom = pytest.importorskip("prometheus_client", reason="bench serve parses /metrics with it")

from ember.serve import bench  # noqa: E402

EXPOSITION = """\
# HELP ember_generation_tokens_total Tokens generated.
# TYPE ember_generation_tokens_total counter
ember_generation_tokens_total{model="a",version="1"} 100.0
ember_generation_tokens_total{model="a",version="2"} 20.0
ember_generation_tokens_total{model="b",version="1"} 7.0
ember_generation_tokens_created{model="a",version="1"} 1.7e9
# HELP ember_prompt_tokens_total Prompt tokens.
# TYPE ember_prompt_tokens_total counter
ember_prompt_tokens_total{model="a",version="1"} 300.0
# HELP other_total Something else.
# TYPE other_total counter
other_total{model="a"} 5.0
"""


def test_percentiles(rng):
    values = rng.standard_normal(101) * 10 + 50
    got = bench.percentiles(values, (50, 90, 99))
    want = np.percentile(values, [50, 90, 99])
    assert list(got) == ["p50", "p90", "p99"]
    np.testing.assert_allclose(list(got.values()), want)
    assert bench.percentiles([3.0]) == {"p50": 3.0, "p90": 3.0, "p99": 3.0}
    assert bench.percentiles([]) == {"p50": None, "p90": None, "p99": None}


def test_parse_sse_line():
    assert bench.parse_sse_line('data: {"choices": [{"text": "hi"}]}\n') == \
        {"choices": [{"text": "hi"}]}
    assert bench.parse_sse_line('data:{"a": 1}\r') == {"a": 1}
    assert bench.parse_sse_line("data: [DONE]") is bench.DONE
    for ignored in ("", "\n", ": keep-alive", "event: message", "id: 3", "retry: 10"):
        assert bench.parse_sse_line(ignored) is None
    for bad in ('data: {"a": ', "data: [1, 2]", "data: nope"):
        with pytest.raises(ValueError, match=r"\[bench\]"):
            bench.parse_sse_line(bad)


def test_scrape_tokens():
    assert bench.scrape_tokens(EXPOSITION, "a") == (300.0, 120.0)
    assert bench.scrape_tokens(EXPOSITION, "b") == (0.0, 7.0)
    assert bench.scrape_tokens(EXPOSITION, None) == (300.0, 127.0)
    assert bench.scrape_tokens("# HELP x y\n# TYPE x gauge\nx 1.0\n", "a") == (None, None)
    # A labelled counter nothing has touched yet: family, no samples -> 0, not missing.
    reg = prom.CollectorRegistry()
    prom.Counter("ember_generation_tokens", "g", ["model", "version"], registry=reg)
    assert bench.scrape_tokens(prom.generate_latest(reg).decode(), "a") == (None, 0.0)


def _fake_app(state):
    """POST /v1/completions streaming max_tokens chunks. The prompt's first word picks failures
    (~1 in 5 an HTTP 500, ~1 in 8 a malformed stream), so the bench's probe ("Hello") never
    fails, whatever ran before. Tokens are counted only for well-formed streams, before they
    start, so the server-side count is exact for the bench to check."""
    from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
    app = fastapi.FastAPI()
    reg = prom.CollectorRegistry()
    gen = prom.Counter("ember_generation_tokens", "g", ["model", "version"], registry=reg)
    prompt = prom.Counter("ember_prompt_tokens", "p", ["model", "version"], registry=reg)
    gen.labels(model="other", version="1").inc(1000)   # a second model the bench must ignore

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": "fake", "object": "model"}]}

    @app.post("/v1/completions")
    @app.post("/v1/chat/completions")
    async def completions(request: fastapi.Request):
        body = await request.json()
        state["calls"] += 1
        chat = request.url.path.endswith("/chat/completions")
        text = body["messages"][-1]["content"] if chat else body["prompt"]
        first = text.split()[0]
        n = bench._WORDS.index(first) + 1 if first in bench._WORDS else 1
        if n % 5 == 0:
            state["http_500"] += 1
            return JSONResponse({"error": {"message": "boom"}}, status_code=500)
        k, n_prompt = body["max_tokens"], len(text.split())
        assert body["stream"] and body["ignore_eos"] and body["temperature"] == 0

        async def events():
            if n % 8 == 0:
                state["malformed"] += 1
                yield 'data: {"choices": [{"text": \n\n'
                return
            gen.labels(model=body["model"], version="1").inc(k)
            prompt.labels(model=body["model"], version="1").inc(n_prompt)
            yield ": comment\n\n"
            if chat:        # a role-only first delta carries no text: not the first token
                role = {"choices": [{"delta": {"role": "assistant"}}]}
                yield "data: " + json.dumps(role) + "\n\n"
            for i in range(k):
                await asyncio.sleep(0.003)
                c = {"delta": {"content": f" t{i}"}} if chat else {"text": f" t{i}"}
                yield "data: " + json.dumps({"choices": [{"index": 0, **c}]}) + "\n\n"
            usage = {"prompt_tokens": n_prompt, "completion_tokens": k}
            yield "data: " + json.dumps({"choices": [], "usage": usage}) + "\n\n"
            yield "data: [DONE]\n\n"
        return StreamingResponse(events(), media_type="text/event-stream")

    @app.get("/metrics")
    async def metrics():
        if not state["metrics"]:
            return PlainTextResponse("not here", status_code=404)
        return PlainTextResponse(prom.generate_latest(reg).decode())

    return app


@pytest.fixture(scope="module")
def fake_server():
    state = {"calls": 0, "http_500": 0, "malformed": 0, "metrics": True}
    # Server and bench share one process: at the default 5 ms GIL switch interval the server's
    # 3 ms-spaced chunks would reach the bench in bursts, and ITL would measure the GIL.
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(_fake_app(state), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "fake server did not start"
        time.sleep(0.01)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}", state
    server.should_exit = True
    thread.join(5)
    sock.close()
    sys.setswitchinterval(switch)


def _args(*argv):
    p = argparse.ArgumentParser()
    bench.add_arguments(p)
    return p.parse_args(list(argv))


def test_run_bench_fake_server(fake_server):
    url, state = fake_server
    calls0, fails0 = state["calls"], state["http_500"] + state["malformed"]
    report = bench.run_bench(_args("--url", url + "/v1/", "--rates", "40,inf", "--requests", "16",
                                   "--max-tokens", "6", "--prompt-tokens", "12", "--seed", "3"))
    assert report["model"] == "fake" and report["throughput_source"] == "server"
    rows = report["results"]
    assert [r["rate"] for r in rows] == [40, "inf"]
    assert state["calls"] - calls0 == 1 + 32          # the probe, then 16 per rate
    failed = sum(r["failed"] for r in rows)
    assert failed == state["http_500"] + state["malformed"] - fails0 > 0
    errors = " ".join(e for r in rows for e in r["errors"])
    assert "HTTP 500" in errors and "malformed SSE data" in errors
    for r in rows:
        assert r["completed"] + r["failed"] == 16 == len(r["records"])
        ok = [x for x in r["records"] if x["ok"]]
        assert all(x["output_tokens"] == 6 and x["prompt_tokens"] == 12 for x in ok)
        assert all(0 < x["ttft_ms"] < x["e2e_ms"] for x in ok)
        assert all(len(x["itl_ms"]) == 5 and min(x["itl_ms"]) >= 0
                   and x["ttft_ms"] + sum(x["itl_ms"]) <= x["e2e_ms"] for x in ok)
        assert r["ttft_ms"]["p50"] < r["e2e_ms"]["p50"]
        assert r["server_tokens"] == {"generated": 6 * len(ok), "prompt": 12 * len(ok)}
        assert r["client_tokens"]["generated"] == 6 * len(ok)
        assert r["output_tok_per_s_server"] == pytest.approx(6 * len(ok) / r["wall_s"])
        assert r["wrong_length"] == 0
    # At 40 req/s streams rarely overlap, so ITL is the server's 3 ms sleep (at inf, 16 streams
    # in one process make it noisy).
    assert 2.0 < rows[0]["itl_ms"]["p50"] < 20.0
    # Poisson arrivals at 40 req/s spread over time; inf sends all at once.
    assert max(x["arrival_s"] for x in rows[0]["records"]) > 0.1
    assert max(x["arrival_s"] for x in rows[1]["records"]) == 0
    table = bench.format_table(report)
    assert "TTFT ms p50/p90/p99" in table and "HTTP 500" in table
    json.dumps(report, allow_nan=False)              # the report is strict JSON


def test_cli_chat_without_metrics(fake_server, tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="--plot needs matplotlib")
    from ember.cli import main
    url, state = fake_server
    state["metrics"] = False
    try:
        rc = main(["bench", "serve", "--url", url, "--model", "fake", "--endpoint", "chat",
                   "--rates", "100,inf", "--requests", "6", "--max-tokens", "3",
                   "--concurrency", "2", "--json", str(tmp_path / "r.json"),
                   "--plot", str(tmp_path / "r.png")])
    finally:
        state["metrics"] = True
    assert rc == 0 and (tmp_path / "r.png").stat().st_size > 1000
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["throughput_source"] == "client" and "client-side" in report["note"]
    for row in report["results"]:
        assert row["server_tokens"] is None and row["output_tok_per_s_server"] is None
        assert row["completed"] > 0 and row["client_tokens"]["generated"] == 3 * row["completed"]
        assert all(len(x["itl_ms"]) == 2 for x in row["records"] if x["ok"])
    assert "client-side" in capsys.readouterr().out


def test_cli_routing():
    from ember.cli import build_parser, main
    with pytest.raises(SystemExit) as e:
        main(["bench", "serve", "--help"])
    assert e.value.code == 0
    args = build_parser().parse_args(["bench", "model.onnx"])   # `ember bench MODEL` unchanged
    assert args.command == "bench" and args.model == "model.onnx"


def test_unreachable_server_fails_fast():
    from ember.errors import EmberError
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()                                      # nothing listens there now
    with pytest.raises(EmberError, match=r"\[bench\] cannot list models"):
        bench.run_bench(_args("--url", f"http://127.0.0.1:{port}", "--requests", "2"))
    with pytest.raises(EmberError, match=r"--rates"):
        bench.run_bench(_args("--rates", "0,2"))
