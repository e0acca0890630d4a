"""`ember serve` with all-MiniLM-L6-v2 (ONNX): /v1/embeddings through the openai client, KServe
v2 infer with JSON and binary tensors through httpx, dynamic batching of concurrent requests
(padding along the sequence axis as the config names it), and KServe's errors."""
from __future__ import annotations

import asyncio
import json
import os
import shutil

import httpx
import numpy as np
import pytest

from serve_util import ServerProc, metric_value

MODEL = "minilm"
CONFIG = """
max_queue_size = 512
[batching]
max_batch_size = 16
max_queue_delay_ms = 5
[batching.padding]
axis = 1
mask_input = "attention_mask"
"""


@pytest.fixture(scope="module")
def repo(tmp_path_factory, minilm_path, smollm2_path):
    """A repository with MiniLM as version 1 (model.onnx beside its sentence-transformers files)
    and SmolLM2 beside it: two models, one process, one thread pool."""
    from ember.embed import find_st_folder
    root = tmp_path_factory.mktemp("repo")
    vdir = root / MODEL / "1"
    shutil.copytree(find_st_folder("minilm-l6"), vdir,
                    ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "onnx"))
    shutil.copy(minilm_path, vdir / "model.onnx")
    (root / MODEL / "config.toml").write_text(CONFIG)
    (root / "lm" / "1").mkdir(parents=True)
    os.symlink(smollm2_path, root / "lm" / "1" / "model.gguf")
    return root


@pytest.fixture(scope="module")
def server(repo, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("state")
    s = ServerProc(["--model-repository", str(repo), "--state-path", str(tmp / "state.json")],
                   log_path=str(tmp / "graph.log"))
    yield s
    assert s.stop() in (0, -15), s.log()   # uvicorn re-raises SIGTERM once it has drained


@pytest.fixture(scope="module")
def engine(minilm_path):
    import ember
    with ember.Engine("minilm-l6") as e:
        yield e


def _feeds(engine, text):
    from tokenizers import Tokenizer

    from ember.embed import find_st_folder
    tok = Tokenizer.from_file(find_st_folder("minilm-l6") + "/tokenizer.json")
    tok.no_padding()
    ids = np.array([tok.encode(text).ids], np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}


def _json_request(feeds, outputs=None, binary_out=False):
    body = {"id": "r1", "inputs": [{"name": k, "shape": list(v.shape), "datatype": "INT64",
                                    "data": v.ravel().tolist()} for k, v in feeds.items()]}
    if outputs:
        body["outputs"] = [{"name": o, "parameters": {"binary_data": binary_out}} for o in outputs]
    return body


def _binary_request(feeds, outputs):
    header = {"inputs": [{"name": k, "shape": list(v.shape), "datatype": "INT64",
                          "parameters": {"binary_data_size": v.nbytes}} for k, v in feeds.items()],
              "outputs": [{"name": o, "parameters": {"binary_data": True}} for o in outputs]}
    head = json.dumps(header).encode()
    return head + b"".join(v.tobytes() for v in feeds.values()), len(head)


def _decode_binary(resp, name):
    n = int(resp.headers["inference-header-content-length"])
    head = json.loads(resp.content[:n])
    offset = n
    for out in head["outputs"]:
        size = out["parameters"]["binary_data_size"]
        if out["name"] == name:
            return np.frombuffer(resp.content[offset:offset + size], np.float32).reshape(out["shape"])
        offset += size
    raise KeyError(name)


def test_embeddings_match_engine(server, engine):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)
    texts = ["A man is eating food.", "The weather is lovely today, isn't it?", "ok"]
    r = client.embeddings.create(model=MODEL, input=texts)
    got = np.array([d.embedding for d in sorted(r.data, key=lambda d: d.index)], np.float32)
    np.testing.assert_allclose(got, engine.embed(texts), atol=1e-6)
    assert r.usage.prompt_tokens > len(texts)
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model=MODEL, input=[""])


def test_kserve_json_and_binary_match_engine(server, engine):
    feeds = _feeds(engine, "KServe v2 carries tensors as JSON or raw bytes.")
    want = engine.run(feeds)
    r = httpx.post(f"{server.url}/v2/models/{MODEL}/infer", json=_json_request(feeds),
                   headers={"X-Request-Id": "my-id-1"})
    assert r.status_code == 200, r.text
    assert r.headers["x-request-id"] == "my-id-1"
    out = {o["name"]: o for o in r.json()["outputs"]}
    assert r.json()["model_version"] == "1" and r.json()["id"] == "r1"
    emb = np.array(out["sentence_embedding"]["data"], np.float32).reshape(out["sentence_embedding"]["shape"])
    np.testing.assert_array_equal(emb, want["sentence_embedding"])

    body, n = _binary_request(feeds, ["last_hidden_state"])
    r = httpx.post(f"{server.url}/v2/models/{MODEL}/versions/1/infer", content=body,
                   headers={"Inference-Header-Content-Length": str(n),
                            "content-type": "application/octet-stream"})
    assert r.status_code == 200, r.text
    np.testing.assert_array_equal(_decode_binary(r, "last_hidden_state"), want["last_hidden_state"])


