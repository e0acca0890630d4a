"""CUDA Q4MatMul (cuda/kernels/q4_gemm.cu, W4A16 on tensor cores) against the CPU engine (W4A16i,
cpp/src/ops/ops_q4matmul.cpp), on com.microsoft MatMulNBits models built here and on float
MatMuls quantized by Engine(quantize="int4").

Tolerance: the GPU rounds A to fp16 (bf16) and each dequantized weight to fp16 (bf16), unit
roundoff u = 2^-11 (2^-8), and sums in fp32; the CPU keeps A to ~1.5e-5 (int16 per 32-block)
and the weights exact. Per output the error is a random-sign sum of K terms of size
~u |a| |w|, so we allow 8 u sqrt(K) rms(a) rms(w) (+ float noise). Besides, the kernel holds
each group's scale s and offset o in fp16 (bf16 under precision="bf16"): their roundings are
shared by the whole group, so they add up to sum over groups of
u_p (|s| |sum a code| + |o| |sum a|) per output, which param_bound adds exactly."""
import numpy as np
import pytest
from onnx import TensorProto as T, helper as oh, numpy_helper as nh

import ember

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not ember.cuda.is_available(), reason="no CUDA device")]

UNIT = {"fp32": 2.0 ** -11, "fp16": 2.0 ** -11, "bf16": 2.0 ** -8}
# The params' rounding: to fp16 when packed, then to bf16 too under precision="bf16".
PARAM_UNIT = {"fp32": 2.0 ** -11, "fp16": 2.0 ** -11, "bf16": 2.0 ** -8 + 2.0 ** -11}


class Quant:
    """A Q4 weight as the kernel sees it: codes [N, K] (0..15), and per (column, group) the
    scale and the offset (W = code * scale + offset)."""

    def __init__(self, codes, scales, offsets, group):
        self.codes, self.scales, self.offsets, self.group = codes, scales, offsets, group

    def dense(self):
        k = self.codes.shape[1]
        return (self.codes.astype(np.float32) * self.scales.repeat(self.group, axis=1)[:, :k]
                + self.offsets.repeat(self.group, axis=1)[:, :k])


def param_bound(a, q, unit):
    """[M, N]: sum over groups of unit (|s| |sum_g a code| + |o| |sum_g a|), in float64."""
    m, k = a.shape
    ng = q.scales.shape[1]
    pad = ng * q.group - k
    ag = np.pad(a.astype(np.float64), ((0, 0), (0, pad))).reshape(m, ng, q.group)
    cg = np.pad(q.codes.astype(np.float64), ((0, 0), (0, pad))).reshape(-1, ng, q.group)
    bound = np.zeros((m, cg.shape[0]))
    for g in range(ng):  # one group at a time: [M, N] each, not [M, N, groups]
        bound += np.abs(ag[:, g] @ cg[:, g].T) * np.abs(q.scales[:, g].astype(np.float64))
        bound += np.abs(ag[:, g].sum(axis=1))[:, None] * np.abs(q.offsets[:, g].astype(np.float64))
    return unit * bound


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
    zero = zp.astype(np.float32) if zero_points else np.full((N, nb), 8, np.float32)  # MatMulNBits' default: 8
    return m.SerializeToString(), Quant(codes[:, :K], scales, -zero * scales, block)


def run_both(model, feeds, q, precision="fp32", deterministic=False):
    want = ember.Engine(model).run(feeds)["y"]
    eng = ember.Engine(model, device="cuda", precision=precision, deterministic=deterministic)
    got = eng.run(feeds)["y"]
    assert eng.device_fallbacks == []
    kernels = [(op, k) for _n, op, k, _i, _d in eng.plan_info(feeds)["nodes"]]
    assert ("Q4MatMul", "q4matmul_cuda") in kernels, kernels
    assert got.shape == want.shape
    check_close(got, want, feeds["a"], q, precision)
    return got


def check_close(got, want, a, q, precision):
    """|got - want| within the independent roundings' 8 u sqrt(K) rms(a) rms(w) plus the
    params' shared roundings (param_bound), element by element."""
    a = a.reshape(-1, a.shape[-1])
    w = q.dense()
    scale = np.sqrt(a.shape[1]) * np.sqrt(np.mean(a.astype(np.float64) ** 2)) * np.sqrt(np.mean(w.astype(np.float64) ** 2))
    atol = 8 * UNIT[precision] * scale + 1e-5 + param_bound(a, q, PARAM_UNIT[precision])
    err = np.abs(got.reshape(atol.shape).astype(np.float64) - want.reshape(atol.shape))
    bad = ~(err <= atol)  # NaN fails too
    assert not bad.any(), (f"{int(bad.sum())} of {bad.size} outputs off; worst error / bound "
                           f"{float(np.max(np.where(np.isfinite(err), err / atol, np.inf))):.3g}")


SHAPES = [(64, 1), (64, 200), (769, 200), (769, 5125), (4096, 200), (4096, 1)]


@pytest.mark.parametrize("m", [1, 7, 16, 17, 300])
@pytest.mark.parametrize("k,n", SHAPES)
@pytest.mark.parametrize("block", [32, 64, 128])
@pytest.mark.parametrize("zero_points", [False, True])
def test_matmulnbits(rng, m, k, n, block, zero_points):
    model, q = nbits_model(rng, k, n, block, zero_points)
    run_both(model, {"a": rng.standard_normal((m, k)).astype(np.float32)}, q)


