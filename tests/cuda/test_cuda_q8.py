"""CUDA QMatMul (W8A8, cuda/src/ops_q8.cpp) against the CPU engine: Engine(quantize=int8, every
layer) (per-token activations) on odd shapes (M 1..300, K 769, N 5125) and an MLP, the small-M dp4a
path and the cuBLASLt int8 path (M > 16), batch invariance across them, and models from
onnxruntime.quantization (quantize_dynamic: a_mode tensor_u8; a static QDQ file: a_mode static,
uint8 and int8 zero points). The int32 sums are exact and the epilogue rounds like the reference,
so outputs agree to float rounding (1e-5 relative; gelu: the double erfc of each side). After an
Add + LayerNorm, the norm's kernel quantizes its rows for the Q, K and V QMatMuls
(fuse_norm_quant), looser as the GPU's norm rounds apart. Every case asserts no CPU fallback.
"""
import numpy as np
import pytest
from onnx import TensorProto as T, helper as oh, numpy_helper as nh

import ember

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not ember.cuda.is_available(), reason="no CUDA device")]

RTOL, ATOL = 1e-5, 1e-5
# Every MatMul quantized: one-node models have only a first / last layer, which "int8" keeps float.
INT8 = ember.QuantConfig(scheme="int8", quantize_first_last=True, min_weight_elements=0)


def vi(name, shape=None, dtype=T.FLOAT):
    return oh.make_tensor_value_info(name, dtype, shape)


def graph_model(nodes, inits, k, outputs=("y",), opset=17):
    g = oh.make_graph(nodes, "g", [vi("x", ["B", k])], [vi(o) for o in outputs],
                      initializer=[nh.from_array(v, n) for n, v in inits.items()])
    return oh.make_model(g, opset_imports=[oh.make_opsetid("", opset)]).SerializeToString()


def run_both(model, feeds, quantize=INT8):
    """CUDA vs CPU engines on the same (quantized) model; both must have fused QMatMul."""
    dev = ember.Engine(model, device="cuda", quantize=quantize)
    cpu = ember.Engine(model, quantize=quantize)
    assert "QMatMul" in [op for _, op in cpu._session.nodes()]
    got, want = dev.run(feeds), cpu.run(feeds)
    assert dev.device_fallbacks == []
    for name in want:
        assert got[name].shape == want[name].shape and got[name].dtype == np.float32
        np.testing.assert_allclose(got[name], want[name], rtol=RTOL, atol=ATOL)
    return dev, got


def matmul_model(make_model, rng, k, n, bias=True):
    w = rng.standard_normal((k, n)).astype(np.float32)
    if not bias:
        return make_model("MatMul", inputs=[("x", np.float32, ["B", k]), "W"], outputs=["y"],
                          initializers={"W": w})
    b = rng.standard_normal(n).astype(np.float32)
    return graph_model([oh.make_node("MatMul", ["x", "W"], ["h"]),
                        oh.make_node("Add", ["h", "b"], ["y"])], {"W": w, "b": b}, k)


# ---- Engine(quantize="int8"): per-token activations ----------------------------------------

@pytest.mark.parametrize("m", [1, 2, 3, 7, 16, 17, 64, 300])
def test_token_odd_shapes(make_model, rng, m):
    k, n = 769, 5125
    model = matmul_model(make_model, rng, k, n)
    x = rng.standard_normal((m, k)).astype(np.float32)
    x[0, :4] = [0.0, 1e-30, -3e4, 2.0]  # one large value: the rest of row 0 rounds to 0 / +-1
    if m > 2:
        x[2] = 0.0  # an all-zero row: scale FLT_MIN, codes 0
    run_both(model, {"x": x})


@pytest.mark.parametrize("k,n", [(1, 1), (7, 5), (16, 16), (33, 17), (4096, 48)])
def test_token_small_and_aligned_sizes(make_model, rng, k, n):
    model = matmul_model(make_model, rng, k, n, bias=False)
    for m in (1, 5, 33):
        run_both(model, {"x": rng.standard_normal((m, k)).astype(np.float32)})


