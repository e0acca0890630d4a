"""Runtime behaviour on the CPU backend: threads, plan cache, memory ownership, fork."""

import os
import signal
import threading

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import ember


def mlp_model(width=64, depth=3, seed=0):
    """x[batch, width] -> depth x (MatMul + Add + Relu) -> Softmax, with a dynamic batch."""
    rng = np.random.default_rng(seed)
    nodes, inits, prev = [], [], "x"
    for i in range(depth):
        w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
        b = rng.standard_normal(width).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes += [helper.make_node("MatMul", [prev, f"w{i}"], [f"mm{i}"]),
                  helper.make_node("Add", [f"mm{i}", f"b{i}"], [f"a{i}"]),
                  helper.make_node("Relu", [f"a{i}"], [f"r{i}"])]
        prev = f"r{i}"
    nodes.append(helper.make_node("Softmax", [prev], ["y"], axis=-1))
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def numpy_mlp(model, x):
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    h = x.astype(np.float64)
    i = 0
    while f"w{i}" in inits:
        h = np.maximum(h @ inits[f"w{i}"] + inits[f"b{i}"], 0)
        i += 1
    e = np.exp(h - h.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.fixture(scope="module")
def model():
    return mlp_model()


def test_matches_numpy_on_fresh_data(model):
    x = np.random.default_rng().standard_normal((7, 64)).astype(np.float32)
    with ember.Engine(model) as eng:
        y = eng.run({"x": x})["y"]
    np.testing.assert_allclose(y, numpy_mlp(model, x), rtol=1e-4, atol=1e-6)


def test_concurrent_runs_match_serial_runs(model):
    eng = ember.Engine(model)
    rng = np.random.default_rng()
    xs = [rng.standard_normal((b, 64)).astype(np.float32) for b in (1, 3, 3, 8, 1, 5, 8, 3) * 4]
    expected = [eng.run({"x": x})["y"] for x in xs]
    results = [None] * len(xs)
    errors = []

    def worker(k):
        try:
            for i in range(k, len(xs), 8):
                results[i] = eng.run({"x": xs[i]})["y"]
        except Exception as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    for got, want in zip(results, expected):
        np.testing.assert_array_equal(got, want)


def test_results_do_not_depend_on_batch(model):
    """Row i alone equals row i inside a batch of 33 (batch invariance), bit for bit."""
    x = np.random.default_rng().standard_normal((33, 64)).astype(np.float32)
    with ember.Engine(model) as eng:
        full = eng.run({"x": x})["y"]
        for i in (0, 7, 32):
            np.testing.assert_array_equal(eng.run({"x": x[i:i + 1]})["y"][0], full[i])


def test_thread_cap_gives_identical_results(model):
    x = np.random.default_rng().standard_normal((16, 64)).astype(np.float32)
    with ember.Engine(model, threads=1) as one, ember.Engine(model) as many:
        np.testing.assert_array_equal(one.run({"x": x})["y"], many.run({"x": x})["y"])


def test_plan_cache_is_bounded(model):
    eng = ember.Engine(model, plan_cache_size=2)
    for b in range(1, 6):
        eng.run({"x": np.ones((b, 64), np.float32)})
    assert eng._session.plans_cached == 2


def test_outputs_own_their_memory(model):
    eng = ember.Engine(model)
    x = np.random.default_rng().standard_normal((2, 64)).astype(np.float32)
    a = eng.run({"x": x})["y"]
    keep = a.copy()
    b = eng.run({"x": x * 2})["y"]   # same plan, same arena
    np.testing.assert_array_equal(a, keep)
    assert not np.shares_memory(a, b)
    a[:] = 0                          # writable, and writing it touches nothing of ember's
    np.testing.assert_array_equal(eng.run({"x": x})["y"], keep)


def test_non_contiguous_feed(model):
    base = np.random.default_rng().standard_normal((64, 6)).astype(np.float32)
    x = base.T                        # a transposed view: strides are not C order
    with ember.Engine(model) as eng:
        np.testing.assert_array_equal(eng.run({"x": x})["y"], eng.run({"x": np.ascontiguousarray(x)})["y"])


def test_feed_is_not_modified(model):
    x = np.random.default_rng().standard_normal((3, 64)).astype(np.float32)
    keep = x.copy()
    with ember.Engine(model) as eng:
        eng.run({"x": x})
    np.testing.assert_array_equal(x, keep)


def test_memory_limit(model):
    eng = ember.Engine(model, memory_limit=64 * 1024)
    eng.run({"x": np.ones((4, 64), np.float32)})
    with pytest.raises(ember.InputError, match="memory_limit"):
        eng.run({"x": np.ones((4096, 64), np.float32)})


def test_closed_engine(model):
    eng = ember.Engine(model)
    eng.close()
    with pytest.raises(ember.EmberError, match="closed"):
        eng.run({"x": np.ones((1, 64), np.float32)})


def test_gil_is_released_during_run():
    """A Python thread makes progress while a long run is inside C++."""
    eng = ember.Engine(mlp_model(width=512, depth=8))
    x = np.ones((256, 512), np.float32)
    eng.run({"x": x})
    ticks = []
    done = threading.Event()

    def ticker():
        while not done.is_set():
            ticks.append(1)

    t = threading.Thread(target=ticker)
    t.start()
    try:
        for _ in range(3):
            eng.run({"x": x})
    finally:
        done.set()
        t.join()
    assert len(ticks) > 100


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_fork_after_pool_started(model):
    """The child of a fork gets a fresh pool: a multithreaded run there must not hang."""
    eng = ember.Engine(model)
    x = np.random.default_rng().standard_normal((64, 64)).astype(np.float32)
    want = eng.run({"x": x})["y"]
    pid = os.fork()
    if pid == 0:  # child: exit code says whether it matched
        try:
            signal.alarm(60)
            ok = np.array_equal(eng.run({"x": x})["y"], want)
            os._exit(0 if ok else 3)
        except BaseException:
            os._exit(4)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
