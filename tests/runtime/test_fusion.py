"""Load-time fusion passes (cpp/src/graph/fuse.cpp) against onnxruntime and against ember's
unfused reference path: MatMul + bias + activation -> FusedMatMul (packed weights), the
erf-GELU forms exporters write -> Gelu, and written-out RMSNorm (torch's exports of it too) ->
RMSNormalization, 3x3 stride-1 Conv [+ Relu] -> WinogradConv, other 2-D Conv [+ Relu] ->
FusedConv. Each model checks that the fusion happened (plan_info) and that the answer
did not change; patterns that must not fuse (a shared intermediate, a graph output in the
middle, a non-constant weight) stay as they are.
"""
from __future__ import annotations

import math

import numpy as np
import onnx
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
    return [(op, kernel) for _name, op, kernel, _isa, _dev in fast.plan_info({"x": x})["nodes"]]


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


GEMM_CASES = {
    # name: (Gemm attrs, C shape or None, fuses)
    "transB-bias": (dict(transB=1), (N,), True),
    "bias-row": (dict(), (1, N), True),
    "bias-scalar": (dict(transB=1), (1,), True),
    "no-bias": (dict(transB=1), None, True),
    "alpha": (dict(alpha=0.5), (N,), False),
    "beta": (dict(beta=2.0), (N,), False),
    "transA": (dict(transA=1), (N,), False),
    "bias-matrix": (dict(), (5, N), False),
}


@pytest.mark.parametrize("case", list(GEMM_CASES))
def test_gemm_with_constant_weights_becomes_a_fused_matmul(rng, case):
    attrs, c_shape, fuses = GEMM_CASES[case]
    w = rng.standard_normal((N, K) if attrs.get("transB") else (K, N)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "Wg")]
    ins = ["x2", "Wg"]
    if c_shape is not None:
        inits.append(numpy_helper.from_array(rng.standard_normal(c_shape).astype(np.float32), "C"))
        ins.append("C")
    a_shape = [K, 5] if attrs.get("transA") else [5, K]
    nodes = [oh.make_node("Gemm", ins, ["g"], **attrs), oh.make_node("Relu", ["g"], ["y"])]
    g = oh.make_graph(nodes, "g", [vi("x2", a_shape)], [vi("y")], initializer=inits)
    data = oh.make_model(g, opset_imports=[oh.make_opsetid("", 17)]).SerializeToString()
    x = rng.standard_normal(a_shape).astype(np.float32)
    fast = ember.Engine(data)
    want = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"x2": x})[0]
    np.testing.assert_allclose(fast.run({"x2": x})["y"], want, rtol=2e-5, atol=2e-5)
    ops = [op for _n, op, _k, _i, _d in fast.plan_info({"x2": x})["nodes"]]
    assert ops == (["FusedMatMul"] if fuses else ["Gemm", "Relu"]), ops


def test_no_fusion_where_an_intermediate_is_shared_or_an_output(rng):
    # xw is also an output: the weights still pack, but bias and Relu stay apart; h is an
    # output: the Relu stays apart.
    nodes = mm_bias() + [oh.make_node("Relu", ["h"], ["y"])]
    data = build(nodes, ["y", "xw"], rng)
    ops = [op for op, _ in run_both(data, rng.standard_normal((2, 3, K)).astype(np.float32))]
    assert ops == ["FusedMatMul", "ElementwiseChain"], ops  # Add -> Relu: a chain, not a bias
    data = build(nodes, ["y", "h"], rng)
    ops = [op for op, _ in run_both(data, rng.standard_normal((2, 3, K)).astype(np.float32))]
    assert ops == ["FusedMatMul", "Relu"], ops


def test_gelu_pattern_with_wrong_constant_is_left_alone(rng):
    nodes = mm_bias() + [oh.make_node("Div", ["h", "one"], ["u"]), oh.make_node("Erf", ["u"], ["e"]),
                         oh.make_node("Add", ["e", "one"], ["s"]), oh.make_node("Mul", ["h", "s"], ["p"]),
                         oh.make_node("Mul", ["p", "half"], ["y"])]
    ops = [op for op, _ in run_both(build(nodes, ["y"], rng),
                                    rng.standard_normal((2, 3, K)).astype(np.float32))]
    assert "Gelu" not in ops and "ElementwiseChain" in ops, ops  # Div -> Erf -> Add -> Mul


