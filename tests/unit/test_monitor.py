"""ember.monitor.Monitor: config, feature extraction, baselines, check/gauges, concept drift,
thread safety, reference files."""
import json
import threading
from statistics import NormalDist

import numpy as np
import pytest

from ember.engine import TensorInfo
from ember.errors import InputError, ModelError
from ember.monitor import Monitor, MonitorConfig, load_reference
from ember.monitor.features import Projector


def _cfg(**kw):
    return MonitorConfig.from_dict(kw)


# -- config ----------------------------------------------------------------------------------

def test_config_defaults_and_round_trip():
    cfg = MonitorConfig.from_dict({})
    assert (cfg.window, cfg.min_window, cfg.baseline_requests, cfg.alpha) == (1000, 200, 500, 0.01)
    assert cfg.tests == ("ks", "chi2", "psi", "js") and cfg.correction == "bh"
    assert MonitorConfig.from_dict(cfg.as_dict()) == cfg
    json.dumps(cfg.as_dict())


@pytest.mark.parametrize("table,words", [
    ({"windw": 10}, ["unknown key", "windw"]),
    ({"window": 0}, ["window", "int >= 1"]),
    ({"window": "100"}, ["window"]),
    ({"alpha": 1.5}, ["alpha"]),
    ({"alpha": True}, ["alpha"]),
    ({"tests": ["ks", "wasserstein"]}, ["unknown test", "wasserstein"]),
    ({"tests": []}, ["tests"]),
    ({"correction": "bonferroni"}, ["correction", "bh, holm"]),
    ({"min_window": 500, "window": 100}, ["min_window", "window"]),
    ({"baseline_requests": 50}, ["baseline_requests", "min_window"]),
    ({"js_threshold": 0.9}, ["js_threshold"]),
    ({"baseline_file": 3}, ["baseline_file"]),
    ({"projections": 100}, ["projections"]),
])
def test_config_errors(table, words):
    with pytest.raises(ModelError) as e:
        MonitorConfig.from_dict(table, where="models/m/config.toml [monitor]")
    msg = str(e.value)
    assert msg.startswith("[monitor] models/m/config.toml [monitor]")
    for w in words:
        assert w in msg


def test_config_not_a_table():
    with pytest.raises(ModelError, match=r"^\[monitor\] monitor must be a table"):
        MonitorConfig.from_dict([1, 2])
    with pytest.raises(ModelError, match="kind"):
        Monitor(_cfg(), "vision", [], [])


# -- features --------------------------------------------------------------------------------

def test_features_tabular_and_classifier(rng):
    mon = Monitor(_cfg(), "graph", [TensorInfo("x", "float32", ["N", 3])],
                  [TensorInfo("logits", "float32", ["N", 4]), TensorInfo("s", "float32", ["N"])])
    x = rng.normal(size=(5, 3)).astype(np.float32)
    logits = rng.normal(size=(5, 4)).astype(np.float32) * 3
    rows = mon.features_graph({"x": x}, {"logits": logits, "s": x[:, 0]})
    assert len(rows) == 5
    z = logits.astype(np.float64)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    for i, row in enumerate(rows):
        assert row["x:col0"] == pytest.approx(x[i, 0]) and row["x:col2"] == pytest.approx(x[i, 2])
        assert row["logits:confidence"] == pytest.approx(p[i].max(), rel=1e-5)
        assert row["logits:entropy"] == pytest.approx(-(p[i] * np.log(p[i])).sum(), rel=1e-5)
        assert row["logits:class"] == str(p[i].argmax())
        assert row["logits:p3"] == pytest.approx(p[i, 3], rel=1e-5)
        assert row["s:score"] == pytest.approx(x[i, 0])
        assert all(isinstance(v, (float, str)) for v in row.values())


