"""`ember serve` with SmolLM2 through the official openai client and raw httpx: completions,
chat, streaming, sampling options, errors, a 64-stream load test, disconnects, metrics."""
from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from serve_util import ServerProc, metric_value

openai = pytest.importorskip("openai", reason="the openai client is not installed")

MODEL = "smollm2-135m"
PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time",
           "The three primary colors are", "In 1492,", "Water boils at", "My favourite food is",
           "The quick brown fox"]


@pytest.fixture(scope="module")
def server(smollm2_path, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "llm.log"
    s = ServerProc([smollm2_path, "--name", MODEL, "--max-num-seqs", "32"], log_path=str(log))
    yield s
    assert s.stop() in (0, -15), s.log()   # uvicorn re-raises SIGTERM once it has drained


@pytest.fixture(scope="module")
def engine(smollm2_path):
    import ember
    with ember.Engine(smollm2_path) as e:
        yield e


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)


def test_completion_matches_engine(client, engine):
    r = client.completions.create(model=MODEL, prompt=PROMPTS[0], max_tokens=12, temperature=0)
    want = engine.generate(PROMPTS[0], max_tokens=12)[0]
    assert r.choices[0].text == want.text
    assert r.choices[0].finish_reason == "length"
    assert r.usage.prompt_tokens == want.usage["prompt_tokens"]
    assert r.usage.completion_tokens == 12


def test_batch_of_prompts_and_token_prompts(client, engine):
    r = client.completions.create(model=MODEL, prompt=PROMPTS[1:3], max_tokens=6, temperature=0)
    want = engine.generate(PROMPTS[1:3], max_tokens=6)
    assert [c.text for c in sorted(r.choices, key=lambda c: c.index)] == [w.text for w in want]
    ids = engine.tokenizer.encode(PROMPTS[3])
    r = client.completions.create(model=MODEL, prompt=ids, max_tokens=6, temperature=0)
    assert r.choices[0].text == engine.generate(ids, max_tokens=6)[0].text


def test_chat_and_stream_match_engine(client, engine):
    msgs = [{"role": "user", "content": "Name a fruit."}]
    want = engine.chat(msgs, max_tokens=10)
    r = client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=10, temperature=0)
    assert r.choices[0].message.content == want.text
    assert r.choices[0].message.role == "assistant"
    stream = client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=10,
                                            temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    parts, usage, finish = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            parts.append(c.delta.content or "")
            finish = c.finish_reason or finish
    assert "".join(parts) == want.text
    assert usage.completion_tokens == want.usage["completion_tokens"]
    assert finish in ("stop", "length")


def test_stop_seed_and_logprobs(client):
    r = client.completions.create(model=MODEL, prompt="1, 2, 3, 4,", max_tokens=30, temperature=0,
                                  stop=[" 7"])
    assert r.choices[0].finish_reason == "stop" and " 7" not in r.choices[0].text
    a, b = (client.completions.create(model=MODEL, prompt=PROMPTS[3], max_tokens=12,
                                      temperature=1.0, top_p=0.9, seed=1234).choices[0].text
            for _ in range(2))
    assert a == b
    r = client.completions.create(model=MODEL, prompt=PROMPTS[4], max_tokens=4, temperature=0,
                                  logprobs=3)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == 4 and len(lp.token_logprobs) == 4
    assert all(len(t) <= 3 for t in lp.top_logprobs) and all(x <= 0 for x in lp.token_logprobs)
    assert "".join(lp.tokens) == r.choices[0].text
    r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}],
                                       max_tokens=3, temperature=0, logprobs=True, top_logprobs=2)
    content = r.choices[0].logprobs.content
    assert len(content) >= 1 and all(len(c.top_logprobs) == 2 for c in content)


def test_models_endpoint(client):
    ids = [m.id for m in client.models.list().data]
    assert ids == [MODEL]