@pytest.mark.parametrize("conv_bias", [True, False])
def test_conv_batch_norm_folds_into_the_conv(rng, conv_bias):
    c_in, c_out = 3, 8
    inits = [numpy_helper.from_array(rng.standard_normal((c_out, c_in, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.uniform(0.5, 2, c_out).astype(np.float32), "scale"),
             numpy_helper.from_array(rng.standard_normal(c_out).astype(np.float32), "beta"),
             numpy_helper.from_array(rng.standard_normal(c_out).astype(np.float32), "mean"),
             numpy_helper.from_array(rng.uniform(0.1, 3, c_out).astype(np.float32), "var"),
             numpy_helper.from_array(rng.standard_normal(c_out).astype(np.float32), "b")]
    conv_in = ["x", "w", "b"] if conv_bias else ["x", "w"]
    nodes = [oh.make_node("Conv", conv_in, ["c"], name="conv", pads=[1, 1, 1, 1]),
             oh.make_node("BatchNormalization", ["c", "scale", "beta", "mean", "var"], ["bn"],
                          name="bn", epsilon=1e-3),
             oh.make_node("Relu", ["bn"], ["y"], name="relu")]
    g = oh.make_graph(nodes, "g", [oh.make_tensor_value_info("x", T.FLOAT, ["N", c_in, 9, 11])],
                      [vi("y")], initializer=inits)
    data = oh.make_model(g, opset_imports=[oh.make_opsetid("", 17)]).SerializeToString()
    ops = [op for op, _ in run_both(data, rng.standard_normal((2, c_in, 9, 11)).astype(np.float32))]
    # 3 input channels: too few for the Winograd form; BN folded, then the Relu fused.
    assert ops == ["FusedConv"], ops


def conv_model(rng, c_in=24, c_out=20, relu=True, bias=True, w_input=False, hw=(13, 10), **attrs):
    k = attrs.pop("k", 3)
    group = attrs.get("group", 1)
    inits = [numpy_helper.from_array(rng.standard_normal(c_out).astype(np.float32), "b")]
    if not w_input:
        w = rng.standard_normal((c_out, c_in // group, k, k)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, "w"))
    nodes = [oh.make_node("Conv", ["x", "w", "b"] if bias else ["x", "w"], ["c" if relu else "y"],
                          name="conv", **attrs)]
    if relu:
        nodes.append(oh.make_node("Relu", ["c"], ["y"], name="relu"))
    inputs = [oh.make_tensor_value_info("x", T.FLOAT, ["N", c_in, *hw])]
    if w_input:
        inputs.append(oh.make_tensor_value_info("w", T.FLOAT, [c_out, c_in // group, k, k]))
    g = oh.make_graph(nodes, "g", inputs, [vi("y")], initializer=inits)
    return oh.make_model(g, opset_imports=[oh.make_opsetid("", 17)]).SerializeToString()


@pytest.mark.parametrize("case", [
    dict(pads=[1, 1, 1, 1]), dict(pads=[0, 2, 1, 0], relu=False), dict(auto_pad="SAME_UPPER", bias=False),
    dict(auto_pad="VALID"), dict(strides=[1, 1], dilations=[1, 1], kernel_shape=[3, 3], pads=[1, 1, 1, 1])])
def test_conv3x3_runs_in_winograd_form_and_matches_onnxruntime(rng, case):
    data = conv_model(rng, **case)
    x = rng.standard_normal((2, 24, 13, 10)).astype(np.float32)
    ops = run_both(data, x)
    assert ops == [("WinogradConv", ops[0][1])], ops  # the Relu in its epilogue
    direct = ember.Engine(data, kernels="reference").run({"x": x})["y"]
    np.testing.assert_allclose(ember.Engine(data).run({"x": x})["y"], direct, rtol=1e-5, atol=1e-4)


def residual_model(rng, r_shape, relu=True, r_const=False, second_reader=False):
    """x -> Conv 3x3 -> Add(., r) [-> Relu]; r fed (or a constant) of r_shape."""
    w = rng.standard_normal((20, 24, 3, 3)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w")]
    inputs = [oh.make_tensor_value_info("x", T.FLOAT, ["N", 24, 13, 10])]
    if r_const:
        inits.append(numpy_helper.from_array(rng.standard_normal(r_shape).astype(np.float32), "r"))
    else:
        inputs.append(oh.make_tensor_value_info("r", T.FLOAT, [str(d) if d is None else d
                                                                for d in r_shape]))
    nodes = [oh.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             oh.make_node("Add", ["r", "c"], ["s" if relu else "y"], name="add")]
    outputs = [vi("y")]
    if relu:
        nodes.append(oh.make_node("Relu", ["s"], ["y"], name="relu"))
    if second_reader:
        outputs.append(vi("s"))
    g = oh.make_graph(nodes, "g", inputs, outputs, initializer=inits)
    return oh.make_model(g, opset_imports=[oh.make_opsetid("", 17)]).SerializeToString()


@pytest.mark.parametrize("r_shape", [(2, 20, 13, 10), (1, 20, 1, 1), (20, 13, 10)])
@pytest.mark.parametrize("relu", [True, False])
def test_conv3x3_residual_add_and_relu_run_in_the_winograd_epilogue(rng, r_shape, relu):
    data = residual_model(rng, r_shape, relu)
    x = rng.standard_normal((2, 24, 13, 10)).astype(np.float32)
    feeds = {"x": x, "r": rng.standard_normal(r_shape).astype(np.float32)}
    eng = ember.Engine(data)
    assert [op for _n, op, *_ in eng.plan_info(feeds)["nodes"]] == ["WinogradConv"]
    got = eng.run(feeds)["y"]
    want = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    ref = ember.Engine(data, kernels="reference").run(feeds)["y"]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-4)


def test_residual_add_the_winograd_form_leaves_apart(rng):
    x = rng.standard_normal((1, 24, 13, 10)).astype(np.float32)
    const = residual_model(rng, (20, 1, 1), r_const=True)  # a bias as an Add: not a residual
    ops = [op for _n, op, *_ in ember.Engine(const).plan_info({"x": x})["nodes"]]
    assert ops[0] == "WinogradConv" and len(ops) == 2, ops
    shared = residual_model(rng, (1, 20, 13, 10), second_reader=True)  # the sum read twice
    feeds = {"x": x, "r": rng.standard_normal((1, 20, 13, 10)).astype(np.float32)}
    eng = ember.Engine(shared)
    ops = [op for _n, op, *_ in eng.plan_info(feeds)["nodes"]]
    assert ops == ["WinogradConv", "Relu"], ops
    got = eng.run(feeds)
    ref = ember.Engine(shared, kernels="reference").run(feeds)
    for k in ("y", "s"):
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("case", [dict(strides=[2, 2]), dict(dilations=[2, 2]), dict(group=2),
                                  dict(c_in=3), dict(c_out=8), dict(k=5), dict(w_input=True)])
def test_convs_winograd_does_not_cover_stay_direct(rng, case):
    data = conv_model(rng, pads=[1, 1, 1, 1], **case)
    x = rng.standard_normal((1, case.get("c_in", 24), 13, 10)).astype(np.float32)
    feeds = {"x": x}
    if case.get("w_input"):
        feeds["w"] = rng.standard_normal((20, 24, 3, 3)).astype(np.float32)
    eng = ember.Engine(data)
    assert "WinogradConv" not in [op for _n, op, *_ in eng.plan_info(feeds)["nodes"]]


@pytest.mark.parametrize("hw, dims, want", [
    ((7, 7), (7, 7), "FusedConv"),           # 49 outputs a plane: the direct kernel
    ((9, 9), (9, 9), "WinogradConv"),        # 81
    ((7, 7), ("H", "W"), "WinogradConv"),    # the plane unknown at load: the default
])
def test_wide_conv3x3_on_a_small_plane_runs_direct(rng, hw, dims, want):
    """512 -> 512 channels: Winograd's U (16/9 of the weights) would stream from memory for
    few outputs; the choice is made at load from the declared dims, whatever the batch."""
    w = (rng.standard_normal((512, 512, 3, 3)) * 0.02).astype(np.float32)
    nodes = [oh.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             oh.make_node("Relu", ["c"], ["y"])]
    g = oh.make_graph(nodes, "g", [oh.make_tensor_value_info("x", T.FLOAT, ["N", 512, *dims])],
                      [vi("y")], initializer=[numpy_helper.from_array(w, "w")])
    data = oh.make_model(g, opset_imports=[oh.make_opsetid("", 17)]).SerializeToString()
    eng = ember.Engine(data)
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    for n in (1, 3):
        x = rng.standard_normal((n, 512, *hw)).astype(np.float32)
        assert [op for _n, op, *_ in eng.plan_info({"x": x})["nodes"]] == [want]
        np.testing.assert_allclose(eng.run({"x": x})["y"], sess.run(None, {"x": x})[0],
                                   rtol=1e-4, atol=1e-4)


def test_ember_winograd_0_keeps_the_direct_conv(rng, monkeypatch):
    data = conv_model(rng, pads=[1, 1, 1, 1])
    x = rng.standard_normal((1, 24, 13, 10)).astype(np.float32)
    monkeypatch.setenv("EMBER_WINOGRAD", "0")
    ops = [op for _n, op, *_ in ember.Engine(data).plan_info({"x": x})["nodes"]]
    assert ops == ["FusedConv"], ops  # the direct sums, the Relu in the epilogue
    monkeypatch.setenv("EMBER_FUSED_CONV", "0")
    ops = [op for _n, op, *_ in ember.Engine(data).plan_info({"x": x})["nodes"]]
    assert ops == ["Conv", "Relu"], ops


@pytest.mark.parametrize("case", [
    dict(c_in=3, c_out=64, k=7, strides=[2, 2], pads=[3, 3, 3, 3]),          # a stem
    dict(c_in=20, c_out=300, strides=[2, 2], pads=[1, 1, 1, 1]),             # packed panels
    dict(c_in=9, c_out=260, relu=False, bias=False, strides=[2, 1], pads=[0, 1, 2, 1]),
    dict(c_in=6, c_out=10, k=1, strides=[2, 2]),                             # 1x1 downsample
    dict(c_in=12, c_out=257, dilations=[2, 2], pads=[2, 1, 2, 0]),
    dict(c_in=12, c_out=257, strides=[2, 2], auto_pad="SAME_UPPER")])
def test_convs_left_by_winograd_run_fused_with_their_relu(rng, case):
    """FusedConv: Conv's sums (Conv's GEMM, or the swapped-role one on weights packed at
    load from 256 output channels), the Relu in the epilogue; the same bits as Conv then Relu."""
    data = conv_model(rng, **case)
    for n in (1, 3):
        x = rng.standard_normal((n, case["c_in"], 13, 10)).astype(np.float32)
        ops = run_both(data, x)
        assert [op for op, _ in ops] == ["FusedConv"], ops


def test_fused_conv_gives_conv_then_relu_bits(rng, monkeypatch):
    data = conv_model(rng, c_in=16, c_out=256, strides=[2, 2], pads=[1, 1, 1, 1], hw=(15, 15))
    x = rng.standard_normal((2, 16, 15, 15)).astype(np.float32)
    fused = ember.Engine(data).run({"x": x})["y"]
    monkeypatch.setenv("EMBER_FUSED_CONV", "0")
    apart = ember.Engine(data)
    assert [op for _n, op, *_ in apart.plan_info({"x": x})["nodes"]] == ["Conv", "Relu"]
    np.testing.assert_array_equal(fused, apart.run({"x": x})["y"])
    one = ember.Engine(data).run({"x": x[1:]})["y"]  # an image alone: its batch's bits
    np.testing.assert_array_equal(one, apart.run({"x": x})["y"][1:])


def test_conv_relu_with_a_second_reader_keeps_the_relu_apart(rng):
    w = rng.standard_normal((8, 4, 3, 3)).astype(np.float32)
    nodes = [oh.make_node("Conv", ["x", "w"], ["c"], strides=[2, 2], pads=[1, 1, 1, 1]),
             oh.make_node("Relu", ["c"], ["y"]), oh.make_node("Neg", ["c"], ["z"])]
    g = oh.make_graph(nodes, "g", [oh.make_tensor_value_info("x", T.FLOAT, ["N", 4, 9, 9])],
                      [vi("y"), vi("z")], initializer=[numpy_helper.from_array(w, "w")])
    data = oh.make_model(g, opset_imports=[oh.make_opsetid("", 17)]).SerializeToString()
    ops = [op for op, _ in run_both(data, rng.standard_normal((1, 4, 9, 9)).astype(np.float32))]
    assert ops[0] == "FusedConv" and "Relu" in ops, ops


def attention_model(rng, scale_op, mask_kind, heads=2, d=8):
    """q, k, v [B, H, S, D] fed; scores = q @ k^T (a Transpose node), scaled, masked, softmax,
    @ v: the pattern torch and HF exports write."""
    nodes = [oh.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
             oh.make_node("MatMul", ["q", "kt"], ["s"], name="qk")]
    inits = []
    if scale_op == "div":
        nodes.append(oh.make_node("Div", ["s", "c"], ["s2"], name="scale"))
        inits.append(numpy_helper.from_array(np.float32(math.sqrt(d)), "c"))
    else:
        nodes.append(oh.make_node("Mul", ["c", "s"], ["s2"], name="scale"))
        inits.append(numpy_helper.from_array(np.array([1 / math.sqrt(d)], np.float32), "c"))
    x = "s2"
    inputs = [oh.make_tensor_value_info(n, T.FLOAT, ["B", heads, "S", d]) for n in ("q", "k", "v")]
    if mask_kind == "key":
        inputs.append(oh.make_tensor_value_info("mask", T.FLOAT, ["B", 1, 1, "S"]))
        nodes.append(oh.make_node("Add", ["s2", "mask"], ["s3"], name="mask_add"))
        x = "s3"
    elif mask_kind == "causal":
        nodes.append(oh.make_node("Add", ["causal", "s2"], ["s3"], name="mask_add"))
        inits.append(numpy_helper.from_array(
            np.triu(np.full((16, 16), -1e9, np.float32), 1)[None, None], "causal"))
        x = "s3"
    nodes += [oh.make_node("Softmax", [x], ["p"], axis=-1, name="softmax"),
              oh.make_node("MatMul", ["p", "v"], ["y"], name="pv")]
    g = oh.make_graph(nodes, "g", inputs, [vi("y")], initializer=inits)
    return oh.make_model(g, opset_imports=[oh.make_opsetid("", 17)]).SerializeToString()


@pytest.mark.parametrize("scale_op", ["div", "mul"])
@pytest.mark.parametrize("mask_kind", ["none", "key", "causal"])
def test_attention_subgraph_fuses_into_one_node(rng, scale_op, mask_kind):
    data = attention_model(rng, scale_op, mask_kind)
    e = ember.Engine(data)
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    for b, s in ((1, 16), (3, 16)) if mask_kind == "causal" else ((1, 1), (2, 7), (3, 40)):
        feeds = {n: rng.standard_normal((b, 2, s, 8)).astype(np.float32) for n in ("q", "k", "v")}
        if mask_kind == "key":
            feeds["mask"] = np.where(rng.random((b, 1, 1, s)) < 0.3, -1e4, 0).astype(np.float32)
        np.testing.assert_allclose(e.run(feeds)["y"], sess.run(None, feeds)[0], rtol=1e-5, atol=1e-5)
    ops = [op for _n, op, _k, _i, _d in e.plan_info(feeds)["nodes"]]
    assert ops == ["Transpose", "Attention"], ops


@pytest.mark.parametrize("square", ["Pow", "Mul"])
@pytest.mark.parametrize("beta", [True, False])
def test_written_out_layer_norm_becomes_one_node(rng, square, beta):
    """LayerNorm as opset < 17 exporters write it (ReduceMean axes as an attribute)."""
    c = 24
    nodes = [oh.make_node("ReduceMean", ["x"], ["m"], axes=[-1], keepdims=1),
             oh.make_node("Sub", ["x", "m"], ["d"]),
             (oh.make_node("Pow", ["d", "two"], ["d2"]) if square == "Pow"
              else oh.make_node("Mul", ["d", "d"], ["d2"])),
             oh.make_node("ReduceMean", ["d2"], ["v"], axes=[-1], keepdims=1),
             oh.make_node("Add", ["v", "eps"], ["ve"]), oh.make_node("Sqrt", ["ve"], ["s"]),
             oh.make_node("Div", ["d", "s"], ["n"]), oh.make_node("Mul", ["n", "gamma"], ["g"])]
    out = "g"
    if beta:
        nodes.append(oh.make_node("Add", ["g", "beta"], ["y"]))
        out = "y"
    inits = [numpy_helper.from_array(np.float32(2), "two"), numpy_helper.from_array(np.float32(1e-5), "eps"),
             numpy_helper.from_array(rng.uniform(0.5, 2, c).astype(np.float32), "gamma"),
             numpy_helper.from_array(rng.standard_normal(c).astype(np.float32), "beta")]
    g = oh.make_graph(nodes, "g", [oh.make_tensor_value_info("x", T.FLOAT, ["B", "S", c])], [vi(out)],
                      initializer=inits)
    data = oh.make_model(g, opset_imports=[oh.make_opsetid("", 13)]).SerializeToString()
    x = (rng.standard_normal((2, 5, c)) * 3 + 1).astype(np.float32)
    ops = [op for op, _ in run_both(data, x)]
    assert ops == ["LayerNormalization"], ops


def test_attention_absorbs_the_head_transposes(rng):
    """The BERT pattern around attention: Reshape to heads, Transpose (0 2 1 3 for Q and V,
    0 2 3 1 for K), attention, Transpose back, Reshape: the transposes go into Attention."""
    heads, d = 3, 8
    hidden = heads * d
    shape4 = numpy_helper.from_array(np.array([0, 0, heads, d], np.int64), "heads_shape")
    shape3 = numpy_helper.from_array(np.array([0, 0, hidden], np.int64), "merged_shape")
    scale = numpy_helper.from_array(np.float32(1 / math.sqrt(d)), "scale")
    nodes = []
    for name, perm in (("q", [0, 2, 1, 3]), ("k", [0, 2, 3, 1]), ("v", [0, 2, 1, 3])):
        nodes += [oh.make_node("Reshape", [name, "heads_shape"], [name + "4"]),
                  oh.make_node("Transpose", [name + "4"], [name + "t"], perm=perm)]
    nodes += [oh.make_node("MatMul", ["qt", "kt"], ["s"]), oh.make_node("Mul", ["s", "scale"], ["s2"]),
              oh.make_node("Add", ["s2", "mask"], ["s3"]), oh.make_node("Softmax", ["s3"], ["p"], axis=-1),
              oh.make_node("MatMul", ["p", "vt"], ["ctx"]),
              oh.make_node("Transpose", ["ctx"], ["ctx_t"], perm=[0, 2, 1, 3]),
              oh.make_node("Reshape", ["ctx_t", "merged_shape"], ["y"])]
    inputs = [oh.make_tensor_value_info(n, T.FLOAT, ["B", "S", hidden]) for n in ("q", "k", "v")]
    inputs.append(oh.make_tensor_value_info("mask", T.FLOAT, ["B", 1, 1, "S"]))
    g = oh.make_graph(nodes, "g", inputs, [vi("y")], initializer=[shape4, shape3, scale])
    data = oh.make_model(g, opset_imports=[oh.make_opsetid("", 17)]).SerializeToString()
    e = ember.Engine(data)
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    for b, s in ((1, 1), (2, 9), (3, 40)):
        feeds = {n: rng.standard_normal((b, s, hidden)).astype(np.float32) for n in ("q", "k", "v")}
        feeds["mask"] = np.where(rng.random((b, 1, 1, s)) < 0.3, -1e4, 0).astype(np.float32)
        np.testing.assert_allclose(e.run(feeds)["y"], sess.run(None, feeds)[0], rtol=1e-5, atol=1e-5)
    ops = [op for _n, op, _k, _i, _d in e.plan_info(feeds)["nodes"]]
    assert ops.count("Transpose") == 0 and ops.count("Attention") == 1, ops


# ---- RMSNorm written out -> RMSNormalization ---------------------------------------------

D = 40


def rms_head(square="Pow", eps_first=False, x="x"):
    """ms = ReduceMean(x^2, [-1]); rms = Sqrt(ms + eps) (axes an attribute: opset 13)."""
    sq = (oh.make_node("Pow", [x, "two"], ["x2"]) if square == "Pow"
          else oh.make_node("Mul", [x, x], ["x2"]))
    return [sq, oh.make_node("ReduceMean", ["x2"], ["ms"], axes=[-1], keepdims=1, name="ms"),
            oh.make_node("Add", ["eps", "ms"] if eps_first else ["ms", "eps"], ["mse"]),
            oh.make_node("Sqrt", ["mse"], ["rms"])]


RMS_FORMS = {
    # x / Sqrt(mean(x^2) + eps) * w
    "pow-div-w": rms_head() + [oh.make_node("Div", ["x", "rms"], ["n"]),
                               oh.make_node("Mul", ["n", "w"], ["y"])],
    # (w * (x * Reciprocal(Sqrt(eps + mean(x * x))))): torch dynamo exports (rsqrt)
    "mul-reciprocal-w-first": rms_head("Mul", True) + [
        oh.make_node("Reciprocal", ["rms"], ["r"]), oh.make_node("Mul", ["r", "x"], ["n"]),
        oh.make_node("Mul", ["w", "n"], ["y"])],
    # x * Div(1, Sqrt(.)) then a no-op Cast to float before * w: torch TorchScript exports
    "div-one-cast-w": rms_head() + [
        oh.make_node("Div", ["one", "rms"], ["r"]), oh.make_node("Mul", ["x", "r"], ["n"]),
        oh.make_node("Cast", ["n"], ["nc"], to=T.FLOAT), oh.make_node("Mul", ["w", "nc"], ["y"])],
    # no weight: scale = ones
    "pow-div-no-weight": rms_head() + [oh.make_node("Div", ["x", "rms"], ["y"])],
    # a scalar weight
    "div-one-scalar-w": rms_head("Mul") + [
        oh.make_node("Div", ["one", "rms"], ["r"]), oh.make_node("Mul", ["r", "x"], ["n"]),
        oh.make_node("Mul", ["n", "half"], ["y"])],
}


def rms_model(rng, nodes, outputs=("y",), opset=13, x_type=T.FLOAT):
    inits = [numpy_helper.from_array(np.float32(2), "two"),
             numpy_helper.from_array(np.float32(1e-6), "eps"),
             numpy_helper.from_array(np.float32(1), "one"),
             numpy_helper.from_array(np.array([0.5], np.float32), "half"),
             numpy_helper.from_array(rng.uniform(0.5, 2, D).astype(np.float32), "w"),
             numpy_helper.from_array(rng.uniform(0.5, 2, D).astype(np.float16), "w16")]
    g = oh.make_graph(nodes, "g", [oh.make_tensor_value_info("x", x_type, ["B", "S", D])],
                      [oh.make_tensor_value_info(o, x_type if o == "y" else T.FLOAT, None)
                       for o in outputs], initializer=inits)
    return oh.make_model(g, opset_imports=[oh.make_opsetid("", opset)]).SerializeToString()


def rms_input(rng, shape, dtype=np.float32):
    return (rng.standard_normal(shape) * 3 + 0.5).astype(dtype)


@pytest.mark.parametrize("form", list(RMS_FORMS))
def test_written_out_rms_norm_becomes_one_node(rng, form):
    data = rms_model(rng, RMS_FORMS[form])
    for shape in ((1, 1), (2, 7), (3, 33)):
        ops = run_both(data, rms_input(rng, (*shape, D)))
        assert [op for op, _ in ops] == ["RMSNormalization"], ops
        assert ops[0][1].startswith("rms_norm_f32"), ops
    nodes = [op for _name, op in ember.Engine(data)._session.nodes()]
    assert nodes == ["RMSNormalization"], nodes


def test_rms_norm_fuses_with_opset18_axes_input_and_a_shared_x(rng):
    """ReduceMean's axes as an input (opset 18); x also read by a residual Add outside the
    pattern: x is the fused node's input, so it may have other readers."""
    nodes = [oh.make_node("Mul", ["x", "x"], ["x2"]),
             oh.make_node("ReduceMean", ["x2", "axes"], ["ms"], keepdims=1),
             oh.make_node("Add", ["ms", "eps"], ["mse"]), oh.make_node("Sqrt", ["mse"], ["rms"]),
             oh.make_node("Div", ["x", "rms"], ["n"]), oh.make_node("Mul", ["n", "w"], ["y"]),
             oh.make_node("Add", ["x", "y"], ["res"])]
    m = onnx.load_from_string(rms_model(rng, nodes, ("y", "res"), opset=18))
    m.graph.initializer.append(numpy_helper.from_array(np.array([-1], np.int64), "axes"))
    data = m.SerializeToString()
    ops = [op for op, _ in run_both(data, rms_input(rng, (2, 5, D)))]
    assert ops == ["RMSNormalization", "Add"], ops


@pytest.mark.parametrize("shared", ["ms-output", "rms-second-reader", "n-output", "axis0"])
def test_rms_norm_not_fused_where_an_intermediate_is_shared(rng, shared):
    nodes = rms_head() + [oh.make_node("Div", ["x", "rms"], ["n"]),
                          oh.make_node("Mul", ["n", "w"], ["y"])]
    outputs = ["y"]
    if shared == "ms-output":
        outputs.append("ms")
    elif shared == "rms-second-reader":
        nodes.append(oh.make_node("Mul", ["rms", "two"], ["rms2"]))
        outputs.append("rms2")
    elif shared == "n-output":  # the norm fuses; the weight multiply stays apart
        outputs.append("n")
    else:
        nodes[1] = oh.make_node("ReduceMean", ["x2"], ["ms"], axes=[0], keepdims=1)
    data = rms_model(rng, nodes, outputs)
    ops = [op for op, _ in run_both(data, rms_input(rng, (2, 5, D)))]
    if shared == "n-output":
        assert ops == ["RMSNormalization", "Mul"], ops
    else:
        # the written-out ops remain (the elementwise ones chained)
        assert "RMSNormalization" not in ops and "ReduceMean" in ops, ops


def test_rms_norm_in_fp16_casts_fuses_its_float_middle(rng):
    """fp16 exports: Cast(x, float) -> the pattern -> Cast(., float16) -> * w16: the casts and
    the fp16 weight multiply stay, the float middle becomes RMSNormalization."""
    nodes = ([oh.make_node("Cast", ["x"], ["xf"], to=T.FLOAT)] + rms_head(x="xf") +
             [oh.make_node("Div", ["one", "rms"], ["r"]), oh.make_node("Mul", ["xf", "r"], ["n"]),
              oh.make_node("Cast", ["n"], ["n16"], to=T.FLOAT16),
              oh.make_node("Mul", ["w16", "n16"], ["y"])])
    data = rms_model(rng, nodes, x_type=T.FLOAT16)
    x = rms_input(rng, (2, 7, D), np.float16)
    e = ember.Engine(data)
    ops = [op for _name, op in e._session.nodes()]
    assert ops == ["Cast", "RMSNormalization", "Cast", "Mul"], ops
    got = e.run({"x": x})["y"]
    want = ember.Engine(data, kernels="reference").run({"x": x})["y"]
    ref = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert got.dtype == np.float16
    for y in (got, want):
        np.testing.assert_allclose(y.astype(np.float32), ref.astype(np.float32), rtol=2e-3,
                                   atol=2e-3)


def _torch_rms_modules():
    torch = pytest.importorskip("torch")

    class LlamaRMSNorm(torch.nn.Module):  # transformers' LlamaRMSNorm
        def __init__(self, d, eps=1e-6):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.rand(d) + 0.5)
            self.variance_epsilon = eps

        def forward(self, x):
            input_dtype = x.dtype
            h = x.to(torch.float32)
            variance = h.pow(2).mean(-1, keepdim=True)
            h = h * torch.rsqrt(variance + self.variance_epsilon)
            return self.weight * h.to(input_dtype)

    class T5LayerNorm(torch.nn.Module):  # transformers' T5LayerNorm
        def __init__(self, d, eps=1e-6):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.rand(d) + 0.5)
            self.variance_epsilon = eps

        def forward(self, x):
            variance = x.to(torch.float32).pow(2).mean(-1, keepdim=True)
            x = x * torch.rsqrt(variance + self.variance_epsilon)
            return self.weight * x

    return torch, {"llama": LlamaRMSNorm, "t5": T5LayerNorm}


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter's notice
@pytest.mark.parametrize("module", ["llama", "t5"])
def test_torch_exported_rms_norm_fuses_and_matches_torch(rng, module):
    import io

    torch, modules = _torch_rms_modules()
    torch.manual_seed(int(rng.integers(1 << 30)))
    m = modules[module](D).eval()
    f = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(m, (torch.randn(2, 5, D),), f, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "B", 1: "S"}}, dynamo=False, opset_version=17)
    data = f.getvalue()
    e = ember.Engine(data)
    ops = [op for _name, op in e._session.nodes()]
    # torch's x.to(float32) stays as a Cast: ember cannot tell at load time that x is float.
    assert ops == ["Cast", "RMSNormalization"], ops
    for shape in ((1, 1), (3, 17)):
        x = rms_input(rng, (*shape, D))
        with torch.no_grad():
            want = m(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(e.run({"x": x})["y"], want, rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.export's own deprecation notice
def test_torch_dynamo_export_at_opset_23_runs_rms_normalization(rng):
    """torch.nn.RMSNorm exported at opset 23 is one RMSNormalization node."""
    torch, _ = _torch_rms_modules()
    torch.manual_seed(int(rng.integers(1 << 30)))
    m = torch.nn.RMSNorm(D, eps=1e-6).eval()
    with torch.no_grad():
        m.weight.copy_(torch.rand(D) + 0.5)
        prog = torch.onnx.export(m, (torch.randn(2, 5, D),), input_names=["x"],
                                 output_names=["y"], dynamo=True, opset_version=23, verbose=False)
    data = prog.model_proto.SerializeToString()
    e = ember.Engine(data)
    assert [op for _name, op in e._session.nodes()] == ["RMSNormalization"]
    x = rms_input(rng, (2, 5, D))
    with torch.no_grad():
        want = m(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(e.run({"x": x})["y"], want, rtol=1e-5, atol=1e-5)


# ---- elementwise chains -----------------------------------------------------------------------

CHAIN_SIDES = {  # the binary steps' side operand shape, against x [3, 37, 61]
    "same": (3, 37, 61),
    "row": (61,),
    "row2": (37, 61),
    "scalar": (),
    "one": (1, 1, 1),
}


def chain_model(side, outputs=("y",), x_shape=(3, 37, 61), dtype=T.FLOAT):
    nodes = [
        oh.make_node("Add", ["x", "s"], ["a"], name="add"),
        oh.make_node("Relu", ["a"], ["r"], name="relu"),
        oh.make_node("Sub", ["s", "r"], ["d"], name="sub"),   # the chain's value on the right
        oh.make_node("Mul", ["d", "x"], ["m"], name="mul"),   # a side that is the chain's input
        oh.make_node("Sigmoid", ["m"], ["g"], name="sig"),
        oh.make_node("Div", ["g", "s"], ["y"], name="div"),
    ]
    g = oh.make_graph(nodes, "g", [oh.make_tensor_value_info("x", dtype, list(x_shape))],
                      [oh.make_tensor_value_info(o, dtype, None) for o in outputs],
                      initializer=[numpy_helper.from_array(side, "s")])
    return oh.make_model(g, opset_imports=[oh.make_opsetid("", 17)]).SerializeToString()


@pytest.mark.parametrize("side", list(CHAIN_SIDES))
def test_an_elementwise_run_becomes_one_chain_with_the_unfused_bits(rng, side):
    x = rng.standard_normal((3, 37, 61)).astype(np.float32)
    s = (rng.standard_normal(CHAIN_SIDES[side]) * 2 + 3).astype(np.float32)
    data = chain_model(s)
    eng = ember.Engine(data)
    got = eng.run({"x": x})["y"]
    assert [n[1] for n in eng.plan_info({"x": x})["nodes"]] == ["ElementwiseChain"]
    # The same nodes with every intermediate an output: no chain, each node its own kernel, and
    # the same bits; two intermediates outputs: three shorter chains, the same bits again.
    unfused = ember.Engine(chain_model(s, outputs=("y", "a", "r", "d", "m", "g")))
    assert "ElementwiseChain" not in [n[1] for n in unfused.plan_info({"x": x})["nodes"]]
    np.testing.assert_array_equal(got, unfused.run({"x": x})["y"])
    split = ember.Engine(chain_model(s, outputs=("y", "r", "m")))
    assert [n[1] for n in split.plan_info({"x": x})["nodes"]].count("ElementwiseChain") == 3
    np.testing.assert_array_equal(got, split.run({"x": x})["y"])
    # s - relu(x + s) cancels: a few ulps of x + s become 1e-4 of small results.
    want = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=3e-4, atol=3e-5)
    np.testing.assert_allclose(got, ember.Engine(data, kernels="reference").run({"x": x})["y"],
                               rtol=3e-4, atol=3e-5)


def test_a_chain_whose_side_broadcasts_the_value_runs_whole_tensors(rng):
    # x [5, 1] + s [5, 9]: the value grows to [5, 9] at the first step, so no blocks.
    s = rng.standard_normal((5, 9)).astype(np.float32)
    x = rng.standard_normal((5, 1)).astype(np.float32)
    data = chain_model(s, x_shape=(5, 1))
    eng = ember.Engine(data)
    got = eng.run({"x": x})["y"]
    assert [n[1] for n in eng.plan_info({"x": x})["nodes"]] == ["ElementwiseChain"]
    r = np.maximum(x + s, 0)
    m = ((s - r) * x).astype(np.float64)
    np.testing.assert_allclose(got, (1 / (1 + np.exp(-m))) / s, rtol=3e-4, atol=3e-5)


def test_an_integer_chain_runs_its_reference_steps(rng):
    s = rng.integers(-50, 50, (61,)).astype(np.int64)
    s[s == 0] = 7
    nodes = [oh.make_node("Add", ["x", "s"], ["a"]), oh.make_node("Mul", ["a", "x"], ["m"]),
             oh.make_node("Sub", ["s", "m"], ["y"])]
    g = oh.make_graph(nodes, "g", [oh.make_tensor_value_info("x", T.INT64, [4, 61])],
                      [oh.make_tensor_value_info("y", T.INT64, None)],
                      initializer=[numpy_helper.from_array(s, "s")])
    data = oh.make_model(g, opset_imports=[oh.make_opsetid("", 17)]).SerializeToString()
    x = rng.integers(-1000, 1000, (4, 61)).astype(np.int64)
    eng = ember.Engine(data)
    np.testing.assert_array_equal(eng.run({"x": x})["y"], s - (x + s) * x)
    assert [(n[1], n[2]) for n in eng.plan_info({"x": x})["nodes"]] == [("ElementwiseChain", "reference")]


def test_a_long_chain_over_many_blocks_and_threads(rng):
    # 2 x 100003 elements: blocks across both threads and a short last block.
    x = rng.standard_normal((2, 100003)).astype(np.float32)
    s = (rng.standard_normal((2, 100003)) + 3).astype(np.float32)
    data = chain_model(s, x_shape=(2, 100003))
    got = ember.Engine(data).run({"x": x})["y"]
    unfused = ember.Engine(chain_model(s, outputs=("y", "a", "r", "d", "m", "g"), x_shape=(2, 100003)))
    np.testing.assert_array_equal(got, unfused.run({"x": x})["y"])