def test_features_probabilities_kept(rng):
    mon = Monitor(_cfg(), "graph", [], [TensorInfo("prob", "float32", ["N", 20])])
    probs = rng.dirichlet(np.ones(20), size=3)
    row = mon.features_graph({}, {"prob": probs})[0]
    assert row["prob:confidence"] == pytest.approx(probs[0].max())
    assert "prob:p19" not in row    # more than 16 classes: no per-class features


def test_features_ids_projections_stable(rng):
    ids = rng.integers(0, 30000, size=(2, 37))
    info = [TensorInfo("input_ids", "int64", ["batch", "seq"])]
    a = Monitor(_cfg(), "graph", info, []).features_graph({"input_ids": ids}, {})
    b = Monitor(_cfg(), "graph", info, []).features_graph({"input_ids": ids}, {})
    assert a == b       # seeded by the input name: the same after a restart
    names = set(a[0])
    assert {"input_ids:mean", "input_ids:std", "input_ids:min", "input_ids:max",
            "input_ids:l2"} <= names
    assert {f"input_ids:proj{k}" for k in range(8)} <= names and len(names) == 13
    assert a[1]["input_ids:max"] == ids[1].max()
    assert a[1]["input_ids:l2"] == pytest.approx(np.linalg.norm(ids[1].astype(float)))
    # unit directions; a shorter row uses a prefix of the same stream
    proj = Projector(4)
    m37, m10 = proj.matrix("input_ids", 37), proj.matrix("input_ids", 10)
    assert np.linalg.norm(m37, axis=1) == pytest.approx(np.ones(4))
    assert np.allclose(m10 * np.linalg.norm(m37[:, :10], axis=1, keepdims=True)
                       / np.linalg.norm(m10, axis=1, keepdims=True), m37[:, :10])


def test_features_wide_strings_bools():
    mon = Monitor(_cfg(projections=2), "graph", [], [])
    wide = np.ones((2, 100), dtype=np.float32)
    rows = mon.features_graph({"emb": wide, "tag": np.array(["a", "b"]),
                               "flags": np.array([[True, False], [False, False]])}, {})
    assert rows[0]["tag"] == "a" and rows[1]["flags:col0"] == "False"
    assert rows[0]["emb:mean"] == 1.0 and "emb:proj1" in rows[0] and "emb:col0" not in rows[0]


def test_features_llm_and_latency():
    mon = Monitor(_cfg(), "llm", [], [])
    assert mon.features_llm(12, 30, -0.7) == {"prompt_tokens": 12, "completion_tokens": 30,
                                              "mean_logprob": -0.7}
    assert "mean_logprob" not in mon.features_llm(1, 2, None)
    mon.observe(mon.features_llm(12, 30, -0.7))
    mon.observe_latency(0.25)
    names = {f["name"] for f in mon.report()["features"]}
    assert names == {"prompt_tokens", "completion_tokens", "mean_logprob", "latency_s"}


# -- baselines, check, gauges ----------------------------------------------------------------

def test_baseline_from_first_n(rng):
    mon = Monitor(_cfg(window=300, min_window=100, baseline_requests=200), "llm", [], [])
    values = rng.normal(size=450)
    for v in values:
        mon.observe({"v": float(v)})
    rep = mon.report()
    assert rep["baseline"] == 200 and rep["window"] == 250
    v = rep["features"][0]
    assert v["ref_summary"]["n"] == 200 and v["cur_summary"]["n"] == 250
    assert v["ref_summary"]["mean"] == pytest.approx(values[:200].mean())
    assert v["cur_summary"]["mean"] == pytest.approx(values[200:].mean())
    edges, rc, cc = mon.histograms("v")
    assert sum(rc) == 200 and sum(cc) == 250 and len(edges) == len(rc) + 1 == 11


