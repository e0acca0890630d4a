"""Data-dependent shapes and control flow against onnxruntime.

NonZero, TopK/Range/ConstantOfShape whose shape inputs are computed from data, If with
values captured from enclosing graphs (nested two deep), Loop with carried, scanned and
captured values and an If in its body. The planner ends a plan before such a node, the session
runs it eagerly and continues with a plan compiled (and cached) for the actual shapes: these
tests check the answers, that the boundary is where it should be, that memory_limit still
holds, and that bad loops and subgraphs fail cleanly.
"""
from __future__ import annotations

import threading

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T, helper as oh, numpy_helper

import ember

ort = pytest.importorskip("onnxruntime")


def vi(name, dtype=T.FLOAT, shape=None):
    return oh.make_tensor_value_info(name, dtype, shape)


def init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def model(nodes, inputs, outputs, inits=(), opset=18):
    g = oh.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    return oh.make_model(g, opset_imports=[oh.make_opsetid("", opset)]).SerializeToString()


def check_against_ort(data, feeds, engine=None, rtol=1e-5, atol=1e-5):
    engine = engine or ember.Engine(data)
    got = engine.run(feeds)
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    want = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
    assert got.keys() == want.keys()
    for name in want:
        assert got[name].shape == want[name].shape, name
        assert got[name].dtype == want[name].dtype, name
        np.testing.assert_allclose(got[name], want[name], rtol=rtol, atol=atol, err_msg=name)
    return got


def kernels(engine, feeds):
    return {name: kernel for name, _op, kernel, _isa, _dev in engine.plan_info(feeds)["nodes"]}


# ---- NonZero and shapes computed from data --------------------------------------------------

def nonzero_model():
    """x [N, 5] -> indices of x > 0, the values there doubled, their sum."""
    nodes = [oh.make_node("Greater", ["x", "zero"], ["pos"], name="greater"),
             oh.make_node("NonZero", ["pos"], ["nz"], name="nonzero"),
             oh.make_node("Transpose", ["nz"], ["idx"], name="transpose", perm=[1, 0]),
             oh.make_node("GatherND", ["x", "idx"], ["vals"], name="gather"),
             oh.make_node("Mul", ["vals", "two"], ["doubled"], name="mul"),
             oh.make_node("ReduceSum", ["vals"], ["total"], name="sum", keepdims=0)]
    return model(nodes, [vi("x", shape=["N", 5])],
                 [vi("idx", T.INT64), vi("doubled"), vi("total")],
                 [init("zero", np.float32(0)), init("two", np.float32(2))])


def test_nonzero_then_planned_ops(rng):
    data = nonzero_model()
    e = ember.Engine(data)
    for n in (1, 7, 300, 7, 0):
        x = rng.standard_normal((n, 5)).astype(np.float32)
        check_against_ort(data, {"x": x}, e)
    x = rng.standard_normal((7, 5)).astype(np.float32)
    k = kernels(e, {"x": x})
    assert k["nonzero"] == "eager"
    assert k["greater"] not in ("eager", "after eager")
    assert {k["transpose"], k["gather"], k["mul"], k["sum"]} == {"after eager"}
    # Nothing but zeros: an empty [2, 0] index, an empty gather, a zero sum.
    got = check_against_ort(data, {"x": -np.abs(x)}, e)
    assert got["idx"].shape == (0, 2)


