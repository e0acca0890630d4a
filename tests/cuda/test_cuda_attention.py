"""CUDA fused attention (cuda/kernels/attention.cu) against the CPU engine.

Graphs that ember fuses into one Attention node (MatMul(Q, Kt) -> Mul | Div -> [Add mask] ->
Softmax(-1) -> MatMul(., V); with the head transposes around it for the "bshd" layout), run on
the device at each precision: fp32 runs the exact SIMT kernel (tight tolerance), fp16 / bf16 the
tensor-core kernels where the head dims allow (loose tolerance; inputs and probabilities rounded):
the mma.sync kernel for head dims 32 / 64 / 128, the wmma kernel for the rest, or for all of them
with EMBER_CUDA_ATTN_KERNEL=wmma (benchmarks/gpu/check.sh runs this file both ways).
"""
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as oh
from onnx import numpy_helper

import ember

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not ember.cuda.is_available(), reason="no CUDA device")]

# (rtol, atol) per precision. fp16 rounds Q, K, V and the probabilities to 11 bits, bf16 to 8:
# a score error of ~sqrt(D) * 2^-11 * |q||k| * scale, and outputs are averages of V (|V| ~ 1).
TOL = {"fp32": (2e-5, 2e-5), "fp16": (1e-2, 1e-2), "bf16": (4e-2, 4e-2)}


def bhsd_model(finish, q_shape, kt_shape, v_shape, mask_shape=None, scale_op="mul", mask_first=False):
    """q [..., S, D], kt [..., D, T] (keys already transposed), v [..., T, Dv] fed directly."""
    d = q_shape[-1]
    c = np.float32(np.sqrt(d) if scale_op == "div" else 1 / np.sqrt(max(d, 1)))
    nodes = [oh.make_node("MatMul", ["q", "kt"], ["s"], name="qk"),
             oh.make_node("Div", ["s", "c"], ["s2"], name="scale") if scale_op == "div"
             else oh.make_node("Mul", ["c", "s"], ["s2"], name="scale")]
    inputs = [oh.make_tensor_value_info("q", T.FLOAT, q_shape),
              oh.make_tensor_value_info("kt", T.FLOAT, kt_shape),
              oh.make_tensor_value_info("v", T.FLOAT, v_shape)]
    x = "s2"
    if mask_shape is not None:
        inputs.append(oh.make_tensor_value_info("mask", T.FLOAT, mask_shape))
        nodes.append(oh.make_node("Add", ["mask", "s2"] if mask_first else ["s2", "mask"], ["s3"],
                                  name="mask_add"))
        x = "s3"
    nodes += [oh.make_node("Softmax", [x], ["p"], axis=-1, name="softmax"),
              oh.make_node("MatMul", ["p", "v"], ["y"], name="pv")]
    g = oh.make_graph(nodes, "attention", inputs, [oh.make_empty_tensor_value_info("y")],
                      initializer=[numpy_helper.from_array(c, "c")])
    return finish(g, 17)


def bshd_model(finish, d):
    """q [B, S, H, D], k [B, T, H, D], v [B, T, H, Dv] with the head transposes written out (the
    BERT pattern); ember absorbs them into one "bshd" Attention node."""
    nodes = [oh.make_node("Transpose", ["q"], ["qt"], perm=[0, 2, 1, 3]),
             oh.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 3, 1]),
             oh.make_node("Transpose", ["v"], ["vt"], perm=[0, 2, 1, 3]),
             oh.make_node("MatMul", ["qt", "kt"], ["s"]),
             oh.make_node("Mul", ["s", "c"], ["s2"]),
             oh.make_node("Add", ["s2", "mask"], ["s3"]),
             oh.make_node("Softmax", ["s3"], ["p"], axis=-1),
             oh.make_node("MatMul", ["p", "vt"], ["ctx"]),
             oh.make_node("Transpose", ["ctx"], ["y"], perm=[0, 2, 1, 3])]
    inputs = [oh.make_tensor_value_info(n, T.FLOAT, ["B", s, "H", dim])
              for n, s, dim in (("q", "S", d), ("k", "T", d), ("v", "T", "Dv"))]
    inputs.append(oh.make_tensor_value_info("mask", T.FLOAT, ["B", 1, 1, "T"]))
    c = numpy_helper.from_array(np.float32(1 / np.sqrt(d)), "c")
    g = oh.make_graph(nodes, "attention_bshd", inputs, [oh.make_empty_tensor_value_info("y")],
                      initializer=[c])
    return finish(g, 17)


def run_both(model, feeds, precision):
    """(device Y, CPU Y); checks that Attention was fused and nothing fell back to the CPU."""
    dev = ember.Engine(model, device="cuda", precision=precision)
    cpu = ember.Engine(model)
    got, want = dev.run(feeds)["y"], cpu.run(feeds)["y"]
    ops = [op for _n, op, _k, _i, _d in dev.plan_info(feeds)["nodes"]]
    assert "Attention" in ops and "Softmax" not in ops and "Transpose" not in ops, ops
    assert dev.device_fallbacks == []
    return got, want