def test_errors_name_the_field(server, client):
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="no-such-model", prompt="x", max_tokens=2)
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=MODEL, prompt="x", max_tokens=0)
    assert "max_tokens" in str(e.value)
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=MODEL, prompt="x", temperature=7)
    assert "temperature" in str(e.value)
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=MODEL, prompt="x", n=3)
    assert "n" in e.value.body["param"]
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=MODEL, prompt="word " * 9000, max_tokens=2)
    assert "max_model_len" in str(e.value)
    r = httpx.post(server.url + "/v1/completions", content=b"{not json",
                   headers={"content-type": "application/json"})
    assert r.status_code == 400 and "error" in r.json()
    r = httpx.post(server.url + "/v1/completions", json={"prompt": "x"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "model"
    r = httpx.post(server.url + "/v1/chat/completions", json={"model": MODEL, "messages": []})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages"
    big = b'{"model": "x", "prompt": "' + b"a" * (65 << 20) + b'"}'
    r = httpx.post(server.url + "/v1/completions", content=big,
                   headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == 413 and "limit" in r.json()["error"]["message"]


def _stream_text(url, prompt, max_tokens):
    async def go(client):
        body = {"model": MODEL, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
                "stream": True}
        text = []
        async with client.stream("POST", url + "/v1/completions", json=body) as r:
            assert r.status_code == 200
            async for line in r.aiter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    text += [c["text"] for c in json.loads(line[6:])["choices"]]
        return "".join(text)
    return go


def test_load_64_concurrent_streams(server, engine):
    """64 streams at once, three rounds: every one completes with exactly the tokens it gets
    alone (greedy; ember's results do not depend on the batch)."""
    alone = {p: c.text for p, c in zip(PROMPTS, engine.generate(PROMPTS, max_tokens=16))}

    async def main():
        limits = httpx.Limits(max_connections=128)
        async with httpx.AsyncClient(timeout=300, limits=limits) as client:
            for _ in range(3):
                prompts = [PROMPTS[i % len(PROMPTS)] for i in range(64)]
                got = await asyncio.gather(*(_stream_text(server.url, p, 16)(client) for p in prompts))
                assert [g == alone[p] for g, p in zip(got, prompts)] == [True] * 64
    asyncio.run(main())
    text = server.metrics()
    assert metric_value(text, "ember_requests_total", endpoint="completions", status="200") >= 192
    assert metric_value(text, "ember_request_errors_total", model=MODEL) == 0


def test_disconnect_mid_stream_frees_the_sequence(server):
    with httpx.Client(timeout=60) as c:
        body = {"model": MODEL, "prompt": "Count to a thousand:", "max_tokens": 2000,
                "ignore_eos": True, "stream": True}
        with c.stream("POST", server.url + "/v1/completions", json=body) as r:
            for i, _ in enumerate(r.iter_lines()):
                if i > 6:
                    break
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        text = server.metrics()
        if (metric_value(text, "ember_llm_running_sequences", model=MODEL) == 0
                and metric_value(text, "ember_requests_in_flight", model=MODEL) == 0):
            break
        time.sleep(0.2)
    assert metric_value(text, "ember_llm_running_sequences", model=MODEL) == 0
    assert metric_value(text, "ember_kv_cache_usage_ratio", model=MODEL) == 0
    assert metric_value(text, "ember_generation_tokens_total", model=MODEL) > 0


def test_disconnect_before_a_full_response_cancels(server):
    """A non-streamed request whose client leaves is cancelled in the runner too."""
    import socket
    body = json.dumps({"model": MODEL, "prompt": "Count to a thousand:", "max_tokens": 3000,
                       "ignore_eos": True}).encode()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        deadline = time.monotonic() + 10
        while metric_value(server.metrics(), "ember_llm_running_sequences", model=MODEL) == 0:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    deadline = time.monotonic() + 10
    while metric_value(server.metrics(), "ember_llm_running_sequences", model=MODEL) != 0:
        assert time.monotonic() < deadline, "the generation was not cancelled"
        time.sleep(0.1)
    assert metric_value(server.metrics(), "ember_kv_cache_usage_ratio", model=MODEL) == 0


def test_metrics_cover_the_requests(server, client):
    before = server.metrics()
    r = client.completions.create(model=MODEL, prompt=PROMPTS[5], max_tokens=5, temperature=0)
    after = server.metrics()
    delta = lambda name, **kw: metric_value(after, name, **kw) - metric_value(before, name, **kw)
    assert delta("ember_generation_tokens_total", model=MODEL) == r.usage.completion_tokens
    assert delta("ember_prompt_tokens_total", model=MODEL) == r.usage.prompt_tokens
    assert delta("ember_time_to_first_token_seconds_count", model=MODEL) == 1
    assert delta("ember_queue_time_seconds_count", model=MODEL) == 1    # from the runner
    assert 0 <= delta("ember_queue_time_seconds_sum", model=MODEL) <= delta(
        "ember_time_to_first_token_seconds_sum", model=MODEL)
    assert delta("ember_inter_token_latency_seconds_count", model=MODEL) >= 1
    assert delta("ember_request_latency_seconds_count", model=MODEL, endpoint="completions") == 1
    assert metric_value(after, "ember_model_version_state", model=MODEL, state="serving") == 1


def test_auth_timeout_and_graceful_shutdown(smollm2_path, tmp_path):
    s = ServerProc([smollm2_path, "--name", MODEL, "--api-key", "sekret", "--request-timeout", "1",
                    "--max-queue-size", "2"], log_path=str(tmp_path / "auth.log"))
    try:
        assert httpx.get(s.url + "/v1/models").status_code == 401
        assert httpx.get(s.url + "/v2/health/live").status_code == 200
        c = openai.OpenAI(base_url=s.url + "/v1", api_key="sekret", max_retries=0)
        assert c.completions.create(model=MODEL, prompt="Hi", max_tokens=2).usage.completion_tokens == 2
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=s.url + "/v1", api_key="wrong", max_retries=0).models.list()
        with pytest.raises(openai.APIStatusError) as e:
            c.completions.create(model=MODEL, prompt="Hi", max_tokens=4000,
                                 extra_body={"ignore_eos": True})
        assert e.value.status_code == 504
        # Past max_queue_size: 429 with Retry-After, at once.
        async def flood():
            async with httpx.AsyncClient(timeout=30, headers={"Authorization": "Bearer sekret"}) as h:
                body = {"model": MODEL, "prompt": "Hi", "max_tokens": 30, "ignore_eos": True}
                return await asyncio.gather(*(h.post(s.url + "/v1/completions", json=body)
                                              for _ in range(6)))
        rs = asyncio.run(flood())
        busy = [r for r in rs if r.status_code == 429]
        assert len(busy) >= 4 and all(int(r.headers["retry-after"]) >= 1 for r in busy)
        assert "max_queue_size" in busy[0].json()["error"]["message"]
        # SIGTERM while a stream runs: the stream still completes, then the server exits 0.
        body = {"model": MODEL, "prompt": "Tell me a story.", "max_tokens": 40, "ignore_eos": True,
                "stream": True}
        lines = []
        with httpx.Client(timeout=60, headers={"Authorization": "Bearer sekret"}) as h:
            with h.stream("POST", s.url + "/v1/completions", json=body) as r:
                for line in r.iter_lines():
                    if not lines:
                        s.proc.send_signal(15)
                    lines.append(line)
        assert lines[-2:] == ["data: [DONE]", ""] or "data: [DONE]" in lines
        assert s.proc.wait(60) in (0, -15)
    finally:
        s.stop()
