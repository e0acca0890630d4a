"""CUDA AddNorm (cuda/kernels/add_norm.cu) against the CPU engine: a residual Add read by
LayerNormalization / RMSNormalization fuses into AddNorm in device sessions (fuse_add_norm);
the CPU engine runs the pair. Row lengths cover the warp-per-row kernel (<= 256), the
block-per-row register kernel (<= 8192) and the long-row kernel past it; the sum (output 1,
when read elsewhere) must equal the CPU's Add bit for bit, the norm within float tolerance
(the CPU's fast norms keep float statistics, the kernel double)."""
import numpy as np
import pytest
from onnx import TensorProto as T, helper as oh, numpy_helper

import ember

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not ember.cuda.is_available(), reason="no CUDA device")]


def vi(name, shape=None):
    return oh.make_tensor_value_info(name, T.FLOAT, shape)


def add_norm_model(kind, d, rng, bias=True, sum_out=False, scalar_scale=False):
    """y = norm(a + b) over the last axis; outputs s = a + b too when sum_out."""
    scale = rng.standard_normal(1 if scalar_scale else d).astype(np.float32)
    inits = [numpy_helper.from_array(scale, "scale")]
    if kind == "layer":
        ins = ["s", "scale"]
        if bias:
            inits.append(numpy_helper.from_array(rng.standard_normal(d).astype(np.float32), "bias"))
            ins.append("bias")
        norm = oh.make_node("LayerNormalization", ins, ["y"], axis=-1, epsilon=1e-5, name="norm")
        opset = 18
    else:
        norm = oh.make_node("RMSNormalization", ["s", "scale"], ["y"], axis=-1, epsilon=1e-6,
                            name="norm")
        opset = 23
    nodes = [oh.make_node("Add", ["a", "b"], ["s"], name="add"), norm]
    outs = [vi("y")] + ([vi("s")] if sum_out else [])
    g = oh.make_graph(nodes, "g", [vi("a", ["N", d]), vi("b", ["N", d])], outs, initializer=inits)
    return oh.make_model(g, opset_imports=[oh.make_opsetid("", opset)]).SerializeToString()


def run_both(data, feeds, rtol=1e-5, atol=1e-5):
    want = ember.Engine(data).run(feeds)
    eng = ember.Engine(data, device="cuda")
    got = eng.run(feeds)
    assert eng.device_fallbacks == []
    kernels = [(op, k) for _n, op, k, _i, _d in eng.plan_info(feeds)["nodes"]]
    assert ("AddNorm", "add_norm_cuda") in kernels, kernels
    assert got.keys() == want.keys()
    np.testing.assert_allclose(got["y"], want["y"], rtol=rtol, atol=atol)
    if "s" in want:
        np.testing.assert_array_equal(got["s"], want["s"])
    return got


COLS = [1, 7, 64, 256, 257, 769, 4096, 5125, 8192, 8193, 20000]


@pytest.mark.parametrize("d", COLS)
@pytest.mark.parametrize("kind", ["layer", "rms"])
def test_add_norm_rows(rng, kind, d):
    data = add_norm_model(kind, d, rng, sum_out=d in (7, 769, 8193))
    for n in (1, 3, 37):
        feeds = {"a": rng.standard_normal((n, d)).astype(np.float32),
                 "b": rng.standard_normal((n, d)).astype(np.float32)}
        run_both(data, feeds)


@pytest.mark.parametrize("variant", ["no_bias", "scalar_scale", "sum_out"])
@pytest.mark.parametrize("kind", ["layer", "rms"])
def test_add_norm_variants(rng, kind, variant):
    d = 384
    data = add_norm_model(kind, d, rng, bias=variant != "no_bias", sum_out=variant == "sum_out",
                          scalar_scale=variant == "scalar_scale")
    feeds = {"a": (rng.standard_normal((2049, d)) * 4 + 1).astype(np.float32),
             "b": rng.standard_normal((2049, d)).astype(np.float32)}
    run_both(data, feeds)


def test_add_norm_empty_rows(rng):
    data = add_norm_model("layer", 96, rng, sum_out=True)
    got = run_both(data, {"a": np.zeros((0, 96), np.float32), "b": np.zeros((0, 96), np.float32)})
    assert got["y"].shape == (0, 96) and got["s"].shape == (0, 96)


def test_add_norm_batch_invariant(rng):
    """A row's bits do not depend on the rows around it (one group per row, fixed order)."""
    d = 1000
    data = add_norm_model("layer", d, rng)
    a = rng.standard_normal((64, d)).astype(np.float32)
    b = rng.standard_normal((64, d)).astype(np.float32)
    eng = ember.Engine(data, device="cuda")
    full = eng.run({"a": a, "b": b})["y"]
    one = eng.run({"a": a[5:6], "b": b[5:6]})["y"]
    np.testing.assert_array_equal(full[5:6], one)
