"""com.microsoft MatMulNBits: real models made by onnxruntime's MatMulNBitsQuantizer from a float
MatMul, run on ember and compared with onnxruntime; and the models ember refuses (at the end,
the quantization family's other import refusals: output types ember has no dtype for).

The reference kernels (kernels="reference": dequantize with Q4G, then a float matmul) must match
onnxruntime's fp32 path (accuracy_level unset) to float rounding. The default kernels quantize
activations per 32-block to int16 (W4A16i), so they are held to a looser bound against the same
outputs.
"""
from __future__ import annotations

import copy
import logging
import warnings

import numpy as np
import pytest
from onnx import TensorProto as TP
from onnx import helper as oh
from onnx import numpy_helper as nh

import ember
from ember.onnx_import import import_model, supported_ops

ort = pytest.importorskip("onnxruntime", reason="MatMulNBits is checked against onnxruntime")


def _quantizer():
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    return MatMulNBitsQuantizer


def matmul_model(w, a_shape, dtype=TP.FLOAT):
    g = oh.make_graph([oh.make_node("MatMul", ["a", "w"], ["y"], name="mm")], "g",
                      [oh.make_tensor_value_info("a", dtype, a_shape)],
                      [oh.make_tensor_value_info("y", dtype, None)], [nh.from_array(w, "w")])
    return oh.make_model(g, opset_imports=[oh.make_opsetid("", 17)])


def nbits_model(rng, K, N, block_size, symmetric=False, bits=4, a_shape=("M", None),
                dtype=np.float32):
    """A float MatMul [.., K] @ [K, N] quantized by onnxruntime to one MatMulNBits node."""
    w = rng.standard_normal((K, N)).astype(dtype)
    tp = TP.FLOAT16 if dtype == np.float16 else TP.FLOAT
    shape = [d if d is not None else K for d in a_shape]
    q = _quantizer()(matmul_model(w, shape, tp), bits=bits, block_size=block_size,
                     is_symmetric=symmetric)
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            q.process()
    finally:
        logging.disable(logging.NOTSET)
    m = q.model.model
    (node,) = m.graph.node
    assert node.op_type == "MatMulNBits" and node.domain == "com.microsoft"
    return m


def ort_run(m, feeds):
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


def ember_run(m, feeds, kernels="reference"):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the reference path warns that it is slow
        with ember.Engine(m, kernels=kernels) as eng:
            return eng.run(feeds)["y"]


def init(m, suffix):
    return next(t for t in m.graph.initializer if t.name.endswith(suffix))


def check_against_ort(m, a):
    want = ort_run(m, {"a": a})
    got = ember_run(m, {"a": a})
    assert got.dtype == want.dtype and got.shape == want.shape
    scale = float(np.abs(want.astype(np.float32)).max()) + 1.0
    # float dequant matmul: the same products, summed in another order
    np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), rtol=1e-5,
                               atol=2e-6 * scale * np.sqrt(a.shape[-1]))
    fast = ember_run(m, {"a": a}, kernels="auto")
    assert fast.shape == want.shape
    err = np.abs(fast.astype(np.float32) - want.astype(np.float32)).max()
    # int16 activation blocks: ~3e-5 of the scale measured
    assert err <= 2e-4 * scale, f"default kernels differ from onnxruntime by {err} (scale {scale})"
    return got


# ---- models onnxruntime makes -------------------------------------------------------------

@pytest.mark.parametrize("block_size", [32, 64, 128])
@pytest.mark.parametrize("symmetric", [False, True], ids=["zero-points", "symmetric"])
@pytest.mark.parametrize("K,N", [(100, 7), (256, 33)])
def test_matches_onnxruntime(block_size, symmetric, K, N, rng):
    m = nbits_model(rng, K, N, block_size, symmetric)
    has_zp = len(m.graph.node[0].input) > 3 and m.graph.node[0].input[3]
    assert bool(has_zp) != symmetric
    check_against_ort(m, rng.standard_normal((5, K)).astype(np.float32))


def test_3d_input_and_single_row(rng):
    K, N = 100, 9
    m = nbits_model(rng, K, N, 32, a_shape=("B", "S", None))
    check_against_ort(m, rng.standard_normal((2, 3, K)).astype(np.float32))
    check_against_ort(m, rng.standard_normal((1, 1, K)).astype(np.float32))


def test_float16_model(rng):
    """A float16 MatMul gives float16 A, scales and output; ember computes in float."""
    K, N = 100, 7
    m = nbits_model(rng, K, N, 32, dtype=np.float16)
    assert init(m, "_scales").data_type == TP.FLOAT16
    a = rng.standard_normal((5, K)).astype(np.float16)
    want = ort_run(m, {"a": a})
    got = ember_run(m, {"a": a})
    assert got.dtype == np.float16
    np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), rtol=2e-3,
                               atol=2e-2)


