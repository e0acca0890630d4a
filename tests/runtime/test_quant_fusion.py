"""Quantization passes (cpp/src/graph/fuse_quant.cpp): the int8 forms ember.quantize and
onnxruntime.quantization write become QMatMul, MatMulNBits becomes Q4MatMul. Each model checks
that the fusion happened (no quantization node left, none reported as a fallback) and that the
answer matches ember's unfused reference path (the graph as written) and onnxruntime; forms
that must not fuse stay as they are and are reported.
"""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto as T, helper as oh, numpy_helper as nh

import ember

ort = pytest.importorskip("onnxruntime")
FLT_MIN = np.finfo(np.float32).tiny


def vi(name, shape=None, dtype=T.FLOAT):
    return oh.make_tensor_value_info(name, dtype, shape)


def model(nodes, inits, k, outputs=("y",), opset=17, domains=()):
    g = oh.make_graph(nodes, "g", [vi("x", ["B", k])], [vi(o) for o in outputs],
                      initializer=[nh.from_array(v, n) for n, v in inits.items()])
    ops = [oh.make_opsetid("", opset)] + [oh.make_opsetid(d, 1) for d in domains]
    return oh.make_model(g, opset_imports=ops).SerializeToString()


def per_channel_int8(w):
    scale = np.maximum(np.abs(w).max(axis=0) / np.float32(127), FLT_MIN).astype(np.float32)
    return np.clip(np.rint(w / scale), -127, 127).astype(np.int8), scale


def token_nodes(x="x", w="Wq", ws="w_scale", out="y0", opset=17):
    """ember.quantize's per-token dynamic int8 form (python/ember/quantize); ReduceMax's axes
    an attribute before opset 18, an input (the constant "axes") from 18."""
    rmax = (oh.make_node("ReduceMax", ["a", "axes"], ["am"], keepdims=1) if opset >= 18 else
            oh.make_node("ReduceMax", ["a"], ["am"], axes=[-1], keepdims=1))
    return [oh.make_node("Abs", [x], ["a"]),
            rmax,
            oh.make_node("Div", ["am", "c127"], ["s0"]),
            oh.make_node("Max", ["s0", "cmin"], ["s"]),
            oh.make_node("Div", [x, "s"], ["xd"]),
            oh.make_node("Round", ["xd"], ["xr"]),
            oh.make_node("Clip", ["xr", "cneg127", "c127"], ["xc"]),
            oh.make_node("Cast", ["xc"], ["xq"], to=T.INT8),
            oh.make_node("MatMulInteger", ["xq", w], ["acc"], name="mm"),
            oh.make_node("Cast", ["acc"], ["accf"], to=T.FLOAT),
            oh.make_node("Mul", ["accf", "s"], ["t1"]),
            oh.make_node("Mul", ["t1", ws], [out])]


TOKEN_CONSTS = {"c127": np.float32(127), "cneg127": np.float32(-127), "cmin": np.float32(FLT_MIN),
                "axes": np.array([-1], np.int64)}


def check(data, feeds, fused_op, atol, ort_atol=None):
    eng = ember.Engine(data)
    ops = [op for _, op in eng._session.nodes()]
    assert fused_op in ops, ops
    assert eng._session.quant_fallbacks() == []
    got = eng.run(feeds)
    want = ember.Engine(data, kernels="reference").run(feeds)
    for name in want:
        if atol is not None:
            np.testing.assert_allclose(got[name], want[name], rtol=0, atol=atol)
    if ort_atol is not None:
        sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        for o, w in zip(sess.get_outputs(), sess.run(None, feeds)):
            np.testing.assert_allclose(got[o.name], w, rtol=0, atol=ort_atol)
    return eng, got


