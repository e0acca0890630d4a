"""Engine.profile and `ember profile`: trace spans from the runtime (one per node run, eager
nodes included), per-node and per-op-type medians and shares, the cost model's flops and
bytes, the Chrome trace, bad arguments, and the EMBER_DEBUG levels that print from spans.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

import numpy as np
import pytest
from onnx import TensorProto as T, helper as oh, numpy_helper

import ember

B, D, H, O = 6, 64, 128, 32
MATMULS = ("MatMul", "FusedMatMul")  # load-time fusion may fold the Add and Relu into mm1


def vi(name, dtype=T.FLOAT, shape=None):
    return oh.make_tensor_value_info(name, dtype, shape)


def model(nodes, inputs, outputs, inits=()):
    g = oh.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    return oh.make_model(g, opset_imports=[oh.make_opsetid("", 18)])


def mlp_model(rng):
    """softmax(relu(x @ W1 + b1) @ W2), x [B, 64], W1 [64, 128], W2 [128, 32]."""
    nodes = [oh.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
             oh.make_node("Add", ["h", "b1"], ["hb"], name="add"),
             oh.make_node("Relu", ["hb"], ["r"], name="relu"),
             oh.make_node("MatMul", ["r", "w2"], ["o"], name="mm2"),
             oh.make_node("Softmax", ["o"], ["y"], name="softmax", axis=-1)]
    inits = [numpy_helper.from_array(rng.standard_normal((D, H)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal(H).astype(np.float32), "b1"),
             numpy_helper.from_array(rng.standard_normal((H, O)).astype(np.float32), "w2")]
    return model(nodes, [vi("x", shape=["B", D])], [vi("y")], inits)


def if_model(rng):
    """sum(x) > 0 ? x @ W : -x, then * 2: an eager If and a continuation plan after it."""
    then_branch = oh.make_graph([oh.make_node("MatMul", ["x", "W"], ["t"])], "then", [], [vi("t")])
    else_branch = oh.make_graph([oh.make_node("Neg", ["x"], ["e"])], "else", [], [vi("e")])
    nodes = [oh.make_node("ReduceSum", ["x"], ["s"], name="sum", keepdims=0),
             oh.make_node("Greater", ["s", "zero"], ["c"], name="greater"),
             oh.make_node("If", ["c"], ["r"], name="branch", then_branch=then_branch,
                          else_branch=else_branch),
             oh.make_node("Mul", ["r", "two"], ["y"], name="double")]
    inits = [numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "W"),
             numpy_helper.from_array(np.float32(0), "zero"),
             numpy_helper.from_array(np.float32(2), "two")]
    return model(nodes, [vi("x", shape=["N", 8])], [vi("y")], inits)


@pytest.fixture
def mlp(rng):
    return ember.Engine(mlp_model(rng)), {"x": rng.standard_normal((B, D)).astype(np.float32)}


def planned(eng, feeds):
    """(name, op, kernel, isa) of every node a run executes, in order."""
    return [tuple(n[:4]) for n in eng.plan_info(feeds)["nodes"] if n[2] != "folded"]


def test_every_planned_node_is_timed_with_its_kernel(mlp):
    eng, feeds = mlp
    prof = eng.profile(feeds, runs=5, warmup=1)
    assert [(n.name, n.op, n.kernel, n.isa) for n in prof.nodes] == planned(eng, feeds)
    names = [n.name for n in prof.nodes]
    assert names[0] == "mm1" and "mm2" in names and names[-1] == "softmax"
    for n in prof.nodes:
        assert n.median_ms > 0 and len(n.times_ms) == 5, n
        assert n.gbps > 0
    assert prof.runs == 5 and prof.total_ms >= prof.nodes_ms > 0
    # The profiled runs compute what run computes.
    assert eng.run(feeds)["y"].shape == (B, O)


def test_cost_model_numbers(mlp):
    eng, feeds = mlp
    nodes = {n.name: n for n in eng.profile(feeds, runs=1, warmup=0).nodes}
    assert nodes["mm1"].op in MATMULS and nodes["mm2"].op in MATMULS
    assert nodes["mm1"].flops == 2 * B * H * D
    assert nodes["mm2"].flops == 2 * B * O * H
    assert nodes["softmax"].flops == 5 * B * O
    assert nodes["softmax"].bytes == 4 * 2 * B * O
    assert nodes["mm1"].gflops == pytest.approx(nodes["mm1"].flops / (nodes["mm1"].median_ms * 1e6))
    assert nodes["mm1"].gbps == pytest.approx(nodes["mm1"].bytes / (nodes["mm1"].median_ms * 1e6))


def test_cost_model_unfused_matmul_and_add(rng):
    # Fed weights are never fused: a batched MatMul [2, B, D] x [D, H], then Add of a fed bias.
    eng = ember.Engine(model([oh.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
                              oh.make_node("Add", ["h", "b"], ["y"], name="add")],
                             [vi("x", shape=[2, B, D]), vi("w", shape=[D, H]), vi("b", shape=[H])],
                             [vi("y")]))
    feeds = {"x": rng.standard_normal((2, B, D)).astype(np.float32),
             "w": rng.standard_normal((D, H)).astype(np.float32),
             "b": rng.standard_normal(H).astype(np.float32)}
    mm, add = eng.profile(feeds, runs=2, warmup=0).nodes
    assert (mm.op, add.op) == ("MatMul", "Add")
    assert mm.flops == 2 * 2 * B * H * D
    assert mm.bytes == 4 * (2 * B * D + D * H + 2 * B * H)
    assert add.flops == 2 * B * H and add.bytes == 4 * (2 * B * H + H + 2 * B * H)


@pytest.mark.parametrize("runs", [1, 4, 7])
def test_medians_and_shares(mlp, runs):
    eng, feeds = mlp
    prof = eng.profile(feeds, runs=runs, warmup=0)
    for n in prof.nodes:
        assert len(n.times_ms) == runs
        assert n.median_ms == statistics.median(n.times_ms)
        assert n.share == pytest.approx(n.median_ms / prof.nodes_ms)
    assert sum(n.share for n in prof.nodes) == pytest.approx(1, abs=1e-6)
    assert sum(s.share for s in prof.ops) == pytest.approx(1, abs=1e-6)
    by_op = {s.op: s for s in prof.ops}
    assert sum(s.count for s in prof.ops) == len(prof.nodes)
    for op, s in by_op.items():
        mine = [n for n in prof.nodes if n.op == op]
        assert s.count == len(mine)
        assert s.ms == pytest.approx(sum(n.median_ms for n in mine))
        assert s.flops == sum(n.flops for n in mine)
    assert [s.ms for s in prof.ops] == sorted((s.ms for s in prof.ops), reverse=True)
    assert prof.total_ms == pytest.approx(statistics.median(prof.run_ms))


def test_chrome_trace(mlp, tmp_path):
    eng, feeds = mlp
    runs = 3
    prof = eng.profile(feeds, runs=runs, warmup=1)
    path = tmp_path / "trace.json"
    prof.to_chrome_trace(str(path))
    data = json.loads(path.read_text())
    xs = [e for e in data["traceEvents"] if e["ph"] == "X"]
    names = [n[0] for n in planned(eng, feeds)]
    assert len(xs) == runs * len(names)
    for e in xs:
        assert {"ts", "dur", "name", "cat", "pid", "tid"} <= e.keys()
        assert e["dur"] > 0 and e["args"]["kernel"] and "flops" in e["args"]
    # Runs one after another, spans in order and never overlapping.
    assert [e["name"] for e in xs] == names * runs
    for a, b in zip(xs, xs[1:]):
        assert b["ts"] >= a["ts"] + a["dur"] - 1e-6
    # Durations are the per-run times the medians come from (microseconds vs ms).
    for n in prof.nodes:
        durs = [e["dur"] for e in xs if e["name"] == n.name]
        assert statistics.median(durs) == pytest.approx(n.median_ms * 1e3)
    json.dumps(prof.as_dict())


def test_eager_if_node_is_one_span(rng):
    eng = ember.Engine(if_model(rng))
    for sign in (1, -1):
        feeds = {"x": sign * np.abs(rng.standard_normal((5, 8))).astype(np.float32) + sign * 0.1}
        prof = eng.profile(feeds, runs=3, warmup=1)
        assert [(n.name, n.op) for n in prof.nodes] == [
            ("sum", "ReduceSum"), ("greater", "Greater"), ("branch", "If"), ("double", "Mul")]
        branch = prof.nodes[2]
        assert branch.kernel == "reference" and branch.median_ms > 0
        # Its subgraph's work is inside its time, not its flops; bytes: the cond and the
        # captured x in, the result out.
        assert branch.flops == 0 and branch.bytes == 1 + 2 * 5 * 8 * 4
        assert prof.nodes[3].flops == 5 * 8
        assert sum(s.share for s in prof.ops) == pytest.approx(1, abs=1e-6)


def test_outputs_and_bad_arguments(mlp):
    eng, feeds = mlp
    names = [n[0] for n in planned(eng, feeds)]
    assert [n.name for n in eng.profile(feeds, runs=1, outputs=["y"]).nodes] == names
    for kwargs, match in [(dict(runs=0), "runs"), (dict(runs=2.0), "runs"), (dict(runs=True), "runs"),
                          (dict(warmup=-1), "warmup"), (dict(outputs=["nope"]), "unknown output"),
                          (dict(outputs="y"), "outputs")]:
        with pytest.raises(ember.InputError, match=r"\[profile\] .*" + match):
            eng.profile(feeds, **kwargs)
    with pytest.raises(ember.InputError, match="missing inputs"):
        eng.profile({}, runs=1)
    eng.close()
    with pytest.raises(ember.EmberError, match="closed"):
        eng.profile(feeds)


def _cli_env():
    """The child imports the ember this process imported (the source tree in a dev build,
    site-packages in an installed one, where the source tree has no compiled module)."""
    env = dict(os.environ)
    pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(ember.__file__)))
    env["PYTHONPATH"] = pkg_root + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_cli_profile(rng, tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(mlp_model(rng).SerializeToString())
    names = [n[0] for n in planned(ember.Engine(str(path)), {"x": np.ones((B, D), np.float32)})]
    trace, report = tmp_path / "t.json", tmp_path / "p.json"
    r = subprocess.run([sys.executable, "-m", "ember", "profile", str(path), "--runs", "2",
                        "--shape", f"x={B}x{D}", "--trace", str(trace), "--json", str(report),
                        "--top", "1"],
                       capture_output=True, text=True, env=_cli_env(), timeout=300)
    assert r.returncode == 0, r.stderr
    assert "GFLOP/s" in r.stdout and "op type" in r.stdout and "MatMul" in r.stdout
    assert f"{len(names) - 1} more nodes" in r.stdout  # --top 1
    xs = [e for e in json.loads(trace.read_text())["traceEvents"] if e["ph"] == "X"]
    assert len(xs) == 2 * len(names)
    assert [n["name"] for n in json.loads(report.read_text())["nodes"]] == names
    bad = subprocess.run([sys.executable, "-m", "ember", "profile", str(path), "--runs", "0"],
                         capture_output=True, text=True, env=_cli_env(), timeout=300)
    assert bad.returncode == 2 and "[profile] runs" in bad.stderr


def test_debug_level_2_prints_each_node_span(rng, tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(if_model(rng).SerializeToString())
    code = ("import numpy as np, ember, sys; e = ember.Engine(sys.argv[1]); "
            "e.run({'x': np.ones((3, 8), np.float32)})")
    r = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                       env={**_cli_env(), "EMBER_DEBUG": "2"}, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = [ln.split() for ln in r.stderr.splitlines() if ln.startswith("[ember] ") and ln.endswith(" us")]
    names = [ln[1] for ln in lines]
    for name in ("sum", "greater", "branch", "double"):
        assert name in names, r.stderr
    assert "[ember] run:" in r.stderr