def test_shapes_from_data_topk_range_constant_of_shape(rng):
    """k, the Range limit and the ConstantOfShape shape come from tensors too big to be offered
    to the planner (2000 elements), so each of those nodes runs eagerly."""
    nodes = [oh.make_node("ReduceMin", ["ks"], ["k"], name="kmin", keepdims=1),
             oh.make_node("TopK", ["x", "k"], ["top", "top_i"], name="topk", axis=1),
             oh.make_node("Greater", ["ks", "five"], ["big"], name="greater"),
             oh.make_node("Cast", ["big"], ["big_i"], name="cast", to=T.INT64),
             oh.make_node("ReduceSum", ["big_i"], ["count"], name="count", keepdims=0),
             oh.make_node("Range", ["zero", "count", "one"], ["iota"], name="range"),
             oh.make_node("Unsqueeze", ["count", "axis0"], ["count1"], name="unsq"),
             oh.make_node("Concat", ["count1", "k"], ["shape"], name="concat", axis=0),
             oh.make_node("ConstantOfShape", ["shape"], ["fill"], name="fill",
                          value=numpy_helper.from_array(np.array([1.5], np.float32))),
             oh.make_node("Mul", ["fill", "two"], ["fill2"], name="mul")]
    data = model(nodes, [vi("x", shape=["N", 40]), vi("ks", T.INT64, [2000])],
                 [vi("top"), vi("top_i", T.INT64), vi("iota", T.INT64), vi("fill2")],
                 [init("five", np.int64(5)), init("zero", np.int64(0)), init("one", np.int64(1)),
                  init("axis0", np.array([0], np.int64)), init("two", np.float32(2))])
    e = ember.Engine(data)
    for n, lo in ((3, 1), (5, 4), (3, 1), (1, 9)):
        feeds = {"x": rng.standard_normal((n, 40)).astype(np.float32),
                 "ks": rng.integers(lo, 10, size=2000).astype(np.int64)}
        check_against_ort(data, feeds, e)
    assert kernels(e, feeds)["topk"] == "eager"


# ---- If ---------------------------------------------------------------------------------------

def nested_if_model():
    """sum(x) > 0: x @ W + b (W, b, x from the main graph); else, max(x) > 1: relu(x) * y
    (y two graphs up); else -x."""
    inner = oh.make_node(
        "If", ["c2"], ["r_inner"], name="inner_if",
        then_branch=oh.make_graph(
            [oh.make_node("Relu", ["x"], ["rx"]), oh.make_node("Mul", ["rx", "y"], ["t2"])],
            "then2", [], [vi("t2")]),
        else_branch=oh.make_graph([oh.make_node("Neg", ["x"], ["e2"])], "else2", [], [vi("e2")]))
    else_branch = oh.make_graph(
        [oh.make_node("ReduceMax", ["x"], ["mx"], keepdims=0),
         oh.make_node("Greater", ["mx", "one"], ["c2"]), inner,
         oh.make_node("Identity", ["r_inner"], ["e1"])],
        "else1", [], [vi("e1")])
    then_branch = oh.make_graph(
        [oh.make_node("MatMul", ["x", "W"], ["xw"]), oh.make_node("Add", ["xw", "b"], ["t1"])],
        "then1", [], [vi("t1")])
    nodes = [oh.make_node("ReduceSum", ["x"], ["s"], name="sum", keepdims=0),
             oh.make_node("Greater", ["s", "zero"], ["c"], name="greater"),
             oh.make_node("If", ["c"], ["r"], name="outer_if", then_branch=then_branch,
                          else_branch=else_branch),
             oh.make_node("Mul", ["r", "two"], ["out"], name="after")]
    rng = np.random.default_rng(0)
    return model(nodes, [vi("x", shape=["N", 6]), vi("y", shape=["N", 6])], [vi("out")],
                 [init("W", rng.standard_normal((6, 6)).astype(np.float32)),
                  init("b", rng.standard_normal(6).astype(np.float32)),
                  init("zero", np.float32(0)), init("one", np.float32(1)),
                  init("two", np.float32(2))])


def test_if_nested_with_captured_values(rng):
    data = nested_if_model()
    e = ember.Engine(data)
    def else_then(x):  # sum < 0 but one element > 1
        x = -np.abs(x) - 1
        x[0, 0] = 2
        return x

    paths = {"then": lambda x: np.abs(x) + 0.1,            # sum > 0
             "else-then": else_then,
             "else-else": lambda x: -np.abs(x) * 0.1 - 0.5}  # sum < 0, every element < 1
    for n in (1, 4):
        for make in paths.values():
            x = make(rng.standard_normal((n, 6))).astype(np.float32)
            y = rng.standard_normal((n, 6)).astype(np.float32)
            check_against_ort(data, {"x": x, "y": y}, e)
    k = kernels(e, {"x": x, "y": y})
    assert k["outer_if"] == "eager" and k["after"] == "after eager"


# ---- Loop -------------------------------------------------------------------------------------