@pytest.mark.parametrize("act", ["none", "relu", "gelu"])
@pytest.mark.parametrize("k,n", [(64, 48), (37, 17)])
def test_token_int8_fuses_with_bias_and_activation(act, k, n):
    rng = np.random.default_rng(k * n)
    wq, ws = per_channel_int8(rng.standard_normal((k, n)).astype(np.float32))
    inits = {"Wq": wq, "w_scale": ws, "bias": rng.standard_normal(n).astype(np.float32), **TOKEN_CONSTS}
    nodes = token_nodes(opset=20) + [oh.make_node("Add", ["y0", "bias"], ["y" if act == "none" else "h"])]
    if act != "none":
        nodes.append(oh.make_node({"relu": "Relu", "gelu": "Gelu"}[act], ["h"], ["y"]))
    data = model(nodes, inits, k, opset=20)
    x = rng.standard_normal((7, k)).astype(np.float32)
    x[3] = 0  # an all-zero row: scale FLT_MIN, codes 0
    eng, got = check(data, {"x": x}, "QMatMul", atol=1e-4, ort_atol=1e-4 if act != "gelu" else None)
    assert "Add" not in [op for _, op in eng._session.nodes()]
    # batch invariance: row 5 alone gives the same bits
    alone = eng.run({"x": x[5:6]})["y"]
    assert np.array_equal(alone[0], got["y"][5])


def test_token_int8_shared_activation_quantization():
    """Q, K, V style: three matmuls read one quantized activation; all three fuse."""
    rng = np.random.default_rng(1)
    k = 32
    inits = dict(TOKEN_CONSTS)
    nodes = token_nodes(w="W0", ws="s0w", out="y0")
    for i in range(3):
        wq, ws = per_channel_int8(rng.standard_normal((k, 24)).astype(np.float32))
        inits[f"W{i}"], inits[f"s{i}w"] = wq, ws
        if i:
            nodes += [oh.make_node("MatMulInteger", ["xq", f"W{i}"], [f"acc{i}"]),
                      oh.make_node("Cast", [f"acc{i}"], [f"accf{i}"], to=T.FLOAT),
                      oh.make_node("Mul", [f"accf{i}", "s"], [f"y1_{i}"]),
                      oh.make_node("Mul", [f"y1_{i}", f"s{i}w"], [f"y{i}"])]
    data = model(nodes, inits, k, outputs=("y0", "y1", "y2"), opset=17)
    eng, _ = check(data, {"x": rng.standard_normal((5, k)).astype(np.float32)}, "QMatMul",
                   atol=1e-4, ort_atol=1e-4)
    assert sorted(op for _, op in eng._session.nodes()) == ["QMatMul"] * 3


def test_ort_dynamic_int8_fuses_and_matches_onnxruntime(tmp_path):
    """reduce_range: 7-bit weights, so onnxruntime's AVX2 u8 x s8 kernel (vpmaddubsw, pairwise
    products saturating at int16) computes the exact sums and is a fair oracle; with full-range
    weights it is off by up to several units where ember follows the ONNX spec."""
    from onnxruntime.quantization import quantize_dynamic
    rng = np.random.default_rng(2)
    k, n = 96, 40
    inits = {"W": rng.standard_normal((k, n)).astype(np.float32),
             "bias": rng.standard_normal(n).astype(np.float32)}
    data = model([oh.make_node("MatMul", ["x", "W"], ["h"]), oh.make_node("Add", ["h", "bias"], ["y"])],
                 inits, k)
    src, dst = tmp_path / "f.onnx", tmp_path / "q.onnx"
    src.write_bytes(data)
    for per_channel in (False, True):
        quantize_dynamic(str(src), str(dst), per_channel=per_channel, reduce_range=True)
        x = rng.standard_normal((9, k)).astype(np.float32)
        check(dst.read_bytes(), {"x": x}, "QMatMul", atol=1e-4, ort_atol=2e-4)


