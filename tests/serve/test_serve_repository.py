"""The model repository of a live `ember serve`: versions appear, change, fail, disappear and are
rolled back while requests keep flowing, and none of those requests fails."""
from __future__ import annotations

import json
import os
import shutil
import threading
import time

import httpx
import numpy as np
import pytest

from serve_util import ServerProc


def _write_model(path, version: int) -> None:
    """y = x @ W with W = version everywhere: an output tells which version answered."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    w = numpy_helper.from_array(np.full((4, 3), float(version), np.float32), "W")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "m",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])], [w])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), str(path))


def _add_version(root, name, version, writer=_write_model) -> None:
    """Copied in under a hidden name, then renamed into place (as an operator would)."""
    tmp = root / name / f".incoming-{version}"
    tmp.mkdir(parents=True)
    writer(tmp / "model.onnx", version)
    os.rename(tmp, root / name / str(version))


def _infer(client, url, name, version=None):
    path = f"/v2/models/{name}" + (f"/versions/{version}" if version else "") + "/infer"
    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 1, 1, 1]}]}
    r = client.post(url + path, json=body)
    if r.status_code != 200:
        return r.status_code, None, r.text
    out = r.json()
    return 200, out["model_version"], out["outputs"][0]["data"][0] / 4


def _wait(cond, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _serving(url, name):
    r = httpx.get(f"{url}/v2/models/{name}")
    return r.json().get("versions") if r.status_code == 200 else None


def _states(url):
    return {(r["name"], r["version"]): r["state"] for r in httpx.post(url + "/v2/repository/index").json()}


class _Load:
    """Infers in a loop on a background thread until stopped; keeps every outcome."""

    def __init__(self, url, name):
        self.results, self._stop = [], threading.Event()
        self._t = threading.Thread(target=self._run, args=(url, name), daemon=True)
        self._t.start()

    def _run(self, url, name):
        with httpx.Client(timeout=30) as c:
            while not self._stop.is_set():
                self.results.append(_infer(c, url, name))

    def stop(self):
        self._stop.set()
        self._t.join(30)
        return self.results


@pytest.fixture
def repo_server(tmp_path):
    root = tmp_path / "repo"
    _add_version(root, "m", 1)
    state = tmp_path / "state" / "state.json"
    s = ServerProc(["--model-repository", str(root), "--poll-interval", "0.2",
                    "--state-path", str(state)], log_path=str(tmp_path / "serve.log"))
    yield root, s, state
    s.stop()


def test_new_versions_replace_old_under_load_and_rollback(repo_server):
    root, s, state = repo_server
    assert _serving(s.url, "m") == ["1"]
    load = _Load(s.url, "m")
    time.sleep(0.5)
    _add_version(root, "m", 2)
    _wait(lambda: _serving(s.url, "m") == ["2"], what="version 2 serving")
    time.sleep(0.5)
    results = load.stop()
    assert results and all(r[0] == 200 for r in results), [r for r in results if r[0] != 200][:3]
    assert all(float(v) == w for _, v, w in results)      # each answer came from the version it names
    assert {v for _, v, _ in results} == {"1", "2"}
    assert _states(s.url)[("m", "1")] == "retired"

    # Rollback: back to 1 under load; the hold is kept outside the model tree.
    load = _Load(s.url, "m")
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-m", "ember", "rollback", "m", "--url", s.url],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "now serving version 1" in out.stdout, out.stderr
    time.sleep(0.6)   # a few polls: the watcher must not bring 2 back
    results = load.stop()
    assert all(r[0] == 200 for r in results)
    assert _serving(s.url, "m") == ["1"]
    assert json.loads(state.read_text())["held_back/m"] == [2]
    assert not any(p.name.endswith(".json") for p in root.rglob("*"))
    # An explicit load clears the hold: 2 serves again.
    assert httpx.post(f"{s.url}/v2/repository/models/m/load").json()["serving"] == ["2"]


def test_broken_version_fails_alone_and_removal_falls_back(repo_server):
    root, s, _ = repo_server

    def garbage(path, version):
        path.write_bytes(b"\x08\x07not an onnx model")
    _add_version(root, "m", 3, garbage)
    _wait(lambda: _states(s.url).get(("m", "3")) == "failed", what="version 3 failed")
    with httpx.Client() as c:
        assert _infer(c, s.url, "m")[:2] == (200, "1")
        assert _infer(c, s.url, "m", 3)[0] == 503
    assert httpx.get(s.url + "/v2/health/ready").status_code == 200

    _add_version(root, "m", 4)
    _wait(lambda: _serving(s.url, "m") == ["4"], what="version 4 serving")
    shutil.rmtree(root / "m" / "4")
    _wait(lambda: _serving(s.url, "m") == ["1"], what="fallback to version 1")


def test_unload_load_and_config_change(repo_server):
    root, s, _ = repo_server
    _add_version(root, "m", 2)
    _wait(lambda: _serving(s.url, "m") == ["2"], what="version 2 serving")
    assert httpx.post(f"{s.url}/v2/repository/models/m/unload").status_code == 200
    with httpx.Client() as c:
        status = _infer(c, s.url, "m")[0]
    assert status == 503
    assert httpx.post(f"{s.url}/v2/repository/models/nope/load").status_code == 404
    assert httpx.post(f"{s.url}/v2/repository/models/m/load").json()["serving"] == ["2"]

    (root / "m" / "config.toml").write_text("[version_policy]\nall = true\n")
    _wait(lambda: _serving(s.url, "m") == ["1", "2"], what="both versions serving")
    with httpx.Client() as c:
        assert _infer(c, s.url, "m", 1)[1:] == ("1", 1.0)
        assert _infer(c, s.url, "m", 2)[1:] == ("2", 2.0)
    # A broken config keeps what serves.
    (root / "m" / "config.toml").write_text("[version_policy]\nlatst = 1\n")
    time.sleep(1.8)
    assert _serving(s.url, "m") == ["1", "2"]


def test_llm_hot_reload_does_not_break_streams(tmp_path, smollm2_path):
    import asyncio
    root = tmp_path / "repo"
    (root / "lm" / "1").mkdir(parents=True)
    os.symlink(smollm2_path, root / "lm" / "1" / "model.gguf")
    s = ServerProc(["--model-repository", str(root), "--poll-interval", "0.2",
                    "--state-path", str(tmp_path / "state.json")], log_path=str(tmp_path / "lm.log"))
    try:
        async def stream(client, prompt):
            body = {"model": "lm", "prompt": prompt, "max_tokens": 48, "temperature": 0,
                    "ignore_eos": True, "stream": True}
            parts, done = [], False
            async with client.stream("POST", s.url + "/v1/completions", json=body) as r:
                assert r.status_code == 200
                async for line in r.aiter_lines():
                    if line == "data: [DONE]":
                        done = True
                    elif line.startswith("data: "):
                        parts += [c["text"] for c in json.loads(line[6:])["choices"]]
            return done, "".join(parts)

        async def main():
            async with httpx.AsyncClient(timeout=120) as c:
                first = asyncio.gather(*(stream(c, f"Story number {i}:") for i in range(8)))
                await asyncio.sleep(0.5)
                tmp = root / "lm" / ".new"
                tmp.mkdir()
                os.symlink(smollm2_path, tmp / "model.gguf")
                os.rename(tmp, root / "lm" / "2")
                got = await first
                while _serving(s.url, "lm") != ["2"]:
                    await asyncio.sleep(0.2)
                again = await asyncio.gather(*(stream(c, f"Story number {i}:") for i in range(8)))
                return got, again
        got, again = asyncio.run(main())
        assert all(done for done, _ in got) and all(done for done, _ in again)
        assert [t for _, t in got] == [t for _, t in again]   # same weights: same greedy text
        assert _states(s.url)[("lm", "1")] == "retired"
    finally:
        s.stop()


def test_validation_gates_a_version(tmp_path):
    """With [validation], a version that loads but gives non-finite outputs never serves."""
    root = tmp_path / "repo"
    _add_version(root, "m", 1)
    (root / "m" / "config.toml").write_text('[validation]\nfeeds = "val.npz"\n')
    np.savez(root / "m" / "val.npz", x=np.ones((2, 4), np.float32))
    s = ServerProc(["--model-repository", str(root), "--poll-interval", "0.2",
                    "--state-path", str(tmp_path / "state.json")], log_path=str(tmp_path / "v.log"))
    try:
        assert _serving(s.url, "m") == ["1"]

        def nan_model(path, version):
            _write_model(path, version)
            import onnx
            from onnx import numpy_helper
            m = onnx.load(str(path))
            m.graph.initializer[0].CopyFrom(numpy_helper.from_array(
                np.full((4, 3), np.nan, np.float32), "W"))
            onnx.save(m, str(path))
        _add_version(root, "m", 2, nan_model)
        _wait(lambda: _states(s.url).get(("m", "2")) == "failed", what="version 2 failed validation")
        index = httpx.post(s.url + "/v2/repository/index").json()
        reason = next(r["reason"] for r in index if r["version"] == "2")
        assert "non-finite" in reason
        assert _serving(s.url, "m") == ["1"]
        _add_version(root, "m", 3)
        _wait(lambda: _serving(s.url, "m") == ["3"], what="version 3 validated and serving")
    finally:
        s.stop()
