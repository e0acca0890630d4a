"""The production layer through a live `ember serve` and httpx: drift monitoring with alerts,
a sticky A/B split with feedback, a bandit that learns from feedback and survives a restart,
and validation that gates a version against the serving one."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import numpy as np

from serve_util import ServerProc, metric_value

F = 20   # tabular features


def _classifier(path, seed: int, version: int = 1, node_prefix: str = "") -> None:
    """A 20-feature, 3-class softmax classifier: a stand-in for a tabular model."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    w = np.random.default_rng(seed).standard_normal((F, 3)).astype(np.float32) * 0.3
    w[:, 0] += 0.01 * version      # versions differ a little
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["z"], name=node_prefix + "mm"),
         helper.make_node("Softmax", ["z"], ["probs"], axis=-1, name=node_prefix + "sm")], "clf",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", F])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(w, "W")])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), str(path))


def _version(root, name, v, **kw):
    d = root / name / str(v)
    d.mkdir(parents=True)
    _classifier(d / "model.onnx", seed=kw.pop("seed", 0), version=v, **kw)


def _infer(c, url, name, x, headers=None):
    body = {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                        "data": x.ravel().tolist()}]}
    r = c.post(f"{url}/v2/models/{name}/infer", json=body, headers=headers or {})
    assert r.status_code == 200, r.text
    return r


def _experiment_repo(tmp_path, name, versions, experiment: str):
    """A repository where every version of `name` serves, routed by this [experiment] table."""
    root = tmp_path / "repo"
    for v in versions:
        _version(root, name, v)
    (root / name / "config.toml").write_text(
        "[version_policy]\nall = true\n[experiment]\n" + experiment)
    return root


def _serve(root, tmp_path, name="serve.log"):
    return ServerProc(["--model-repository", str(root), "--poll-interval", "0.3",
                       "--state-path", str(tmp_path / "state" / "state.json")],
                      log_path=str(tmp_path / name))


