"""fuse_add_norm (cpp/src/graph/fuse_add_norm.cpp): a residual Add read by LayerNormalization /
RMSNormalization becomes one AddNorm node in device sessions only. CPU engines keep the pair;
a fake device holding every op shows AddNorm in its plan and answers with the CPU engine's
bits (its AddNorm runs the pair's own CPU kernels). The sum is output 1 where something else
reads it (pre-LN / LLaMA blocks); broadcast Adds and non-constant weights stay unfused."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto as T, helper as oh, numpy_helper

import ember
from ember import _core

FAKE = "fake-addnorm"
_core.register_fake_device(FAKE, _core.op_names(fused=True))
D = 40


def vi(name, shape=None):
    return oh.make_tensor_value_info(name, T.FLOAT, shape)


def model(nodes, inputs, outputs, inits, opset=18):
    g = oh.make_graph(nodes, "g", inputs, [vi(o) for o in outputs],
                      initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    return oh.make_model(g, opset_imports=[oh.make_opsetid("", opset)]).SerializeToString()


def weights(rng, *names, shape=(D,)):
    return {n: rng.standard_normal(shape).astype(np.float32) for n in names}


def post_ln(rng):
    """BERT's post-LN: y = LayerNorm(x + (x W + b)); only the norm is read."""
    inits = {"W": (rng.standard_normal((D, D)) / np.sqrt(D)).astype(np.float32),
             **weights(rng, "b", "gamma", "beta")}
    nodes = [oh.make_node("MatMul", ["x", "W"], ["xw"], name="mm"),
             oh.make_node("Add", ["xw", "b"], ["h"], name="bias"),
             oh.make_node("Add", ["h", "x"], ["s"], name="residual"),
             oh.make_node("LayerNormalization", ["s", "gamma", "beta"], ["y"], name="ln",
                          axis=-1, epsilon=1e-5)]
    return model(nodes, [vi("x", ["B", "S", D])], ["y"], inits)


def rms_written_out(x, w, out, p):
    """torch's export of LlamaRMSNorm: x / sqrt(mean(x^2) + eps) * w (fuse_rms_norm's input)."""
    return [oh.make_node("Mul", [x, x], [f"{p}sq"]),
            oh.make_node("ReduceMean", [f"{p}sq", "axes"], [f"{p}ms"], keepdims=1),
            oh.make_node("Add", [f"{p}ms", "eps"], [f"{p}mse"]),
            oh.make_node("Sqrt", [f"{p}mse"], [f"{p}rms"]),
            oh.make_node("Div", [x, f"{p}rms"], [f"{p}n"]),
            oh.make_node("Mul", [f"{p}n", w], [out])]


def pre_rms(rng):
    """A LLaMA-style pre-norm block: s1 = x + f(RMSNorm(x)); y = RMSNorm(s1 + g(RMSNorm(s1))).
    s1 is read twice (the norm and the next residual): the first AddNorm writes output 1."""
    inits = {"W1": (rng.standard_normal((D, D)) / np.sqrt(D)).astype(np.float32),
             "W2": (rng.standard_normal((D, D)) / np.sqrt(D)).astype(np.float32),
             **weights(rng, "w0", "w1", "w2"),
             "axes": np.array([-1], np.int64), "eps": np.array(1e-6, np.float32)}
    nodes = (rms_written_out("x", "w0", "n0", "a_")
             + [oh.make_node("MatMul", ["n0", "W1"], ["f"], name="mm1"),
                oh.make_node("Add", ["x", "f"], ["s1"], name="residual1")]
             + rms_written_out("s1", "w1", "n1", "b_")
             + [oh.make_node("MatMul", ["n1", "W2"], ["g"], name="mm2"),
                oh.make_node("Add", ["s1", "g"], ["s2"], name="residual2")]
             + rms_written_out("s2", "w2", "y", "c_"))
    return model(nodes, [vi("x", ["B", "S", D])], ["y"], inits)


def ops_of(eng, feeds):
    """The plan's ops, without a device's copy steps."""
    return [op for _n, op, _k, _i, _d in eng.plan_info(feeds)["nodes"] if op != "Copy"]


def run_cpu_and_fake(data, feeds):
    """Both engines' outputs and plans; the fake device's outputs equal the CPU's bit for bit."""
    with ember.Engine(data) as cpu, ember.Engine(data, device=FAKE) as dev:
        want, got = cpu.run(feeds), dev.run(feeds)
        cpu_ops, dev_ops = ops_of(cpu, feeds), ops_of(dev, feeds)
        assert dev.device_fallbacks == []
    assert sorted(got) == sorted(want)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    return want, cpu_ops, dev_ops