# Decode-sized layers through the small kernel (A converted in the kernel, a 7-stage ring) and
# its launch plans (q4_launch at 132 SMs; 64 K stages): 4096 x 4096 (8 splits of 8), K = 11008
# (8 splits of 22, the last one 18: the ring wraps), N = 13000 (204 column tiles, 2 splits of
# 16), N = 1000 with K = 11008 (29 splits of 6, the last one 4). K = 769 (the 4-byte A copies
# and the zeros past K) is in SHAPES.
DECODE_CASES = [(1, 4096, 4096, 128), (16, 4096, 4096, 32), (7, 4096, 4096, 64),
                (1, 11008, 4096, 64), (16, 11008, 1000, 128), (1, 2048, 13000, 32),
                (16, 2048, 13000, 128)]


@pytest.mark.parametrize("m,k,n,block", DECODE_CASES)
def test_decode_shapes(rng, m, k, n, block):
    model, q = nbits_model(rng, k, n, block, True, bias=True)
    run_both(model, {"a": rng.standard_normal((m, k)).astype(np.float32)}, q)


@pytest.mark.parametrize("m,k,n,block", DECODE_CASES + [(1, 64, 200, 32), (5, 769, 5125, 64)])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_decode_stream_kernel(rng, monkeypatch, m, k, n, block, precision):
    """EMBER_CUDA_Q4_KERNEL=stream (read at every run): decode on the stream kernel (registers
    instead of the shared-memory ring; opt-in until timed on the device)."""
    monkeypatch.setenv("EMBER_CUDA_Q4_KERNEL", "stream")
    model, q = nbits_model(rng, k, n, block, True, bias=True)
    run_both(model, {"a": rng.standard_normal((m, k)).astype(np.float32)}, q, precision=precision)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_decode_half_precision(rng, precision):
    model, q = nbits_model(rng, 11008, 1000, 32, True)
    run_both(model, {"a": rng.standard_normal((1, 11008)).astype(np.float32)}, q, precision=precision)


@pytest.mark.parametrize("m", [1, 300])
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_half_precision(rng, m, precision):
    model, q = nbits_model(rng, 769, 5125, 32, True)
    run_both(model, {"a": rng.standard_normal((m, 769)).astype(np.float32)}, q, precision=precision)


@pytest.mark.parametrize("act", [None, "Relu"])
def test_bias_and_activation(rng, act):
    model, q = nbits_model(rng, 4096, 200, 128, True, bias=True, act=act)
    run_both(model, {"a": rng.standard_normal((7, 4096)).astype(np.float32)}, q)


def test_leading_dims_fold_into_m(rng):
    model, q = nbits_model(rng, 256, 200, 64, False, a_dims=("B", "S"))
    run_both(model, {"a": rng.standard_normal((3, 7, 256)).astype(np.float32)}, q)


def test_deterministic_rows_do_not_depend_on_batch(rng):
    """deterministic=True: one kernel and a K split chosen without M, so row 0 is bit-equal
    whether it runs alone or in a batch of 300."""
    model, q = nbits_model(rng, 4096, 5125, 128, True)
    a = rng.standard_normal((300, 4096)).astype(np.float32)
    eng = ember.Engine(model, device="cuda", deterministic=True)
    alone = eng.run({"a": a[:1]})["y"]
    batch = eng.run({"a": a})["y"]
    assert eng.device_fallbacks == []
    np.testing.assert_array_equal(alone[0], batch[0])
    run_both(model, {"a": a}, q, deterministic=True)


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
    """A float MatMul quantized at load (int4: MatMulNBits, group 128, zero points). A lone
    MatMul is both the first and the last layer, which the default rules keep float."""
    w = (rng.standard_normal((k, n)) * 0.05).astype(np.float32)
    model = make_model("MatMul", inputs=[("a", np.float32, ["M", k]), "w"], outputs=["y"],
                       initializers={"w": w})
    feeds = {"a": rng.standard_normal((m, k)).astype(np.float32)}
    config = ember.QuantConfig(scheme="int4", quantize_first_last=True)
    cpu = ember.Engine(model, quantize=config)
    want = cpu.run(feeds)["y"]
    assert [op for _n, op, *_ in cpu.plan_info(feeds)["nodes"]] == ["Q4MatMul"]
    eng = ember.Engine(model, device="cuda", quantize=config)
    got = eng.run(feeds)["y"]
    assert eng.device_fallbacks == []
    kernels = [k_ for _n, _op, k_, _i, _d in eng.plan_info(feeds)["nodes"]]
    assert "q4matmul_cuda" in kernels, kernels
    check_close(got, want, feeds["a"], int4_quant(w.T, 128), "fp32")


def int4_quant(w, group):
    """quantize="int4"'s weights (MatMulNBits with zero points) for w [N, K] as a Quant."""
    from ember.quantize.int4 import q4g_quantize, q4g_unpack

    qb, scales, zp = q4g_quantize(w, group, zero_point=True)
    codes, z = q4g_unpack(qb, zp, scales.shape[1])
    return Quant(codes[:, :w.shape[1]], scales, -z.astype(np.float32) * scales, group)
