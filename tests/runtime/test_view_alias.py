"""View ops (Reshape, Squeeze, Unsqueeze, Flatten, Identity) between two arena intermediates
alias (cpp/src/runtime/plan.cpp): the output is the input's memory, the step does nothing. The
answers must not change, whatever reads the input or the view later, and values that are not
arena intermediates (feeds, constants, requested outputs) must still be copied."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto as T, helper as oh, numpy_helper

import ember
from ember import _core


def model(nodes, inputs, outputs, inits=()):
    g = oh.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    return oh.make_model(g, opset_imports=[oh.make_opsetid("", 17)]).SerializeToString()


def vi(name, shape, dtype=T.FLOAT):
    return oh.make_tensor_value_info(name, dtype, shape)


def kernels(eng, feeds):
    return {n[0]: n[2] for n in eng.plan_info(feeds)["nodes"]}


def test_a_reshape_chain_aliases_and_the_input_stays_readable(rng):
    shape = numpy_helper.from_array(np.array([6, 4], np.int64), "shape")
    axes = numpy_helper.from_array(np.array([0], np.int64), "axes")
    nodes = [
        oh.make_node("Relu", ["x"], ["r"], name="relu"),
        oh.make_node("Reshape", ["r", "shape"], ["v1"], name="reshape"),
        oh.make_node("Unsqueeze", ["v1", "axes"], ["v2"], name="unsqueeze"),
        oh.make_node("Squeeze", ["v2", "axes"], ["v3"], name="squeeze"),
        oh.make_node("Neg", ["v3"], ["n"], name="neg"),
        # r is read again after its views: the view must not have changed it
        oh.make_node("Sigmoid", ["r"], ["s"], name="sig"),
        oh.make_node("Flatten", ["s"], ["f"], name="flatten", axis=1),
        oh.make_node("Identity", ["f"], ["i"], name="ident"),
        oh.make_node("Mul", ["i", "i"], ["y2"], name="sq"),
    ]
    data = model(nodes, [vi("x", [2, 3, 4])], [vi("n", None), vi("y2", None)], [shape, axes])
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    eng = ember.Engine(data)
    got = eng.run({"x": x})
    r = np.maximum(x, 0)
    np.testing.assert_array_equal(got["n"], -r.reshape(6, 4))
    s = 1 / (1 + np.exp(-r.astype(np.float64)))
    np.testing.assert_allclose(got["y2"], (s * s).reshape(2, 12), rtol=1e-6)
    ref = ember.Engine(data, kernels="reference").run({"x": x})
    np.testing.assert_array_equal(got["n"], ref["n"])
    np.testing.assert_allclose(got["y2"], ref["y2"], rtol=1e-6)  # Sigmoid's kernels: ulps
    k = kernels(eng, {"x": x})
    assert [k[n] for n in ("reshape", "unsqueeze", "squeeze", "flatten", "ident")] == ["alias"] * 5, k
    assert kernels(ember.Engine(data, kernels="reference"), {"x": x})["reshape"] == "reference"
    # Runs repeat on the same arena: the second answer is the first.
    again = eng.run({"x": x})
    np.testing.assert_array_equal(again["n"], got["n"])


def test_feeds_constants_and_outputs_are_not_aliased(rng):
    shape = numpy_helper.from_array(np.array([4, 3], np.int64), "shape")
    c = numpy_helper.from_array(rng.standard_normal((3, 4)).astype(np.float32), "c")
    nodes = [
        oh.make_node("Reshape", ["x", "shape"], ["from_feed"], name="of_feed"),
        oh.make_node("Reshape", ["c", "shape"], ["from_const"], name="of_const"),
        oh.make_node("Add", ["from_feed", "from_const"], ["sum"], name="add"),
        oh.make_node("Reshape", ["sum", "shape"], ["out"], name="to_output"),  # a graph output
    ]
    data = model(nodes, [vi("x", [3, 4])], [vi("out", None), vi("sum", None)], [shape, c])
    x = rng.standard_normal((3, 4)).astype(np.float32)
    eng = ember.Engine(data)
    got = eng.run({"x": x})
    want = x.reshape(4, 3) + numpy_helper.to_array(c).reshape(4, 3)
    np.testing.assert_array_equal(got["sum"], want)
    np.testing.assert_array_equal(got["out"], want)
    k = kernels(eng, {"x": x})
    assert k.get("to_output") != "alias" and k.get("of_feed") != "alias", k
    # The output is its own buffer: changing it leaves the other output alone.
    got["out"][...] = 0
    assert np.array_equal(got["sum"], want)


def test_a_view_in_an_eagerly_split_plan(rng):
    # NonZero splits the plan; r's view is carried across the boundary into the continuation.
    shape = numpy_helper.from_array(np.array([-1], np.int64), "shape")
    nodes = [
        oh.make_node("Relu", ["x"], ["r"], name="relu"),
        oh.make_node("Reshape", ["r", "shape"], ["flat"], name="reshape"),
        oh.make_node("NonZero", ["flat"], ["nz"], name="nonzero"),
        oh.make_node("Squeeze", ["nz"], ["idx"], name="squeeze_idx"),
        oh.make_node("Gather", ["flat", "idx"], ["y"], name="gather", axis=0),
    ]
    data = model(nodes, [vi("x", [5, 7])], [vi("y", None)], [shape])
    x = rng.standard_normal((5, 7)).astype(np.float32)
    got = ember.Engine(data).run({"x": x})["y"]
    flat = np.maximum(x, 0).reshape(-1)
    np.testing.assert_array_equal(got, flat[flat != 0])


def test_host_views_alias_in_a_device_session(rng):
    name = "fake-alias"
    _core.register_fake_device(name, ["MatMul"])
    shape = numpy_helper.from_array(np.array([4, 6], np.int64), "shape")
    w = numpy_helper.from_array(rng.standard_normal((6, 6)).astype(np.float32), "w")
    nodes = [
        oh.make_node("Relu", ["x"], ["r"], name="relu"),               # cpu
        oh.make_node("Reshape", ["r", "shape"], ["v"], name="reshape"),  # cpu, aliases
        oh.make_node("MatMul", ["v", "w"], ["m"], name="mm"),            # the device
        oh.make_node("Reshape", ["m", "shape"], ["y"], name="back"),     # cpu
    ]
    data = model(nodes, [vi("x", [2, 12])], [vi("y", None)], [shape, w])
    x = rng.standard_normal((2, 12)).astype(np.float32)
    got = ember.Engine(data, device=name).run({"x": x})["y"]
    want = np.maximum(x, 0).reshape(4, 6) @ numpy_helper.to_array(w)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