def test_flat_scales_and_zero_points_and_bias(rng):
    """Older writers store scales [N * blocks] and zero points [N * ceil(blocks / 2)]; bias [N]
    is input 5 (after the absent g_idx)."""
    K, N = 100, 7
    m = nbits_model(rng, K, N, 32)
    for suffix in ("_scales", "_zero_points"):
        t = init(m, suffix)
        t.CopyFrom(nh.from_array(nh.to_array(t).reshape(-1), t.name))
    a = rng.standard_normal((5, K)).astype(np.float32)
    check_against_ort(m, a)
    node = m.graph.node[0]
    m.graph.initializer.append(nh.from_array(rng.standard_normal(N).astype(np.float32), "bias"))
    node.input.extend(["", "bias"])
    got = check_against_ort(m, a)
    assert np.abs(got - ember_run(m, {"a": a})).max() == 0  # deterministic


def test_b_is_q4g_byte_for_byte(rng):
    """B [N, blocks, block / 2] read as Q4G rows: W[n, k] = (code - zp) * scale with even k in the
    low nibble and even blocks' zero points in the low nibble; ember's output is A @ W^T."""
    K, N, bs = 100, 5, 32
    m = nbits_model(rng, K, N, bs)
    q = nh.to_array(init(m, "_Q4")).reshape(N, -1)
    scales = nh.to_array(init(m, "_scales")).reshape(N, -1)
    zp = nh.to_array(init(m, "_zero_points")).reshape(N, -1)
    k = np.arange(K)
    codes = (q[:, k // 2] >> (4 * (k % 2))) & 15
    g = k // bs
    zps = (zp[:, g // 2] >> (4 * (g % 2))) & 15
    w = (codes.astype(np.float32) - zps) * scales[:, g]
    a = rng.standard_normal((3, K)).astype(np.float32)
    np.testing.assert_allclose(ember_run(m, {"a": a}), a @ w.T, rtol=1e-5, atol=1e-5)


def test_accuracy_level_is_accepted(rng):
    """accuracy_level allows a kernel to lower A's precision; the reference ignores it."""
    K, N = 64, 7
    plain = nbits_model(rng, K, N, 32)
    m = copy.deepcopy(plain)
    m.graph.node[0].attribute.append(oh.make_attribute("accuracy_level", 4))
    a = rng.standard_normal((2, K)).astype(np.float32)
    np.testing.assert_array_equal(ember_run(m, {"a": a}), ember_run(plain, {"a": a}))


def test_supported_ops_lists_the_contrib_domain():
    assert supported_ops("com.microsoft") == {"MatMulNBits": [1]}
    assert "MatMulNBits" not in supported_ops()  # the default domain has no such op


# ---- refusals ------------------------------------------------------------------------------

def _node(m):
    return m.graph.node[0]


def _set_attr(m, name, value):
    node = _node(m)
    for a in node.attribute:
        if a.name == name:
            node.attribute.remove(a)
            break
    node.attribute.append(oh.make_attribute(name, value))


@pytest.mark.parametrize("bits", [2, 8])
def test_other_bit_widths_are_unsupported(bits, rng):
    m = nbits_model(rng, 64, 7, 32, bits=bits)
    name = _node(m).name
    with pytest.raises(ember.UnsupportedOpError) as e:
        import_model(m)
    assert e.value.ops == {f"MatMulNBits(bits={bits})": [name]}
    assert name in str(e.value)


def test_block_size_16_is_unsupported(rng):
    m = nbits_model(rng, 64, 7, 16)
    with pytest.raises(ember.UnsupportedOpError) as e:
        import_model(m)
    assert e.value.ops == {"MatMulNBits(block_size=16)": [_node(m).name]}


def test_g_idx_and_prepacked_weights_are_unsupported(rng):
    m = nbits_model(rng, 64, 7, 32)
    m.graph.initializer.append(nh.from_array(np.arange(64, dtype=np.int32) // 32, "g_idx"))
    _node(m).input.append("g_idx")
    with pytest.raises(ember.UnsupportedOpError) as e:
        import_model(m)
    assert e.value.ops == {"MatMulNBits(g_idx)": [_node(m).name]}
    m = nbits_model(rng, 64, 7, 32)
    _set_attr(m, "weight_prepacked", 1)
    with pytest.raises(ember.UnsupportedOpError, match="weight_prepacked=1"):
        import_model(m)


def test_without_the_contrib_opset_it_is_unsupported(rng):
    m = nbits_model(rng, 64, 7, 32)
    for o in list(m.opset_import):
        if o.domain == "com.microsoft":
            m.opset_import.remove(o)
    with pytest.raises(ember.UnsupportedOpError) as e:
        import_model(m)
    assert e.value.ops == {"com.microsoft:MatMulNBits": [_node(m).name]}
    m = nbits_model(rng, 64, 7, 32)
    next(o for o in m.opset_import if o.domain == "com.microsoft").version = 2
    with pytest.raises(ember.UnsupportedOpError, match="com.microsoft:MatMulNBits"):
        import_model(m)


def _refused(m, *words, K=64):
    """ember refuses m with a ModelError naming the node and each of `words`."""
    name = _node(m).name
    with pytest.raises(ember.ModelError) as e:
        ember_run(m, {"a": np.ones((2, K), np.float32)})
    msg = str(e.value)
    assert name in msg and "MatMulNBits" in msg, msg
    for w in words:
        assert w in msg, msg


def test_float_zero_points_are_refused(rng):
    m = nbits_model(rng, 64, 7, 32)
    t = init(m, "_zero_points")
    t.CopyFrom(nh.from_array(np.full((7, 2), 8.0, np.float32), t.name))
    _refused(m, "zero_points", "float32")


@pytest.mark.parametrize("what", ["K", "N", "scales", "zero_points", "bias", "block_size", "B"])
def test_inconsistent_sizes_are_refused(what, rng):
    K, N = 64, 7
    m = nbits_model(rng, K, N, 32)
    if what == "K":  # 80 needs 3 blocks, B has 2
        _set_attr(m, "K", 80)
        m.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 80
        K = 80
    elif what == "N":
        _set_attr(m, "N", 8)
    elif what == "scales":
        t = init(m, "_scales")
        t.CopyFrom(nh.from_array(np.ones((N, 3), np.float32), t.name))
    elif what == "zero_points":
        t = init(m, "_zero_points")
        t.CopyFrom(nh.from_array(np.zeros((N, 2), np.uint8), t.name))  # 2 blocks: [N, 1]
    elif what == "bias":
        m.graph.initializer.append(nh.from_array(np.ones(N + 1, np.float32), "bias"))
        _node(m).input.extend(["", "bias"])
    elif what == "block_size":
        _set_attr(m, "block_size", 48)
    else:  # B flattened to 2-D
        t = init(m, "_Q4")
        t.CopyFrom(nh.from_array(nh.to_array(t).reshape(N, -1), t.name))
    _refused(m, what, K=K)


def test_other_microsoft_ops_stay_unsupported():
    node = oh.make_node("FusedMatMul", ["x", "x"], ["y"], name="fm", domain="com.microsoft")
    g = oh.make_graph([node], "g", [oh.make_tensor_value_info("x", TP.FLOAT, [2, 2])],
                      [oh.make_tensor_value_info("y", TP.FLOAT, None)])
    m = oh.make_model(g, opset_imports=[oh.make_opsetid("", 17),
                                        oh.make_opsetid("com.microsoft", 1)])
    with pytest.raises(ember.UnsupportedOpError) as e:
        import_model(m)
    assert e.value.ops == {"com.microsoft:FusedMatMul": ["fm"]}


def test_model_copy_is_untouched(rng):
    """Importing never edits the caller's model (the tests above edit copies they own)."""
    m = nbits_model(rng, 64, 7, 32)
    before = copy.deepcopy(m)
    import_model(m)
    assert m == before


# ---- the QDQ ops' import refusals (onnx_ops_quant.check) -------------------------------

def _qdq_model(op, attrs, zp=None, opset=21):
    inits = [nh.from_array(np.array(0.5, np.float32), "s")]
    inputs = ["x", "s"]
    if zp is not None:
        inits.append(zp)
        inputs.append(zp.name)
    x_type = TP.FLOAT if op == "QuantizeLinear" else TP.UINT8
    g = oh.make_graph([oh.make_node(op, inputs, ["y"], name="q", **attrs)], "g",
                      [oh.make_tensor_value_info("x", x_type, [4])],
                      [oh.make_tensor_value_info("y", TP.UNDEFINED, None)], inits)
    return oh.make_model(g, opset_imports=[oh.make_opsetid("", opset)])


@pytest.mark.parametrize("op,attrs,key", [
    ("QuantizeLinear", {"output_dtype": TP.INT4}, "QuantizeLinear(output_dtype=INT4)"),
    ("QuantizeLinear", {"output_dtype": TP.FLOAT8E4M3FN},
     "QuantizeLinear(output_dtype=FLOAT8E4M3FN)"),
    ("QuantizeLinear", {"output_dtype": TP.UINT16}, "QuantizeLinear(output_dtype=UINT16)"),
    ("DequantizeLinear", {"output_dtype": TP.DOUBLE}, "DequantizeLinear(output_dtype=DOUBLE)"),
])
def test_output_types_without_an_ember_dtype_are_unsupported(op, attrs, key):
    with pytest.raises(ember.UnsupportedOpError) as e:
        import_model(_qdq_model(op, attrs, opset=23))
    assert e.value.ops == {key: ["q"]}


def test_int4_zero_point_is_refused_by_name():
    zp = oh.make_tensor("zp", TP.INT4, [], [1])
    with pytest.raises(ember.ModelError, match="'zp' has dtype INT4"):
        import_model(_qdq_model("QuantizeLinear", {}, zp))