def test_token_batch_invariance_across_paths(make_model, rng):
    """M = 300 runs on cuBLASLt, M = 1 on the dp4a kernel: the same bits for each row."""
    k, n = 769, 257
    model = matmul_model(make_model, rng, k, n)
    eng = ember.Engine(model, device="cuda", quantize=INT8)
    x = rng.standard_normal((300, k)).astype(np.float32)
    full = eng.run({"x": x})["y"]
    for r in (0, 150, 299):
        assert np.array_equal(eng.run({"x": x[r:r + 1]})["y"][0], full[r])
    assert np.array_equal(eng.run({"x": x[:9]})["y"], full[:9])


def test_token_rank3_input(rng):
    k, n = 96, 40
    w = rng.standard_normal((k, n)).astype(np.float32)
    g = oh.make_graph([oh.make_node("MatMul", ["x", "W"], ["y"])], "g", [vi("x", ["B", "S", k])],
                      [vi("y")], initializer=[nh.from_array(w, "W")])
    model = oh.make_model(g, opset_imports=[oh.make_opsetid("", 17)]).SerializeToString()
    run_both(model, {"x": rng.standard_normal((2, 13, k)).astype(np.float32)})


def test_token_empty_batch(make_model, rng):
    model = matmul_model(make_model, rng, 64, 24)
    _, got = run_both(model, {"x": np.zeros((0, 64), np.float32)})
    assert got["y"].shape == (0, 24)


@pytest.mark.parametrize("act", ["Relu", "Gelu"])
def test_token_mlp(rng, act):
    k, h, n = 256, 769, 130
    inits = {"W1": (rng.standard_normal((k, h)) * 0.1).astype(np.float32),
             "b1": rng.standard_normal(h).astype(np.float32),
             "W2": (rng.standard_normal((h, n)) * 0.1).astype(np.float32),
             "b2": rng.standard_normal(n).astype(np.float32)}
    nodes = [oh.make_node("MatMul", ["x", "W1"], ["h1"]), oh.make_node("Add", ["h1", "b1"], ["h2"]),
             oh.make_node(act, ["h2"], ["h3"]),
             oh.make_node("MatMul", ["h3", "W2"], ["h4"]), oh.make_node("Add", ["h4", "b2"], ["y"])]
    model = graph_model(nodes, inits, k, opset=20)
    for m in (1, 40):
        run_both(model, {"x": rng.standard_normal((m, k)).astype(np.float32)})


# ---- onnxruntime.quantization models -------------------------------------------------------

def test_ort_quantize_dynamic(rng, tmp_path):
    """DynamicQuantizeLinear over the whole tensor (a_mode tensor_u8): min / max on the GPU."""
    qz = pytest.importorskip("onnxruntime.quantization")
    k, n = 769, 300
    inits = {"W": rng.standard_normal((k, n)).astype(np.float32),
             "bias": rng.standard_normal(n).astype(np.float32)}
    src, dst = tmp_path / "f.onnx", tmp_path / "q.onnx"
    src.write_bytes(graph_model([oh.make_node("MatMul", ["x", "W"], ["h"]),
                                 oh.make_node("Add", ["h", "bias"], ["y"])], inits, k))
    for per_channel in (False, True):
        qz.quantize_dynamic(str(src), str(dst), per_channel=per_channel, reduce_range=True)
        for m in (1, 9, 100):
            x = rng.standard_normal((m, k)).astype(np.float32)
            run_both(dst.read_bytes(), {"x": x}, quantize=None)


