"""Load-time fusion passes (cpp/src/graph/fuse.cpp) against onnxruntime and against ember's
unfused reference path: MatMul + bias + activation -> FusedMatMul (packed weights), and the
erf-GELU forms exporters write -> Gelu. Each model checks that the fusion happened (plan_info)
and that the answer did not change; patterns that must not fuse (a shared intermediate, a
graph output in the middle, a non-constant weight) stay as they are.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from onnx import TensorProto as T, helper as oh, numpy_helper

import ember

ort = pytest.importorskip("onnxruntime")
K, N = 48, 40


def vi(name, shape=None):
    return oh.make_tensor_value_info(name, T.FLOAT, shape)


def build(nodes, outputs, rng, extra_inits=()):
    inits = [numpy_helper.from_array(rng.standard_normal((K, N)).astype(np.float32), "W"),
             numpy_helper.from_array(rng.standard_normal(N).astype(np.float32), "bias"),
             numpy_helper.from_array(np.float32(math.sqrt(2)), "sqrt2"),
             numpy_helper.from_array(np.float32(1 / math.sqrt(2)), "inv_sqrt2"),
             numpy_helper.from_array(np.float32(1), "one"),
             numpy_helper.from_array(np.float32(0.5), "half"), *extra_inits]
    g = oh.make_graph(nodes, "g", [vi("x", ["B", "S", K])], [vi(o) for o in outputs],
                      initializer=inits)
    return oh.make_model(g, opset_imports=[oh.make_opsetid("", 17)]).SerializeToString()


def mm_bias(out="h"):
    return [oh.make_node("MatMul", ["x", "W"], ["xw"], name="mm"),
            oh.make_node("Add", ["xw", "bias"], [out], name="bias_add")]


GELU_FORMS = {
    # x * 0.5 * (1 + erf(x / sqrt2)): torch / HF BERT
    "div-x-half-last": [oh.make_node("Div", ["h", "sqrt2"], ["u"]), oh.make_node("Erf", ["u"], ["e"]),
                        oh.make_node("Add", ["e", "one"], ["s"]), oh.make_node("Mul", ["h", "s"], ["p"]),
                        oh.make_node("Mul", ["p", "half"], ["y"])],
    # (x * 0.5) * (1 + erf(x * 1/sqrt2)): ember's BERT builder
    "mul-half-first": [oh.make_node("Mul", ["h", "inv_sqrt2"], ["u"]), oh.make_node("Erf", ["u"], ["e"]),
                       oh.make_node("Add", ["one", "e"], ["s"]), oh.make_node("Mul", ["h", "half"], ["hh"]),
                       oh.make_node("Mul", ["hh", "s"], ["y"])],
}


def run_both(data, x):
    fast = ember.Engine(data)
    got = fast.run({"x": x})
    want = ember.Engine(data, kernels="reference").run({"x": x})
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    for name, w in zip(names, sess.run(None, {"x": x})):
        np.testing.assert_allclose(got[name], w, rtol=2e-5, atol=2e-5, err_msg=name)
        np.testing.assert_allclose(want[name], w, rtol=2e-5, atol=2e-5, err_msg=name)
    return [(op, kernel) for _name, op, kernel, _isa in fast.plan_info({"x": x})["nodes"]]


@pytest.mark.parametrize("form", list(GELU_FORMS))
def test_matmul_bias_gelu_fuses_into_one_node(rng, form):
    data = build(mm_bias() + GELU_FORMS[form], ["y"], rng)
    for shape in ((1, 1), (2, 7), (3, 64)):
        ops = run_both(data, rng.standard_normal((*shape, K)).astype(np.float32))
        assert [op for op, _ in ops] == ["FusedMatMul"], ops


@pytest.mark.parametrize("act", ["Relu", "Gelu-tanh", "none"])
def test_matmul_bias_activation(rng, act):
    nodes = mm_bias()
    if act == "Relu":
        nodes.append(oh.make_node("Relu", ["h"], ["y"]))
    elif act == "Gelu-tanh":
        nodes.append(oh.make_node("Gelu", ["h"], ["y"], approximate="tanh"))
    else:
        nodes.append(oh.make_node("Identity", ["h"], ["y"]))
    opset = 20 if act.startswith("Gelu") else 17
    data = build(nodes, ["y"], rng)
    if opset == 20:
        import onnx
        m = onnx.load_from_string(data)
        m.opset_import[0].version = 20
        data = m.SerializeToString()
    ops = run_both(data, rng.standard_normal((2, 5, K)).astype(np.float32))
    assert ops[0][0] == "FusedMatMul"
    assert len([op for op, _ in ops if op != "Identity"]) == 1, ops


def test_no_fusion_where_an_intermediate_is_shared_or_an_output(rng):
    # xw is also an output: the weights still pack, but bias and Relu stay apart; h is an
    # output: the Relu stays apart.
    nodes = mm_bias() + [oh.make_node("Relu", ["h"], ["y"])]
    data = build(nodes, ["y", "xw"], rng)
    ops = [op for op, _ in run_both(data, rng.standard_normal((2, 3, K)).astype(np.float32))]
    assert ops == ["FusedMatMul", "Add", "Relu"], ops
    data = build(nodes, ["y", "h"], rng)
    ops = [op for op, _ in run_both(data, rng.standard_normal((2, 3, K)).astype(np.float32))]
    assert ops == ["FusedMatMul", "Relu"], ops


def test_gelu_pattern_with_wrong_constant_is_left_alone(rng):
    nodes = mm_bias() + [oh.make_node("Div", ["h", "one"], ["u"]), oh.make_node("Erf", ["u"], ["e"]),
                         oh.make_node("Add", ["e", "one"], ["s"]), oh.make_node("Mul", ["h", "s"], ["p"]),
                         oh.make_node("Mul", ["p", "half"], ["y"])]
    ops = [op for op, _ in run_both(build(nodes, ["y"], rng),
                                    rng.standard_normal((2, 3, K)).astype(np.float32))]
    assert "Erf" in ops and "Gelu" not in ops