def key_mask(rng, b, t):
    return np.where(rng.random((b, 1, 1, t)) < 0.3, -1e4, 0).astype(np.float32)


def causal_mask(s, t):
    """[S, T]: query s sees keys up to s + (T - S), as a decoder with a cache does. Where S > T
    the first S - T rows see no key: NaN on both sides (assert_allclose matches NaN)."""
    return np.where(np.arange(t)[None, :] <= np.arange(s)[:, None] + (t - s), 0, -np.inf).astype(np.float32)


SHAPES = [  # B, H, S, T, D, Dv
    (1, 1, 1, 1, 32, 32),
    (2, 3, 7, 129, 80, 80),     # odd S and T: tails in both tile loops
    (1, 2, 64, 64, 64, 64),
    (2, 2, 100, 300, 128, 128),
    (1, 2, 769, 33, 96, 96),    # many query tiles
    (1, 4, 33, 65, 36, 36),     # D not a multiple of 8: the exact kernel at every precision
    (1, 2, 5, 17, 200, 96),     # D over 128: the exact kernel
    (2, 1, 9, 40, 64, 32),      # Dv != D
]


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("mask", ["none", "key", "causal"])
def test_attention_bhsd_matches_cpu(finish_model_fn, rng, precision, shape, mask):
    b, h, s, t, d, dv = shape
    mask_shape = {"none": None, "key": [b, 1, 1, t], "causal": [s, t]}[mask]
    model = bhsd_model(finish_model_fn, [b, h, s, d], [b, h, d, t], [b, h, t, dv], mask_shape,
                       scale_op="div" if mask == "key" else "mul", mask_first=mask == "causal")
    feeds = {"q": rng.standard_normal((b, h, s, d)).astype(np.float32),
             "kt": rng.standard_normal((b, h, d, t)).astype(np.float32),
             "v": rng.standard_normal((b, h, t, dv)).astype(np.float32)}
    if mask == "key":
        feeds["mask"] = key_mask(rng, b, t)
    elif mask == "causal":
        feeds["mask"] = causal_mask(s, t)
    got, want = run_both(model, feeds, precision)
    rtol, atol = TOL[precision]
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_attention_broadcast_operands(finish_model_fn, rng, precision):
    """K shared across the batch, V of lower rank, a per-head mask: leading dims broadcast."""
    b, h, s, t, d = 3, 2, 11, 70, 64
    model = bhsd_model(finish_model_fn, [b, h, s, d], [1, h, d, t], [h, t, d], [1, h, s, t])
    feeds = {"q": rng.standard_normal((b, h, s, d)).astype(np.float32),
             "kt": rng.standard_normal((1, h, d, t)).astype(np.float32),
             "v": rng.standard_normal((h, t, d)).astype(np.float32),
             "mask": rng.standard_normal((1, h, s, t)).astype(np.float32)}
    got, want = run_both(model, feeds, precision)
    rtol, atol = TOL[precision]
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("b,s,t,h,d", [(2, 9, 9, 3, 64), (1, 1, 300, 4, 80), (3, 40, 40, 2, 24),
                                       (2, 70, 131, 2, 128), (1, 65, 17, 3, 32)])
def test_attention_bshd_matches_cpu(finish_model_fn, rng, precision, b, s, t, h, d):
    model = bshd_model(finish_model_fn, d)
    feeds = {"q": rng.standard_normal((b, s, h, d)).astype(np.float32),
             "k": rng.standard_normal((b, t, h, d)).astype(np.float32),
             "v": rng.standard_normal((b, t, h, d)).astype(np.float32),
             "mask": key_mask(rng, b, t)}
    got, want = run_both(model, feeds, precision)
    assert got.shape == (b, s, h, d)
    rtol, atol = TOL[precision]
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_attention_masked_rows(finish_model_fn, rng, precision):
    """A row masked to -inf everywhere is NaN, as the reference computes it (exp(-inf - -inf));
    a row whose first key tiles are all -inf still weighs its later keys; a row masked to
    float32's lowest everywhere (what exporters add) weighs every key alike."""
    b, h, s, t, d = 1, 2, 6, 200, 64
    mask = rng.standard_normal((s, t)).astype(np.float32)
    mask[0, :] = -np.inf
    mask[2, :150] = -np.inf
    mask[4, :-1] = -np.inf
    mask[5, :] = np.finfo(np.float32).min
    model = bhsd_model(finish_model_fn, [b, h, s, d], [b, h, d, t], [b, h, t, d], [s, t])
    feeds = {"q": rng.standard_normal((b, h, s, d)).astype(np.float32),
             "kt": rng.standard_normal((b, h, d, t)).astype(np.float32),
             "v": rng.standard_normal((b, h, t, d)).astype(np.float32), "mask": mask}
    got, want = run_both(model, feeds, precision)
    assert np.isnan(want[:, :, 0]).all() and np.isnan(got[:, :, 0]).all()
    assert not np.isnan(got[:, :, 1:]).any()
    np.testing.assert_allclose(got[:, :, 4], feeds["v"][:, :, -1], rtol=1e-2, atol=1e-2)
    np.testing.assert_allclose(got[:, :, 5], feeds["v"].mean(axis=2), rtol=1e-2, atol=1e-2)
    rtol, atol = TOL[precision]
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)  # NaN where the CPU has NaN