def test_static_qdq_matmul_and_gemm_fuse():
    rng = np.random.default_rng(3)
    k, n = 50, 33
    w = rng.standard_normal((k, n)).astype(np.float32)
    wq, ws = per_channel_int8(w)
    inits = {"sx": np.float32(0.03), "zx": np.uint8(128), "Wq": wq, "ws": ws, "wz": np.zeros(n, np.int8),
             "WqT": np.ascontiguousarray(wq.T), "bias": rng.standard_normal(n).astype(np.float32)}
    nodes = [oh.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
             oh.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
             oh.make_node("DequantizeLinear", ["Wq", "ws", "wz"], ["wd"], axis=1),
             oh.make_node("MatMul", ["xd", "wd"], ["h"]),
             oh.make_node("Add", ["h", "bias"], ["h2"]),
             oh.make_node("Relu", ["h2"], ["y"]),
             oh.make_node("DequantizeLinear", ["WqT", "ws", "wz"], ["wdt"], axis=0),
             oh.make_node("Gemm", ["xd", "wdt", "bias"], ["g"], transB=1)]
    data = model(nodes, inits, k, outputs=("y", "g"))
    x = (rng.standard_normal((6, k)) * 2).astype(np.float32)  # some values saturate at 0/255
    eng, _ = check(data, {"x": x}, "QMatMul", atol=1e-4, ort_atol=1e-3)
    assert sorted(op for _, op in eng._session.nodes()) == ["QMatMul", "QMatMul"]