def test_explicit_baseline_and_check_events(rng):
    mon = Monitor(_cfg(window=200, min_window=200, baseline_requests=200, check_every=200,
                       alert_after=1), "graph", [], [])
    # The clean window matches the baseline by construction (normal quantiles, shuffled): two
    # random normal samples are a false alarm with probability about alpha (seed 1199928779
    # drew one here), which this step is not about.
    def quantiles(n):
        return rng.permutation([NormalDist().inv_cdf((i + 0.5) / n) for i in range(n)])
    mon.set_baseline([{"x": float(v)} for v in quantiles(500)])
    for v in quantiles(199):
        mon.observe({"x": float(v)})
    assert mon.check() == []            # 199 observations: not yet a check
    mon.observe({"x": 0.0})
    events = mon.check()
    assert events == [] and mon.gauges()["drift_alert"] == 0.0
    for v in rng.normal(3, 1, size=200):
        mon.observe({"x": float(v)})
    events = mon.check()
    assert [(e["event"], e["feature"]) for e in events] == [("drift", "x")]
    assert events[0]["score"] > 1 and "ks" in events[0]["tests"]
    g = mon.gauges()
    assert g == {"x": events[0]["score"], "drift_alert": 1.0}
    # A clean window is a false alarm with probability about alpha (seed 215216532 drew one),
    # so recovery is judged over up to four fresh windows: silence until the one that recovers.
    for _ in range(4):
        for v in rng.normal(size=200):
            mon.observe({"x": float(v)})
        events = [(e["event"], e["feature"]) for e in mon.check()]
        if events:
            break
    assert events == [("recovered", "x")]
    rep = mon.report()
    assert rep["baseline"] == 500 and rep["status"] == "ok"


def test_alert_needs_consecutive_drifted_checks(rng):
    """alert_after = 2 (the default): one drifted check is not yet an alert; a drifted check
    after a clean one starts the count again."""
    mon = Monitor(_cfg(window=100, min_window=100, baseline_requests=0, check_every=100),
                  "graph", [], [])
    # Normal quantiles, not samples: a sampled clean window is flagged now and then (CI saw
    # one), and this test is about the streak, not the test statistic's false-positive rate.
    def normal(mean, n):
        return [mean + NormalDist().inv_cdf((i + 0.5) / n) for i in range(n)]
    mon.set_baseline([{"x": v} for v in normal(0, 500)])

    def window(mean):
        for v in rng.permutation(normal(mean, 100)):
            mon.observe({"x": float(v)})
        return [(e["event"], e["feature"]) for e in mon.check()]
    assert window(3) == []                 # drifted once
    assert window(0) == []                 # clean: the streak ends
    assert window(3) == []
    assert window(3) == [("drift", "x")]   # twice in a row
    assert window(0) == [("recovered", "x")]


def test_report_cached_and_json(rng):
    mon = Monitor(_cfg(window=200, baseline_requests=200), "llm", [], [])
    for v in rng.normal(size=400):
        mon.observe({"x": float(v), "c": "a" if v > 0 else "b", "bad": float("nan")})
    a = mon.report(histograms=True)
    assert mon._compute() is mon._compute()    # cached until the next observation
    json.dumps(a, allow_nan=False)
    assert set(a) >= {"kind", "window", "baseline", "status", "features", "alerts", "concept",
                      "config", "binning"}
    assert set(a["histograms"]) == {"x", "c"}
    edges = a["histograms"]["c"]["edges"]
    assert sorted(edges[:2]) == ["a", "b"] and edges[2] == "(other)"   # most frequent first
    bad = next(f for f in a["features"] if f["name"] == "bad")
    assert bad["cur_summary"]["nonfinite"] == 200 and "skipped" in bad
    mon.observe({"x": 0.0})
    assert mon.report()["window"] == 200


# -- concept drift ---------------------------------------------------------------------------