class _Webhook:
    """A local HTTP endpoint that keeps the JSON bodies posted to it."""

    def __init__(self):
        import http.server
        import json
        import threading
        posts = self.posts = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                posts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def test_drift_detected_and_alerted(tmp_path):
    root = tmp_path / "repo"
    _version(root, "tab", 1)
    marker = tmp_path / "alerted"
    hook = _Webhook()
    (root / "tab" / "config.toml").write_text(f"""
[monitor]
window = 500
min_window = 200
baseline_requests = 500
check_every = 100
hook = "touch {marker}"
webhook = "{hook.url}"
""")
    s = _serve(root, tmp_path)
    rng = np.random.default_rng(7)
    try:
        with httpx.Client(timeout=60) as c:
            for _ in range(10):                     # baseline: 500 rows
                _infer(c, s.url, "tab", rng.standard_normal((50, F)).astype(np.float32))
            for _ in range(10):                     # same distribution
                _infer(c, s.url, "tab", rng.standard_normal((50, F)).astype(np.float32))
            time.sleep(1.0)
            report = c.get(f"{s.url}/v2/models/tab/drift").json()
            assert report["status"] == "ok", report["alerts"]
            # Feature 3 shifts by one sd; the alert needs alert_after (2) drifted checks in a row.
            for _ in range(60):
                x = rng.standard_normal((50, F)).astype(np.float32)
                x[:, 3] += 1.0
                _infer(c, s.url, "tab", x)
                if marker.exists():
                    break
                time.sleep(0.05)
            report = c.get(f"{s.url}/v2/models/tab/drift").json()
        assert report["status"] == "drift"
        assert "col3" in report["features"][0]["name"]        # ranked first
        assert marker.exists()                                   # the hook ran
        deadline = time.monotonic() + 10
        while not any("col3" in str(p.get("feature")) for p in hook.posts):
            assert time.monotonic() < deadline, hook.posts
            time.sleep(0.1)
        assert all(p["model"] == "tab" and p["event"] == "drift" for p in hook.posts)
        assert metric_value(s.metrics(), "ember_drift_alert", model="tab") == 1
        html = tmp_path / "drift.html"
        out = subprocess.run([sys.executable, "-m", "ember", "monitor", "report", "--url", s.url,
                              "--model", "tab", "--out", str(html)],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        page = html.read_text()
        assert "x:col3" in page and "data:image/png;base64," in page
    finally:
        s.stop()
        hook.close()


def test_concept_drift_from_feedback(tmp_path):
    """Outcomes posted to /v2/feedback: right while the baseline forms, then mostly wrong."""
    root = tmp_path / "repo"
    _version(root, "cd", 1)
    (root / "cd" / "config.toml").write_text("""
[monitor]
window = 300
min_window = 200
baseline_requests = 300
check_every = 50
""")
    s = _serve(root, tmp_path)
    rng = np.random.default_rng(3)
    try:
        with httpx.Client(timeout=60) as c:
            for i in range(600):
                r = _infer(c, s.url, "cd", rng.standard_normal((1, F)).astype(np.float32))
                pred = int(np.argmax(r.json()["outputs"][0]["data"]))
                truth = pred if i < 300 or rng.random() < 0.5 else (pred + 1) % 3
                fb = c.post(f"{s.url}/v2/feedback", json={
                    "request_id": r.headers["x-request-id"], "value": truth})
                assert fb.status_code == 200 and fb.json()["monitored"]
            report = c.get(f"{s.url}/v2/models/cd/drift").json()
        assert report["concept"] is not None and "concept" in report["alerts"], report["concept"]
    finally:
        s.stop()


def test_sticky_split_with_feedback(tmp_path):
    root = _experiment_repo(tmp_path, "ab", (1, 2), """
name = "ab-test"
mode = "split"
key = "header:x-user-id"
variants = [{name = "control", version = 1, weight = 0.5}, {name = "treatment", version = 2, weight = 0.5}]
metric = {type = "binary", name = "conversion"}
plan = {alpha = 0.05, power = 0.8, baseline_rate = 0.1, mde = 0.05}
""")
    s = _serve(root, tmp_path)
    x = np.ones((1, F), np.float32)
    try:
        seen = {}
        with httpx.Client(timeout=60) as c:
            for rnd in range(2):
                for u in range(150):
                    r = _infer(c, s.url, "ab", x, {"x-user-id": f"user-{u}"})
                    variant, version = r.headers["x-ember-variant"], r.headers["x-ember-version"]
                    assert {"control": "1", "treatment": "2"}[variant] == version
                    assert seen.setdefault(u, variant) == variant      # sticky
                    fb = c.post(f"{s.url}/v2/feedback", json={
                        "request_id": r.headers["x-request-id"], "value": float(u % 7 == 0)})
                    assert fb.status_code == 200 and fb.json()["variant"] == variant
            assert c.post(f"{s.url}/v2/feedback", json={"request_id": "nope", "value": 1}
                          ).status_code == 404
            report = c.get(f"{s.url}/v2/models/ab/experiment").json()
        shares = list(seen.values())
        assert 0.3 < shares.count("treatment") / len(shares) < 0.7
        assert report["decision"] == "insufficient_data"     # 150 users per arm: short of plan
        out = subprocess.run([sys.executable, "-m", "ember", "experiment", "report", "--url", s.url,
                              "--model", "ab"], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and "insufficient" in out.stdout.lower(), out.stderr
        assert metric_value(s.metrics(), "ember_experiment_requests_total",
                            experiment="ab-test") == 300
        # New weights apply without reloading the versions (only [experiment] changed).
        since = {r["version"]: r["since"] for r in httpx.post(s.url + "/v2/repository/index").json()}
        cfg = root / "ab" / "config.toml"
        cfg.write_text(cfg.read_text().replace("weight = 0.5}, {name", "weight = 0.9}, {name")
                       .replace("version = 2, weight = 0.5", "version = 2, weight = 0.1"))
        deadline = time.monotonic() + 20
        while httpx.get(f"{s.url}/v2/models/ab/experiment").json()["weights"]["control"] < 0.85:
            assert time.monotonic() < deadline, "the new weights never applied"
            time.sleep(0.2)
        after = {r["version"]: r["since"] for r in httpx.post(s.url + "/v2/repository/index").json()}
        assert after == since
        assert metric_value(s.metrics(), "ember_experiment_requests_total",
                            experiment="ab-test") == 300
        now = httpx.get(f"{s.url}/v2/models/ab/experiment").json()["variants"]
        counts = lambda vs: [(v["name"], v["requests"], v["n"]) for v in vs]  # noqa: E731
        assert counts(now) == counts(report["variants"])              # the counts carried over
    finally:
        s.stop()


def test_bandit_learns_from_feedback_and_survives_restart(tmp_path):
    root = _experiment_repo(tmp_path, "bd", (1, 2, 3), """
name = "bandit"
mode = "bandit"
variants = [{name = "a", version = 1}, {name = "b", version = 2}, {name = "c", version = 3}]
metric = {type = "binary", name = "click"}
bandit = {algorithm = "thompson", min_share = 0.05}
""")
    p = {"a": 0.05, "b": 0.1, "c": 0.5}
    rng = np.random.default_rng(11)
    x = np.ones((1, F), np.float32)
    s = _serve(root, tmp_path)
    try:
        picks = []
        with httpx.Client(timeout=60) as c:
            for _ in range(600):
                r = _infer(c, s.url, "bd", x)
                v = r.headers["x-ember-variant"]
                picks.append(v)
                c.post(f"{s.url}/v2/feedback", json={"request_id": r.headers["x-request-id"],
                                                     "value": float(rng.random() < p[v])})
            before = c.get(f"{s.url}/v2/models/bd/experiment").json()
        assert picks[-200:].count("c") / 200 >= 0.7
    finally:
        s.stop()
    s = _serve(root, tmp_path, "restart.log")
    try:
        after = httpx.get(f"{s.url}/v2/models/bd/experiment").json()
        assert after["weights"]["c"] >= 0.7                    # the posterior came back
        assert str(before["variants"]) == str(after["variants"])
    finally:
        s.stop()


def test_validation_gate_blocks_a_broken_version(tmp_path):
    root = tmp_path / "repo"
    _version(root, "gated", 1, seed=3)
    rng = np.random.default_rng(5)
    np.savez(root / "gated" / "reference.npz", x=rng.standard_normal((64, F)).astype(np.float32))
    (root / "gated" / "config.toml").write_text("""
[validation]
data = "reference.npz"
min_cosine = 0.999
max_latency_ratio = false   # microsecond runs: the ratio is noise
""")
    s = _serve(root, tmp_path)
    try:
        # A re-export of version 1 (same weights, other node names) passes.
        d = root / "gated" / ".v2"
        d.mkdir()
        _classifier(d / "model.onnx", seed=3, version=1, node_prefix="re_")
        os.rename(d, root / "gated" / "2")
        _wait_state(s.url, "gated", "2", "serving")
        # Scrambled weights fail, naming the limit; version 2 keeps serving.
        d = root / "gated" / ".v3"
        d.mkdir()
        _classifier(d / "model.onnx", seed=99, version=1)
        os.rename(d, root / "gated" / "3")
        rec = _wait_state(s.url, "gated", "3", "failed")
        assert "cosine" in rec["reason"]
        assert httpx.get(f"{s.url}/v2/models/gated").json()["versions"] == ["2"]
    finally:
        s.stop()


def _wait_state(url, name, version, state, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for rec in httpx.post(url + "/v2/repository/index").json():
            if rec["name"] == name and rec["version"] == version and rec["state"] == state:
                return rec
        time.sleep(0.2)
    raise AssertionError(f"{name} version {version} never reached {state}: "
                         f"{httpx.post(url + '/v2/repository/index').json()}")



def test_canary_ramps_up_and_keeps_its_users(tmp_path):
    root = _experiment_repo(tmp_path, "cn", (1, 2), """
name = "canary-2"
mode = "canary"
key = "header:x-user-id"
variants = [{name = "stable", version = 1}, {name = "canary", version = 2}]
canary = {stages = [0.1, 0.5, 1.0], stage_requests = 100}
""")
    s = _serve(root, tmp_path)
    x = np.ones((1, F), np.float32)
    try:
        first_canary = {}
        shares = []
        with httpx.Client(timeout=60) as c:
            for stage in range(3):
                hits = 0
                for i in range(100):
                    u = f"u{(stage * 100 + i) % 150}"
                    v = _infer(c, s.url, "cn", x, {"x-user-id": u}).headers["x-ember-variant"]
                    hits += v == "canary"
                    if v == "canary":
                        first_canary.setdefault(u, stage)
                    else:   # once in the canary, a user stays in it as the share grows
                        assert u not in first_canary, (u, stage)
                shares.append(hits / 100)
            weights = c.get(f"{s.url}/v2/models/cn/experiment").json()["weights"]
        assert shares[0] < 0.3 and 0.3 < shares[1] < 0.7 and shares[2] == 1.0, shares
        assert weights == {"stable": 0.0, "canary": 1.0}
    finally:
        s.stop()
