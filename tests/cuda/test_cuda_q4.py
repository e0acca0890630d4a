"""CUDA Q4MatMul (cuda/kernels/q4_gemm.cu, W4A16 on tensor cores) against the CPU engine (W4A16i,
cpp/src/ops/ops_q4matmul.cpp), on com.microsoft MatMulNBits models built here and on float
MatMuls quantized by Engine(quantize="int4").

Tolerance: the GPU rounds A to fp16 (bf16) and each dequantized weight to fp16 (bf16), unit
roundoff u = 2^-11 (2^-8), and sums in fp32; the CPU keeps A to ~1.5e-5 (int16 per 32-block)
and the weights exact. Per output the error is a random-sign sum of K terms of size
~u |a| |w|, so we allow 8 u sqrt(K) rms(a) rms(w) (+ float noise)."""
import numpy as np
import pytest
from onnx import TensorProto as T, helper as oh, numpy_helper as nh

import ember

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not ember.cuda.is_available(), reason="no CUDA device")]

UNIT = {"fp32": 2.0 ** -11, "fp16": 2.0 ** -11, "bf16": 2.0 ** -8}


def nbits_model(rng, K, N, block, zero_points, bias=False, act=None, a_dims=("M",)):
    """y = act(a @ dequant(B) [+ bias]) with one MatMulNBits node (4 bits, `block` along K)."""
    nb = (K + block - 1) // block
    codes = rng.integers(0, 16, size=(N, nb * block), dtype=np.uint8)
    codes[:, K:] = 0
    packed = (codes[:, 0::2] | (codes[:, 1::2] << 4)).astype(np.uint8).reshape(N, nb, block // 2)
    scales = rng.uniform(0.01, 0.1, size=(N, nb)).astype(np.float32)
    inits = [nh.from_array(packed, "B"), nh.from_array(scales.reshape(-1), "scales")]
    ins = ["a", "B", "scales"]
    zp = None
    if zero_points:
        zp = rng.integers(0, 16, size=(N, nb), dtype=np.uint8)
        zpad = np.concatenate([zp, np.zeros((N, nb % 2), np.uint8)], axis=1)
        zpacked = (zpad[:, 0::2] | (zpad[:, 1::2] << 4)).astype(np.uint8).reshape(-1)
        inits.append(nh.from_array(zpacked, "zero_points"))
        ins.append("zero_points")
    nodes = [oh.make_node("MatMulNBits", ins, ["mm" if bias or act else "y"], domain="com.microsoft",
                          K=K, N=N, bits=4, block_size=block, name="q4")]
    last = nodes[-1].output[0]
    if bias:
        inits.append(nh.from_array(rng.standard_normal(N).astype(np.float32), "bias"))
        out = "pre" if act else "y"
        nodes.append(oh.make_node("Add", [last, "bias"], [out], name="add"))
        last = out
    if act:
        nodes.append(oh.make_node(act, [last], ["y"], name="act"))
    g = oh.make_graph(nodes, "g", [oh.make_tensor_value_info("a", T.FLOAT, [*a_dims, K])],
                      [oh.make_tensor_value_info("y", T.FLOAT, None)], initializer=inits)
    m = oh.make_model(g, opset_imports=[oh.make_opsetid("", 18), oh.make_opsetid("com.microsoft", 1)])
    zero = zp.repeat(block, axis=1)[:, :K] if zero_points else 8  # MatMulNBits' default: 8
    w = (codes[:, :K].astype(np.float32) - zero) * scales.repeat(block, axis=1)[:, :K]
    return m.SerializeToString(), w


def run_both(model, feeds, w, precision="fp32", deterministic=False):
    want = ember.Engine(model).run(feeds)["y"]
    eng = ember.Engine(model, device="cuda", precision=precision, deterministic=deterministic)
    got = eng.run(feeds)["y"]
    assert eng.device_fallbacks == []
    kernels = [(op, k) for _n, op, k, _i, _d in eng.plan_info(feeds)["nodes"]]
    assert ("Q4MatMul", "q4matmul_cuda") in kernels, kernels
    a = feeds["a"]
    k = a.shape[-1]
    scale = np.sqrt(k) * np.sqrt(np.mean(a.astype(np.float64) ** 2)) * np.sqrt(np.mean(w.astype(np.float64) ** 2))
    atol = 8 * UNIT[precision] * scale + 1e-5
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=atol)
    return got