def loop_model():
    """v <- v * scale + x each iteration, plus 1 on odd iterations (an If in the body); scans
    the row sums of v; stops after M iterations or once iter reaches `limit` (both fed)."""
    odd_if = oh.make_node(
        "If", ["odd"], ["inc"],
        then_branch=oh.make_graph([oh.make_node("Identity", ["one"], ["i1"])], "t", [], [vi("i1")]),
        else_branch=oh.make_graph([oh.make_node("Identity", ["zero"], ["i0"])], "e", [], [vi("i0")]))
    body = oh.make_graph(
        [oh.make_node("Mul", ["v_in", "scale"], ["vs"]),
         oh.make_node("Add", ["vs", "x"], ["vx"]),
         oh.make_node("Mod", ["iter", "two_i"], ["parity"]),
         oh.make_node("Equal", ["parity", "one_i"], ["odd"]), odd_if,
         oh.make_node("Add", ["vx", "inc"], ["v_out"]),
         oh.make_node("ReduceSum", ["v_out", "axis1"], ["row_sums"], keepdims=0),
         oh.make_node("Add", ["iter", "one_i"], ["next"]),
         oh.make_node("Less", ["next", "limit"], ["c_out"])],
        "body", [vi("iter", T.INT64, []), vi("c_in", T.BOOL, []), vi("v_in", shape=["N", 3])],
        [vi("c_out", T.BOOL, []), vi("v_out", shape=["N", 3]), vi("row_sums", shape=["N"])])
    nodes = [oh.make_node("Loop", ["M", "", "v0"], ["v_final", "sums"], name="loop", body=body),
             oh.make_node("Transpose", ["sums"], ["sums_t"], name="after", perm=[1, 0])]
    return model(nodes, [vi("M", T.INT64, []), vi("limit", T.INT64, []), vi("x", shape=["N", 3]),
                         vi("v0", shape=["N", 3])],
                 [vi("v_final"), vi("sums_t")],
                 [init("scale", np.float32(0.5)), init("one", np.float32(1)),
                  init("zero", np.float32(0)), init("two_i", np.int64(2)),
                  init("one_i", np.int64(1)), init("axis1", np.array([1], np.int64))])


@pytest.mark.parametrize("trips,limit", [(5, 100), (6, 3), (1, 100), (40, 100)])
def test_loop_carried_scan_captured_and_nested_if(rng, trips, limit):
    data = loop_model()
    e = ember.Engine(data)
    for n in (2, 5):
        feeds = {"M": np.array(trips), "limit": np.array(limit),
                 "x": rng.standard_normal((n, 3)).astype(np.float32),
                 "v0": rng.standard_normal((n, 3)).astype(np.float32)}
        got = check_against_ort(data, feeds, e)
        assert got["sums_t"].shape == (n, min(trips, limit))


def test_loop_zero_iterations_returns_initial_values(rng):
    data = loop_model()
    feeds = {"M": np.array(0), "limit": np.array(9), "x": np.ones((2, 3), np.float32),
             "v0": rng.standard_normal((2, 3)).astype(np.float32)}
    got = ember.Engine(data).run(feeds)
    np.testing.assert_array_equal(got["v_final"], feeds["v0"])
    assert got["v_final"].ctypes.data != feeds["v0"].ctypes.data
    assert got["sums_t"].shape[1] == 0


def test_endless_loop_fails_instead_of_hanging():
    data = model([oh.make_node("Loop", ["", "c", "v"], ["v_out"], name="forever", body=oh.make_graph(
        [oh.make_node("Identity", ["c_in"], ["c_out"]), oh.make_node("Identity", ["v_in"], ["v2"])],
        "body", [vi("i", T.INT64, []), vi("c_in", T.BOOL, []), vi("v_in")],
        [vi("c_out", T.BOOL, []), vi("v2")]))], [vi("c", T.BOOL, []), vi("v", shape=[2])],
        [vi("v_out")])
    with pytest.raises(ember.InputError, match="forever.*iterations"):
        ember.Engine(data).run({"c": np.array(True), "v": np.zeros(2, np.float32)})


# ---- memory, threads, bad subgraphs -----------------------------------------------------------

def test_memory_limit_counts_eager_results(rng):
    data = nonzero_model()
    x = np.abs(rng.standard_normal((20000, 5))).astype(np.float32) + 0.1  # every element > 0
    # Planned part: x > 0 (100 KB of bools). NonZero's result: 2 x 100000 int64 = 1.6 MB.
    e = ember.Engine(data, memory_limit=1 << 20)
    with pytest.raises(ember.InputError, match="nonzero.*memory_limit"):
        e.run({"x": x})
    check_against_ort(data, {"x": x[:100]}, e)