def test_unfusable_forms_are_reported_as_fallbacks():
    rng = np.random.default_rng(4)
    k, n = 16, 8
    # uint8 weights whose zero point leaves int8's range after subtraction
    inits = {"sx": np.float32(0.05), "zx": np.uint8(0), "Wq": rng.integers(0, 256, (k, n)).astype(np.uint8),
             "ws": np.float32(0.01), "wz": np.uint8(3)}
    nodes = [oh.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"], name="q"),
             oh.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"], name="dq_x"),
             oh.make_node("DequantizeLinear", ["Wq", "ws", "wz"], ["wd"], name="dq_w"),
             oh.make_node("MatMul", ["xd", "wd"], ["y"], name="mm")]
    data = model(nodes, inits, k)
    with pytest.warns(ember.QuantFallbackWarning, match=r"'dq_w' \(DequantizeLinear\)"):
        eng = ember.Engine(data)
    assert "QMatMul" not in [op for _, op in eng._session.nodes()]
    left = dict(eng._session.quant_fallbacks())
    # the two dequantized MatMul operands; the QuantizeLinear is elementwise (a fast kernel)
    assert left == {"dq_x": "DequantizeLinear", "dq_w": "DequantizeLinear"}
    x = np.abs(rng.standard_normal((3, k))).astype(np.float32)
    want = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(eng.run({"x": x})["y"], want, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("block", [32, 64, 128])
@pytest.mark.parametrize("symmetric", [True, False])
def test_matmul_nbits_fuses_to_q4matmul(tmp_path, block, symmetric):
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    import onnx
    rng = np.random.default_rng(block)
    k, n = 100, 24
    inits = {"W": rng.standard_normal((k, n)).astype(np.float32),
             "bias": rng.standard_normal(n).astype(np.float32)}
    data = model([oh.make_node("MatMul", ["x", "W"], ["h"]), oh.make_node("Add", ["h", "bias"], ["y"])],
                 inits, k, opset=21)
    q = MatMulNBitsQuantizer(onnx.load_from_string(data), block_size=block, is_symmetric=symmetric)
    q.process()
    qdata = q.model.model.SerializeToString()
    x = rng.standard_normal((4, k)).astype(np.float32)
    eng, got = check(qdata, {"x": x}, "Q4MatMul", atol=None)
    # W4A16i against the float-activation reference (and onnxruntime, which computes the same):
    # the activations' 16-bit rounding costs ~2e-5 of the output's norm (8-bit: under 1%)
    want = ember.Engine(qdata, kernels="reference").run({"x": x})["y"]
    ort_y = ort.InferenceSession(qdata, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(want, ort_y, rtol=1e-5, atol=1e-4)
    rel = np.linalg.norm(got["y"] - want) / np.linalg.norm(want)
    assert rel < 1e-4, rel


@pytest.mark.parametrize("relu", [False, True])
def test_static_qdq_conv_fuses_to_qconv(relu):
    rng = np.random.default_rng(5)
    w = rng.standard_normal((6, 3, 3, 3)).astype(np.float32)
    ws = np.maximum(np.abs(w).reshape(6, -1).max(axis=1) / 127, FLT_MIN).astype(np.float32)
    wq = np.clip(np.rint(w / ws[:, None, None, None]), -127, 127).astype(np.int8)
    inits = {"sx": np.float32(0.02), "zx": np.uint8(120), "Wq": wq, "ws": ws, "wz": np.zeros(6, np.int8),
             "B": rng.standard_normal(6).astype(np.float32)}
    nodes = [oh.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
             oh.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
             oh.make_node("DequantizeLinear", ["Wq", "ws", "wz"], ["wd"], axis=0),
             oh.make_node("Conv", ["xd", "wd", "B"], ["c" if relu else "y"], pads=[1, 0, 1, 2], strides=[1, 2])]
    if relu:
        nodes.append(oh.make_node("Relu", ["c"], ["y"]))
    g = oh.make_graph(nodes, "g", [vi("x", ["N", 3, 11, 12])], [vi("y")],
                      initializer=[nh.from_array(v, n) for n, v in inits.items()])
    data = oh.make_model(g, opset_imports=[oh.make_opsetid("", 17)]).SerializeToString()
    x = (rng.standard_normal((2, 3, 11, 12)) * 1.5).astype(np.float32)  # some saturate
    eng, _ = check(data, {"x": x}, "QConv", atol=1e-5, ort_atol=1e-3)
    assert [op for _, op in eng._session.nodes()] == ["QConv"]


@pytest.mark.parametrize("fmt", ["QDQ", "QOperator"])
def test_onnxruntime_static_model_fuses_and_matches(tmp_path, fmt):
    """onnxruntime.quantization.quantize_static, per-channel. QDQ: int32 biases behind
    DequantizeLinear, Q/DQ pairs on every activation. QOperator: QLinearConv / QLinearMatMul
    between QuantizeLinear and DequantizeLinear. Either way Conv and MatMul become QConv and
    QMatMul, the remaining activation pairs run as elementwise kernels, and nothing is
    reported. onnxruntime runs with graph optimizations off: its fused u8 x s8 kernels saturate
    pairwise products on AVX2, while its unfused path computes what the file says. QOperator's
    requantization may put a value one output code apart (float vs integer multiplier)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static
    rng = np.random.default_rng(6)
    inits = {"W1": (rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32),
             "B1": (rng.standard_normal(8) * 0.1).astype(np.float32),
             "W2": (rng.standard_normal((8 * 6 * 6, 10)) * 0.1).astype(np.float32),
             "B2": (rng.standard_normal(10) * 0.1).astype(np.float32),
             "shape": np.array([-1, 8 * 6 * 6], np.int64)}
    nodes = [oh.make_node("Conv", ["x", "W1", "B1"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
             oh.make_node("Relu", ["c"], ["r"]),
             oh.make_node("Reshape", ["r", "shape"], ["f"]),
             oh.make_node("MatMul", ["f", "W2"], ["m"]),
             oh.make_node("Add", ["m", "B2"], ["y"])]
    g = oh.make_graph(nodes, "g", [vi("x", ["N", 3, 12, 12])], [vi("y", ["N", 10])],
                      initializer=[nh.from_array(v, n) for n, v in inits.items()])
    src, dst = tmp_path / "f.onnx", tmp_path / "q.onnx"
    src.write_bytes(oh.make_model(g, opset_imports=[oh.make_opsetid("", 17)]).SerializeToString())

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter([{"x": rng.standard_normal((1, 3, 12, 12)).astype(np.float32)} for _ in range(16)])

        def get_next(self):
            return next(self.feeds, None)

    quantize_static(str(src), str(dst), Reader(), quant_format=getattr(QuantFormat, fmt),
                    per_channel=True, op_types_to_quantize=["Conv", "MatMul"])
    eng = ember.Engine(str(dst))
    ops = [op for _, op in eng._session.nodes()]
    assert "QConv" in ops and "QMatMul" in ops and "Conv" not in ops and "MatMul" not in ops, ops
    assert eng.quant_fallbacks == []
    x = rng.standard_normal((4, 3, 12, 12)).astype(np.float32)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    want = ort.InferenceSession(str(dst), so, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    atol = 1e-5 if fmt == "QDQ" else 0.02 * np.abs(want).max()
    np.testing.assert_allclose(eng.run({"x": x})["y"], want, rtol=0, atol=atol)