SHAPES = [(64, 1), (64, 200), (769, 200), (769, 5125), (4096, 200), (4096, 1)]


@pytest.mark.parametrize("m", [1, 7, 16, 17, 300])
@pytest.mark.parametrize("k,n", SHAPES)
@pytest.mark.parametrize("block", [32, 64, 128])
@pytest.mark.parametrize("zero_points", [False, True])
def test_matmulnbits(rng, m, k, n, block, zero_points):
    model, w = nbits_model(rng, k, n, block, zero_points)
    run_both(model, {"a": rng.standard_normal((m, k)).astype(np.float32)}, w)


@pytest.mark.parametrize("m", [1, 300])
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_half_precision(rng, m, precision):
    model, w = nbits_model(rng, 769, 5125, 32, True)
    run_both(model, {"a": rng.standard_normal((m, 769)).astype(np.float32)}, w, precision=precision)


@pytest.mark.parametrize("act", [None, "Relu"])
def test_bias_and_activation(rng, act):
    model, w = nbits_model(rng, 4096, 200, 128, True, bias=True, act=act)
    run_both(model, {"a": rng.standard_normal((7, 4096)).astype(np.float32)}, w)


def test_leading_dims_fold_into_m(rng):
    model, w = nbits_model(rng, 256, 200, 64, False, a_dims=("B", "S"))
    run_both(model, {"a": rng.standard_normal((3, 7, 256)).astype(np.float32)}, w)


def test_deterministic_rows_do_not_depend_on_batch(rng):
    """deterministic=True: one kernel and a K split chosen without M, so row 0 is bit-equal
    whether it runs alone or in a batch of 300."""
    model, w = nbits_model(rng, 4096, 5125, 128, True)
    a = rng.standard_normal((300, 4096)).astype(np.float32)
    eng = ember.Engine(model, device="cuda", deterministic=True)
    alone = eng.run({"a": a[:1]})["y"]
    batch = eng.run({"a": a})["y"]
    assert eng.device_fallbacks == []
    np.testing.assert_array_equal(alone[0], batch[0])
    run_both(model, {"a": a}, w, deterministic=True)


def test_repeated_runs_are_identical(rng):
    model, _ = nbits_model(rng, 4096, 5125, 32, True)
    a = rng.standard_normal((1, 4096)).astype(np.float32)
    eng = ember.Engine(model, device="cuda")
    first = eng.run({"a": a})["y"]
    for _ in range(3):
        np.testing.assert_array_equal(eng.run({"a": a})["y"], first)


@pytest.mark.parametrize("k,n", [(64, 200), (769, 5125), (4096, 1)])
@pytest.mark.parametrize("m", [1, 17, 300])
def test_quantize_int4(make_model, rng, k, n, m):
    """A float MatMul quantized at load (quantize="int4": MatMulNBits, group 128, zero points)."""
    w = (rng.standard_normal((k, n)) * 0.05).astype(np.float32)
    model = make_model("MatMul", inputs=[("a", np.float32, ["M", k]), "w"], outputs=["y"],
                       initializers={"w": w})
    feeds = {"a": rng.standard_normal((m, k)).astype(np.float32)}
    want = ember.Engine(model, quantize="int4").run(feeds)["y"]
    eng = ember.Engine(model, device="cuda", quantize="int4")
    got = eng.run(feeds)["y"]
    assert eng.device_fallbacks == []
    kernels = [k_ for _n, _op, k_, _i, _d in eng.plan_info(feeds)["nodes"]]
    assert "q4matmul_cuda" in kernels, kernels
    scale = np.sqrt(k) * np.sqrt(np.mean(feeds["a"] ** 2)) * np.sqrt(np.mean(w.astype(np.float64) ** 2))
    np.testing.assert_allclose(got, want, rtol=0, atol=8 * UNIT["fp32"] * scale + 1e-5)