def test_concurrent_runs_with_eager_parts(rng):
    data = nested_if_model()
    e = ember.Engine(data)
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    jobs = []
    for k in range(16):
        x = rng.standard_normal((1 + k % 3, 6)).astype(np.float32) * (1 if k % 2 else -1)
        y = rng.standard_normal(x.shape).astype(np.float32)
        jobs.append(({"x": x, "y": y}, sess.run(None, {"x": x, "y": y})[0]))
    errors = []

    def worker(part):
        try:
            for _ in range(20):
                for feeds, want in part:
                    np.testing.assert_allclose(e.run(feeds)["out"], want, rtol=1e-5, atol=1e-5)
        except Exception as ex:  # noqa: BLE001 - reported below
            errors.append(ex)

    threads = [threading.Thread(target=worker, args=(jobs[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def test_bad_condition_and_body_fail_cleanly():
    # cond must be one bool: a float condition is refused when planned.
    data = model([oh.make_node("If", ["c"], ["y"], then_branch=oh.make_graph(
        [oh.make_node("Identity", ["x"], ["t"])], "t", [], [vi("t")]), else_branch=oh.make_graph(
        [oh.make_node("Neg", ["x"], ["e"])], "e", [], [vi("e")]))],
        [vi("c"), vi("x")], [vi("y")])
    e = ember.Engine(data)
    with pytest.raises(ember.InputError, match="cond must be bool"):
        e.run({"c": np.array(1.0, np.float32), "x": np.ones(2, np.float32)})
    # A body whose cond output is not a bool: refused when the loop runs.
    body = oh.make_graph([oh.make_node("Cast", ["c_in"], ["c_out"], to=T.FLOAT)], "body",
                         [vi("i", T.INT64, []), vi("c_in", T.BOOL, [])], [vi("c_out", T.FLOAT, [])])
    data = model([oh.make_node("Loop", ["M", ""], ["s"], name="loop", body=oh.make_graph(
        body.node, "body", body.input, list(body.output) + [vi("c_in", T.BOOL)]))],
        [vi("M", T.INT64, [])], [vi("s", T.BOOL)])
    with pytest.raises(ember.InputError, match="cond output must be one bool"):
        ember.Engine(data).run({"M": np.array(3)})


def test_malformed_subgraphs_are_model_errors():
    # A branch that reads a name nothing defines.
    bad = oh.make_graph([oh.make_node("Neg", ["nowhere"], ["e"])], "e", [], [vi("e")])
    ok = oh.make_graph([oh.make_node("Neg", ["x"], ["t"])], "t", [], [vi("t")])
    data = model([oh.make_node("If", ["c"], ["y"], then_branch=ok, else_branch=bad)],
                 [vi("c", T.BOOL, []), vi("x")], [vi("y")])
    with pytest.raises(ember.ModelError, match="nowhere"):
        ember.Engine(data)
    # Subgraphs nested past the limit.
    g = ok
    for k in range(20):
        g = oh.make_graph([oh.make_node("If", ["c"], [f"r{k}"], then_branch=g, else_branch=ok)],
                          f"level{k}", [], [vi(f"r{k}")])
    data = model([oh.make_node("If", ["c"], ["y"], then_branch=g, else_branch=g)],
                 [vi("c", T.BOOL, []), vi("x")], [vi("y")])
    with pytest.raises(ember.ModelError, match="nest deeper"):
        ember.Engine(data)
    # A Loop body with fewer outputs than the node needs.
    body = oh.make_graph([oh.make_node("Identity", ["c_in"], ["c_out"])], "body",
                         [vi("i", T.INT64, []), vi("c_in", T.BOOL, []), vi("v_in")],
                         [vi("c_out", T.BOOL, [])])
    data = model([oh.make_node("Loop", ["M", "", "v"], ["v_out"], name="loop", body=body)],
                 [vi("M", T.INT64, []), vi("v")], [vi("v_out")])
    with pytest.raises(ember.EmberError, match="body has 1 outputs, expected 2"):
        ember.Engine(data).run({"M": np.array(2), "v": np.ones(2, np.float32)})