@pytest.mark.parametrize("zx", [np.uint8(128), np.uint8(0), np.uint8(255), np.int8(0), np.int8(-7)])
def test_static_qdq(rng, zx):
    """QuantizeLinear -> DequantizeLinear -> MatMul (a_mode static): the zero point becomes a
    column-sum correction on the GPU, whatever its type and value."""
    k, n = 769, 77
    w = rng.standard_normal((k, n)).astype(np.float32)
    ws = np.maximum(np.abs(w).max(axis=0) / 127, np.finfo(np.float32).tiny).astype(np.float32)
    wq = np.clip(np.rint(w / ws), -127, 127).astype(np.int8)
    inits = {"sx": np.float32(0.02), "zx": zx, "Wq": wq, "ws": ws, "wz": np.zeros(n, np.int8),
             "bias": rng.standard_normal(n).astype(np.float32)}
    nodes = [oh.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
             oh.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
             oh.make_node("DequantizeLinear", ["Wq", "ws", "wz"], ["wd"], axis=1),
             oh.make_node("MatMul", ["xd", "wd"], ["h"]),
             oh.make_node("Add", ["h", "bias"], ["y"])]
    model = graph_model(nodes, inits, k)
    for m in (1, 7, 64):
        x = (rng.standard_normal((m, k)) * 2).astype(np.float32)  # some saturate
        run_both(model, {"x": x}, quantize=None)


# ---- fuse_norm_quant: the norm quantizes its rows in the same kernel -------------------------

def qkv_after_norm_model(rng, d):
    """Add + LayerNormalization read by three MatMuls (a BERT block's Q, K and V) and, as floats,
    by the residual Add."""
    inits = {"g": (1 + 0.1 * rng.standard_normal(d)).astype(np.float32),
             "b": (0.1 * rng.standard_normal(d)).astype(np.float32)}
    nodes = [oh.make_node("Add", ["x", "r"], ["s"]),
             oh.make_node("LayerNormalization", ["s", "g", "b"], ["y"], axis=-1)]
    for w in ("wq", "wk", "wv"):
        inits[w] = (rng.standard_normal((d, d)) / np.sqrt(d)).astype(np.float32)
        nodes.append(oh.make_node("MatMul", ["y", w], [w + "_out"]))
    nodes.append(oh.make_node("Add", ["y", "wv_out"], ["res"]))
    g = oh.make_graph(nodes, "qkv", [vi("x", ["B", d]), vi("r", ["B", d])],
                      [vi(v) for v in ("wq_out", "wk_out", "res")],
                      initializer=[nh.from_array(v, n) for n, v in inits.items()])
    return oh.make_model(g, opset_imports=[oh.make_opsetid("", 18)]).SerializeToString()


@pytest.mark.parametrize("d", [96, 776, 1030])
def test_token_codes_from_the_norm(rng, d):
    """On the device the AddNorm writes Y's int8 codes and row scales in its own kernel (a warp
    per row at 96 columns, float4 blocks at 776, scalar blocks at 1030) and the three QMatMuls
    read them (a_mode rows); the CPU engine quantizes Y per QMatMul. The GPU's norm sums in
    another order (Y a few ulps apart), so a code can flip at a rounding boundary: a loose bound
    here. The emulated tests check the codes bit for bit (cuda/emu/tests/test_emu_norm_quant.cpp)."""
    model = qkv_after_norm_model(rng, d)
    with ember.Engine(model, quantize=INT8) as cpu, \
            ember.Engine(model, device="cuda", quantize=INT8) as dev:
        for m in (1, 37):
            feeds = {v: rng.standard_normal((m, d)).astype(np.float32) for v in ("x", "r")}
            want, got = cpu.run(feeds), dev.run(feeds)
            nodes = dev.plan_info(feeds)["nodes"]
            assert dev.device_fallbacks == []
            assert any(n[1] == "AddNorm" for n in nodes)
            assert sum(n[1] == "QMatMul" for n in nodes) == 3
            for name in want:
                scale = float(np.abs(want[name]).max())
                np.testing.assert_allclose(got[name], want[name], rtol=1e-2, atol=1e-2 * scale)