@pytest.mark.parametrize("shape", [(2, 3, 0, 16, 32, 32), (0, 3, 5, 16, 32, 32), (1, 2, 4, 0, 32, 32)],
                         ids=["S=0", "B=0", "T=0"])
def test_attention_empty(finish_model_fn, rng, shape):
    b, h, s, t, d, dv = shape
    model = bhsd_model(finish_model_fn, [b, h, s, d], [b, h, d, t], [b, h, t, dv])
    feeds = {"q": rng.standard_normal((b, h, s, d)).astype(np.float32),
             "kt": rng.standard_normal((b, h, d, t)).astype(np.float32),
             "v": rng.standard_normal((b, h, t, dv)).astype(np.float32)}
    got, want = run_both(model, feeds, "fp32")
    assert got.shape == (b, h, s, dv)
    np.testing.assert_array_equal(got, want)  # T = 0: zeros


# B, H, S, T, D, Dv: the mma.sync kernel's head dims, tails in rows and keys. Kt [D, T] steps T
# along d, which attn_mma_supports wants a multiple of 4 (else the wmma kernel runs): T % 64 != 0
# but T % 4 == 0 here; the bshd tests cover odd T (K contiguous along d).
MMA_SHAPES = [
    (1, 3, 77, 132, 64, 64),
    (2, 2, 65, 60, 128, 128),
    (1, 2, 130, 4, 32, 32),
    (1, 1, 5, 260, 40, 40),     # D zero-padded to 64
    (2, 3, 64, 196, 128, 64),   # Dv < D
    (1, 2, 33, 68, 16, 32),     # D < Dv
]


def mma_case(finish_model_fn, rng, shape, mask):
    """(model, feeds) of a bhsd case, mask "none", "random" ([S, T], shared) or "causal"."""
    b, h, s, t, d, dv = shape
    model = bhsd_model(finish_model_fn, [b, h, s, d], [b, h, d, t], [b, h, t, dv],
                       None if mask == "none" else [s, t])
    feeds = {"q": rng.standard_normal((b, h, s, d)).astype(np.float32),
             "kt": rng.standard_normal((b, h, d, t)).astype(np.float32),
             "v": rng.standard_normal((b, h, t, dv)).astype(np.float32)}
    if mask == "random":
        feeds["mask"] = rng.standard_normal((s, t)).astype(np.float32)
    elif mask == "causal":
        feeds["mask"] = causal_mask(s, t)
    return model, feeds


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
@pytest.mark.parametrize("shape", MMA_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("mask", ["none", "random", "causal"])
def test_attention_mma_tails_match_cpu(finish_model_fn, rng, precision, shape, mask):
    model, feeds = mma_case(finish_model_fn, rng, shape, mask)
    got, want = run_both(model, feeds, precision)
    rtol, atol = TOL[precision]
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)  # NaN where the CPU has NaN


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
@pytest.mark.parametrize("shape", [(2, 3, 100, 200, 64, 64), (1, 2, 70, 132, 128, 128)],
                         ids=lambda s: "x".join(map(str, s)))
def test_attention_mma_matches_wmma(finish_model_fn, rng, tmp_path, precision, shape):
    """The mma.sync kernel against the wmma one: EMBER_CUDA_ATTN_KERNEL is read once per
    process, so a child runs the same model with it set to "wmma"."""
    if os.environ.get("EMBER_CUDA_ATTN_KERNEL") == "wmma":
        pytest.skip("this process runs the wmma kernel (EMBER_CUDA_ATTN_KERNEL=wmma)")
    model, feeds = mma_case(finish_model_fn, rng, shape, "causal")
    onnx.save(model, str(tmp_path / "m.onnx"))
    np.savez(tmp_path / "feeds.npz", **feeds)
    code = ("import sys, numpy as np, ember; d = sys.argv[1]; "
            "e = ember.Engine(d + '/m.onnx', device='cuda', precision=sys.argv[2]); "
            "np.save(d + '/y.npy', e.run(dict(np.load(d + '/feeds.npz')))['y'])")
    env = dict(os.environ, EMBER_CUDA_ATTN_KERNEL="wmma")
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path), precision], capture_output=True,
                         text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    wmma = np.load(tmp_path / "y.npy")
    got, want = run_both(model, feeds, precision)
    assert not np.array_equal(got, wmma)  # the two kernels ran (their roundings differ)
    rtol, atol = TOL[precision]
    np.testing.assert_allclose(got, wmma, rtol=rtol, atol=atol)
    np.testing.assert_allclose(wmma, want, rtol=rtol, atol=atol)
