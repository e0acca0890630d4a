"""The benchmark harness: `ember bench` on a tiny model (smoke mode), the interleaved schedule of
bench.compare, the peak-RSS child, and benchmarks/bench_gemm.py --quick. No timing claims beyond
sanity: CI machines are noisy; an A/A ratio only has to be loosely near 1."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import ember
from ember import bench

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def ember_cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "ember", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def model_path(tmp_path, rng):
    w = rng.standard_normal((16, 8)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
         helper.make_node("Relu", ["h"], ["y"], name="relu")],
        "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])],
        [numpy_helper.from_array(w, "w")])
    path = tmp_path / "tiny.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return str(path)


def test_cli_quick_against_onnxruntime_writes_json(model_path, tmp_path):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "out.json"
    t0 = time.monotonic()
    r = ember_cli("bench", model_path, "--quick", "--compare", "onnxruntime", "--json", str(out),
                  "--batch", "1", "--batch", "4", "--threads", "2")
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - t0 < 60          # ~2 s here; generous for a loaded CI machine
    assert "ember/onnxruntime" in r.stdout and "1x16" in r.stdout and "4x16" in r.stdout
    report = json.loads(out.read_text())
    assert report["engines"] == ["ember", "onnxruntime"] and report["threads"] == 2
    assert [row["case"] for row in report["results"]] == ["1x16", "4x16"]
    for row, batch in zip(report["results"], [1, 4]):
        assert row["feeds"] == {"x": [batch, 16]} and row["batch"] == batch and row["seq"] is None
        for label in ("ember", "onnxruntime"):
            st = row["engines"][label]
            assert 0 < st["p10_s"] <= st["median_s"] <= st["p90_s"] < 10
            assert st["spread"] >= 0 and st["runs"] == len(st["times_s"]) == 2  # 2 rounds x 1
        assert row["ratio"] > 0
        assert row["ratio"] == pytest.approx(row["engines"]["ember"]["median_s"]
                                             / row["engines"]["onnxruntime"]["median_s"])
        assert row["max_abs_diff"] < 1e-4


def test_cli_a_a_ratio_is_near_one(model_path, tmp_path):
    out = tmp_path / "aa.json"
    r = ember_cli("bench", model_path, "--compare", "ember", "--batch", "8", "--warmup", "2",
                  "--rounds", "6", "--block", "20", "--pause-ms", "1", "--json", str(out))
    assert r.returncode == 0, r.stderr
    (row,) = json.loads(out.read_text())["results"]
    assert set(row["engines"]) == {"ember", "ember (B)"}
    assert row["max_abs_diff"] == 0.0
    assert 0.5 <= row["ratio"] <= 2.0, row["ratio"]


def test_cli_rss_reports_positive_mib(model_path, tmp_path):
    out = tmp_path / "rss.json"
    r = ember_cli("bench", model_path, "--quick", "--compare", "none", "--rss", "--json", str(out))
    assert r.returncode == 0, r.stderr
    (row,) = json.loads(out.read_text())["results"]
    rss = row["rss"]["ember"]
    assert rss["peak_mib"] > 10 and rss["base_mib"] > 0 and rss["peak_mib"] >= rss["base_mib"]
    assert "RSS ember MiB" in r.stdout


def test_cli_shape_override_and_seq_rule(tmp_path):
    """First symbolic dim <- --batch, later ones <- --seq; --shape wins for its input."""
    vi = helper.make_tensor_value_info
    graph = helper.make_graph(
        [helper.make_node("Identity", ["ids"], ["a"]), helper.make_node("Identity", ["img"], ["b"])],
        "g", [vi("ids", TensorProto.INT64, ["B", "S"]), vi("img", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [vi("a", TensorProto.INT64, ["B", "S"]), vi("b", TensorProto.FLOAT, ["N", 3, "H", "W"])])
    path = tmp_path / "two.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    out = tmp_path / "s.json"
    r = ember_cli("bench", str(path), "--quick", "--compare", "none", "--batch", "2", "--seq", "5",
                  "--seq", "7", "--shape", "img=1x3x4x4", "--json", str(out))
    assert r.returncode == 0, r.stderr
    rows = json.loads(out.read_text())["results"]
    assert [row["feeds"] for row in rows] == [{"ids": [2, 5], "img": [1, 3, 4, 4]},
                                              {"ids": [2, 7], "img": [1, 3, 4, 4]}]
    assert rows[0]["case"] == "ids=2x5 img=1x3x4x4"


def test_cli_bad_arguments_exit_2(model_path):
    r = ember_cli("bench", model_path, "--quick", "--compare", "none", "--shape", "nope=1x2")
    assert r.returncode == 2 and "nope" in r.stderr
    r = ember_cli("bench", model_path, "--quick", "--compare", "none", "--rounds", "0")
    assert r.returncode == 2 and "--rounds" in r.stderr


def test_compare_interleaves_and_alternates_order():
    calls = []
    engines = {k: (lambda feeds, k=k: calls.append(k)) for k in "AB"}
    res = bench.compare(engines, None, warmup=1, rounds=4, block=2, pause_s=0, block_warmup=0)
    assert "".join(calls) == "AB" + "AABB" + "BBAA" + "AABB" + "BBAA"
    assert res["engines"]["A"]["runs"] == res["engines"]["B"]["runs"] == 8
    assert res["ratio"]["A"] == 1.0 and res["block"] == 2


def test_compare_rotates_three_engines_pauses_and_block_warmup():
    calls, pauses = [], []
    engines = {k: (lambda feeds, k=k: calls.append(k)) for k in "ABC"}
    bench.compare(engines, None, warmup=0, rounds=3, block=1, pause_s=0.5, block_warmup=1,
                  sleep=pauses.append)
    assert "".join(calls) == "AABBCC" + "BBCCAA" + "CCAABB"
    assert pauses == [0.5] * 9                 # one pause before every block


def test_compare_times_with_the_given_clock_and_reports_ratio():
    """A fake clock: A's runs take 1 s, B's 3 s, so the ratios are exact."""
    now = [0.0]
    cost = {"A": 1.0, "B": 3.0}

    def run(k):
        def fn(feeds):
            assert feeds == {"x": 1}
            now[0] += cost[k]
        return fn

    res = bench.compare({"A": run("A"), "B": run("B")}, {"x": 1}, warmup=2, rounds=4, block=None,
                        pause_s=0, block_warmup=0, clock=lambda: now[0], target_block_s=7.0,
                        sleep=lambda s: None)
    assert res["block"] == 2                   # round(7 / slowest warm-up 3 s)
    b = res["engines"]["B"]
    assert b["median_s"] == b["p10_s"] == b["p90_s"] == 3.0 and b["spread"] == 0.0
    assert res["ratio"]["B"] == 3.0 and res["ratio_rounds"]["B"]["median"] == 3.0


def test_compare_rejects_bad_settings():
    with pytest.raises(ember.EmberError, match="rounds"):
        bench.compare({"A": lambda f: None}, None, rounds=0)


def test_max_abs_diff():
    a = {"y": np.array([1.0, 2.0], np.float32), "z": np.zeros(2)}
    assert bench.max_abs_diff(a, {"y": np.array([1.0, 2.5])}) == 0.5
    assert bench.max_abs_diff(a, {"w": np.zeros(1)}) is None
    assert bench.max_abs_diff(a, {"y": np.zeros(3)}) == float("inf")


def test_peak_rss_child_for_onnxruntime(model_path):
    pytest.importorskip("onnxruntime")
    got = bench.peak_rss(model_path, "onnxruntime", 1, {"x": np.ones((2, 16), np.float32)})
    assert got["peak_mib"] > 10 and got["model_mib"] >= 0


def test_bench_gemm_quick_runs():
    script = os.path.join(ROOT, "benchmarks", "bench_gemm.py")
    r = subprocess.run([sys.executable, script, "--quick", "--threads", "1", "--no-torch"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "GFLOP/s" in r.stdout and "numpy" in r.stdout and "peak" in r.stdout


@pytest.mark.slow
def test_bench_models_quick_runs(tmp_path):
    """The models benchmark in CI smoke mode: MiniLM (via ember.hub) and a torch-exported CNN."""
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    out = tmp_path / "models.json"
    script = os.path.join(ROOT, "benchmarks", "bench_models.py")
    r = subprocess.run([sys.executable, script, "--quick", "--json", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = json.loads(out.read_text())["results"]
    assert [row["case"].split()[0] for row in rows] == ["minilm-l6", "minilm-l6", "resnet-tiny"]
    for row in rows:
        assert row["ratio"] > 0 and row["max_abs_diff"] < 1e-3 and row["items_per_s"]["ember"] > 0