def test_metadata_health_and_errors(server):
    u = server.url
    assert httpx.get(u + "/v2/health/live").json() == {"live": True}
    assert httpx.get(u + "/v2/health/ready").status_code == 200
    meta = httpx.get(f"{u}/v2/models/{MODEL}").json()
    assert meta["versions"] == ["1"] and {i["name"] for i in meta["inputs"]} == {
        "input_ids", "attention_mask", "token_type_ids"}
    assert meta["inputs"][0]["shape"] == [-1, -1] and meta["inputs"][0]["datatype"] == "INT64"
    assert httpx.get(f"{u}/v2/models/{MODEL}/ready").status_code == 200
    assert httpx.get(f"{u}/v2/models/nope").status_code == 404
    assert httpx.get(f"{u}/v2/models/{MODEL}/versions/7").status_code == 404
    ids = {"input_ids": np.ones((1, 4), np.int64)}
    bad = _json_request(ids)
    bad["inputs"][0]["datatype"] = "FP32"
    r = httpx.post(f"{u}/v2/models/{MODEL}/infer", json=bad)
    assert r.status_code == 400 and "input_ids" in r.json()["error"]
    bad = _json_request(ids)
    bad["inputs"][0]["data"] = bad["inputs"][0]["data"][:-1]
    r = httpx.post(f"{u}/v2/models/{MODEL}/infer", json=bad)
    assert r.status_code == 400 and "data" in r.json()["error"]
    r = httpx.post(f"{u}/v2/models/{MODEL}/infer", json=_json_request(ids))  # mask missing
    assert r.status_code == 400 and "attention_mask" in r.json()["error"]
    r = httpx.post(f"{u}/v2/models/{MODEL}/infer", content=b"{}", headers={
        "Inference-Header-Content-Length": "99"})
    assert r.status_code == 400
    r = httpx.post(f"{u}/v2/models/{MODEL}/infer", content=b"[1, 2")
    assert r.status_code == 400


def test_concurrent_requests_batch_and_match_solo(server, engine):
    texts = [("word " * n).strip() + "." for n in range(1, 25)]
    feeds = [_feeds(engine, t) for t in texts]
    solo = [engine.run(f)["sentence_embedding"] for f in feeds]
    before = server.metrics()

    async def main():
        async with httpx.AsyncClient(timeout=120) as c:
            rs = await asyncio.gather(*(c.post(f"{server.url}/v2/models/{MODEL}/infer",
                                               json=_json_request(f, ["sentence_embedding"]))
                                        for f in feeds))
        return [np.array(r.json()["outputs"][0]["data"], np.float32) for r in rs]
    got = asyncio.run(main())
    for g, s in zip(got, solo):
        np.testing.assert_allclose(g, s.ravel(), atol=1e-5)
    after = server.metrics()
    runs = (metric_value(after, "ember_batch_size_count", model=MODEL)
            - metric_value(before, "ember_batch_size_count", model=MODEL))
    rows = (metric_value(after, "ember_batch_size_sum", model=MODEL)
            - metric_value(before, "ember_batch_size_sum", model=MODEL))
    assert rows == len(texts) and runs < len(texts), (runs, rows)
    assert metric_value(after, "ember_queue_time_seconds_count", model=MODEL) >= len(texts)


def test_two_models_serve_concurrently(server, engine):
    """An LLM stream and encoder infers at the same time, in one server process."""
    feeds = _feeds(engine, "two models, one pool")
    want = engine.run(feeds)["sentence_embedding"].ravel()

    async def main():
        async with httpx.AsyncClient(timeout=120) as c:
            gen = c.post(server.url + "/v1/completions", json={
                "model": "lm", "prompt": "Hello", "max_tokens": 24, "ignore_eos": True})
            infers = [c.post(f"{server.url}/v2/models/{MODEL}/infer",
                             json=_json_request(feeds, ["sentence_embedding"])) for _ in range(8)]
            return await asyncio.gather(gen, *infers)
    gen, *infers = asyncio.run(main())
    assert gen.status_code == 200 and gen.json()["usage"]["completion_tokens"] == 24
    for r in infers:
        np.testing.assert_allclose(r.json()["outputs"][0]["data"], want, atol=1e-5)
    names = [m["id"] for m in httpx.get(server.url + "/v1/models").json()["data"]]
    assert sorted(names) == ["lm", MODEL]