def test_post_ln_block_fuses_on_a_device_only(rng):
    data = post_ln(rng)
    for shape in ((1, 1), (2, 7), (3, 33)):
        x = rng.standard_normal((*shape, D)).astype(np.float32)
        want, cpu_ops, dev_ops = run_cpu_and_fake(data, {"x": x})
        assert "AddNorm" not in cpu_ops and "LayerNormalization" in cpu_ops, cpu_ops
        assert dev_ops.count("AddNorm") == 1 and "LayerNormalization" not in dev_ops, dev_ops
        # No plain Add left: the bias went into FusedMatMul's epilogue (fuse_matmul_epilogue),
        # the residual into AddNorm.
        assert "Add" not in dev_ops and dev_ops.count("FusedMatMul") == 1, dev_ops
        ref = ember.Engine(data, kernels="reference").run({"x": x})["y"]
        np.testing.assert_allclose(want["y"], ref, rtol=1e-5, atol=1e-5)


def test_pre_norm_rms_block_wires_the_sum_to_the_next_residual(rng):
    data = pre_rms(rng)
    for shape in ((1, 1), (2, 5), (1, 19)):
        x = rng.standard_normal((*shape, D)).astype(np.float32)
        want, cpu_ops, dev_ops = run_cpu_and_fake(data, {"x": x})
        assert "AddNorm" not in cpu_ops and cpu_ops.count("RMSNormalization") == 3, cpu_ops
        # Both residual Adds fused; the first norm (on the graph input) stays a plain norm.
        assert dev_ops.count("AddNorm") == 2 and dev_ops.count("RMSNormalization") == 1, dev_ops
        assert "Add" not in dev_ops, dev_ops
        ref = ember.Engine(data, kernels="reference").run({"x": x})["y"]
        np.testing.assert_allclose(want["y"], ref, rtol=1e-5, atol=1e-5)


def test_sum_read_before_the_norm_and_as_a_graph_output(rng):
    """s is read by a Relu listed between the Add and the norm, and is a graph output: the fused
    node takes the Add's place (so Relu still follows it) and writes s as output 1."""
    inits = weights(rng, "gamma")
    nodes = [oh.make_node("Add", ["a", "b"], ["s"], name="add"),
             oh.make_node("Relu", ["s"], ["t"], name="relu"),
             oh.make_node("LayerNormalization", ["s", "gamma"], ["y"], name="ln", axis=-1)]
    data = model(nodes, [vi("a", ["N", D]), vi("b", ["N", D])], ["y", "t", "s"], inits)
    feeds = {"a": rng.standard_normal((6, D)).astype(np.float32),
             "b": rng.standard_normal((6, D)).astype(np.float32)}
    want, cpu_ops, dev_ops = run_cpu_and_fake(data, feeds)
    assert cpu_ops == ["Add", "Relu", "LayerNormalization"], cpu_ops
    assert dev_ops == ["AddNorm", "Relu"], dev_ops
    np.testing.assert_array_equal(want["s"], feeds["a"] + feeds["b"])


@pytest.mark.parametrize("case", ["broadcast_rank", "broadcast_one", "scale_input", "bias_const",
                                  "stats_read"])
def test_patterns_that_stay_unfused(rng, case):
    gamma = weights(rng, "gamma")
    ln_in = ["s", "gamma"]
    a_shape, b_shape, outs = ["N", D], ["N", D], ["y"]
    inputs_extra, inits, ln_outs = [], dict(gamma), ["y"]
    add_in = ["a", "b"]
    if case == "broadcast_rank":  # b [D]: a broadcast, not a residual
        b_shape = [D]
    elif case == "broadcast_one":  # b [1, D] against a [N, D]
        a_shape, b_shape = [3, D], [1, D]
    elif case == "scale_input":  # the scale is fed at run time, not a constant
        inits = {}
        inputs_extra = [vi("gamma", [D])]
    elif case == "bias_const":  # Add(a, constant): a bias add
        add_in = ["a", "c"]
        inits["c"] = rng.standard_normal((4, D)).astype(np.float32)
    elif case == "stats_read":  # LayerNormalization's Mean output is read
        ln_outs, outs = ["y", "mean"], ["y", "mean"]
    nodes = [oh.make_node("Add", add_in, ["s"], name="add"),
             oh.make_node("LayerNormalization", ln_in, ln_outs, name="ln", axis=-1)]
    inputs = [vi("a", a_shape)] + ([vi("b", b_shape)] if "b" in add_in else []) + inputs_extra
    data = model(nodes, inputs, outs, inits)
    n = 3 if case == "broadcast_one" else 4
    feeds = {"a": rng.standard_normal((n, D)).astype(np.float32)}
    if "b" in add_in:
        feeds["b"] = rng.standard_normal(tuple(n if d == "N" else d for d in b_shape)).astype(np.float32)
    if case == "scale_input":
        feeds["gamma"] = rng.standard_normal(D).astype(np.float32)
    _want, _cpu_ops, dev_ops = run_cpu_and_fake(data, feeds)
    assert dev_ops == ["Add", "LayerNormalization"], dev_ops