def test_concept_accuracy_drop(rng):
    mon = Monitor(_cfg(window=300, min_window=200, baseline_requests=300), "graph", [], [])
    # Exactly 90% then 70% correct, in shuffled order: sampled correctness missed the 3-sd
    # bounds below about once in 700 runs.
    correct = np.concatenate([rng.permutation(np.arange(300) < 270),
                              rng.permutation(np.arange(300) < 210)])
    for i in range(600):
        y = int(rng.integers(0, 3))
        pred = y if correct[i] else (y + 1) % 3
        mon.observe({"x": float(rng.normal())}, request_id=f"r{i}", prediction=pred)
        assert mon.feedback(f"r{i}", y)
    assert not mon.feedback("r0", 1) and not mon.feedback("nope", 1)
    with pytest.raises(InputError, match=r"^\[monitor\] feedback outcome"):
        mon.feedback("r1", "yes")
    c = mon.report()["concept"]
    assert c["mode"] == "class" and c["reference"]["n"] == 300 and c["current"]["n"] == 300
    assert c["reference"]["accuracy"] == pytest.approx(0.9)
    assert c["current"]["accuracy"] == pytest.approx(0.7)
    assert c["drifted"] and c["tests"]["accuracy_drop"]["p"] < 1e-3
    assert "concept" in mon.report()["alerts"]


def test_concept_probabilities(rng):
    # alpha 1e-4: "no drift" must hold for every seed, not for 99% of them
    mon = Monitor(_cfg(window=300, min_window=200, baseline_requests=200, alpha=1e-4), "graph",
                  [], [])
    for i in range(500):
        p = float(rng.uniform())
        y = int(rng.uniform() < p)          # calibrated predictions
        mon.observe({"x": p}, request_id=str(i), prediction=p)
        mon.feedback(str(i), y)
    c = mon.report()["concept"]
    assert c["mode"] == "probability" and not c["drifted"]
    assert 0.1 < c["reference"]["brier"] < 0.25 and c["current"]["ece"] < 0.15


def test_pending_is_bounded():
    mon = Monitor(_cfg(max_pending=3), "graph", [], [])
    for i in range(5):
        mon.observe({"x": 1.0}, request_id=str(i), prediction=1)
    assert not mon.feedback("0", 1) and not mon.feedback("1", 1) and mon.feedback("4", 1)


# -- threads and reference files -------------------------------------------------------------

def test_observe_from_threads():
    mon = Monitor(_cfg(window=5000, min_window=200, baseline_requests=1000), "graph", [], [])

    def worker(k):
        rng = np.random.default_rng(k)
        for i in range(1000):
            mon.observe({"x": float(rng.normal()), "t": f"w{k}"}, request_id=f"{k}-{i}",
                        prediction=1)
            mon.observe_latency(0.01)
            if i % 250 == 0:
                mon.report()
                mon.check()
                mon.feedback(f"{k}-{i}", 1)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rep = mon.report()
    assert rep["baseline"] == 1000 and rep["window"] == 3000
    x = next(f for f in rep["features"] if f["name"] == "x")
    assert x["ref_summary"]["n"] + x["cur_summary"]["n"] == 4000
    assert rep["concept"]["reference"]["n"] + rep["concept"]["current"]["n"] == 16


def test_load_reference(tmp_path, rng):
    good = tmp_path / "ref.npz"
    np.savez(good, x=rng.normal(size=(7, 3)), ids=np.arange(14).reshape(7, 2))
    feeds = load_reference(str(good))
    assert set(feeds) == {"x", "ids"} and feeds["x"].shape == (7, 3)
    np.savez(tmp_path / "ragged.npz", x=np.zeros((3, 2)), y=np.zeros((4,)))
    np.savez(tmp_path / "scalar.npz", x=np.float32(1))
    np.save(tmp_path / "plain.npy", np.zeros(3))
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    for name, words in [("ragged.npz", "batch size"), ("scalar.npz", "batch axis"),
                        ("plain.npy", "not an .npz"), ("junk.npz", "cannot read"),
                        ("missing.npz", "cannot read")]:
        with pytest.raises(ModelError, match=r"^\[monitor\] .*" + words):
            load_reference(str(tmp_path / name))
