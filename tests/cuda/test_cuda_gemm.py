"""CUDA MatMul and Gemm (cuBLASLt, cuda/src/ops_gemm.cpp) against the CPU engine: 2-D, folded
and strided batches, broadcast weights, 1-D operands, odd sizes (M 1/7/300, K 769, N 5125),
Gemm's transposes, alpha, beta and every C broadcast, at fp32 (tight: catches TF32) and at
fp16 / bf16 (error bounds that grow with sqrt(K)). Every case asserts no CPU fallback, but the
one two-sided batch broadcast that the kernel refuses on purpose.
"""
import numpy as np
import pytest

import ember

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not ember.cuda.is_available(), reason="no CUDA device")]

# atol per sqrt(K): inputs uniform in [-1, 1], so one output's rounding error grows like
# sqrt(K) * u (u: the unit roundoff of the inputs' rounding), and the bound is ~6 sigma over
# millions of outputs. fp32 is exact FMA (no TF32): only summation order differs.
ATOL_PER_SQRT_K = {"fp32": 2e-5, "fp16": 1e-3, "bf16": 6e-3}


def uniform(rng, shape):
    return rng.uniform(-1, 1, size=shape).astype(np.float32)


def run_both(model, feeds, k, precision="fp32", fallbacks=()):
    """Runs `model` on CUDA and on the CPU; compares Y at the precision's bound for this K."""
    dev = ember.Engine(model, device="cuda", precision=precision)
    got = dev.run(feeds)["Y"]
    want = ember.Engine(model).run(feeds)["Y"]
    assert dev.device_fallbacks == list(fallbacks)
    assert got.dtype == want.dtype == np.float32 and got.shape == want.shape
    atol = ATOL_PER_SQRT_K[precision] * np.sqrt(max(k, 1))
    rtol = 1e-5 if precision == "fp32" else 0
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)
    return got, want


def matmul_model(make_model, a_shape, b_shape, b_init=None):
    inputs = [("A", np.float32, a_shape), "B" if b_init is not None else ("B", np.float32, b_shape)]
    inits = {"B": b_init} if b_init is not None else None
    return make_model("MatMul", inputs=inputs, outputs=["Y"], initializers=inits)


# ---- MatMul ----------------------------------------------------------------------------------

MATMUL_SHAPES = [
    ((1, 769), (769, 5125)),        # decode row
    ((7, 769), (769, 5125)),
    ((300, 769), (769, 5125)),
    ((7, 1), (1, 13)),              # K == 1
    ((5, 64), (64, 1)),             # N == 1
    ((3, 7, 769), (3, 769, 33)),    # strided batches
    ((2, 3, 7, 64), (2, 3, 64, 9)),
    ((1, 3, 7, 64), (3, 64, 9)),    # equal batches after left-padding
    ((2, 3, 7, 769), (769, 5125)),  # broadcast weight: batches fold into M
    ((2, 3, 7, 64), (1, 1, 64, 9)),
    ((7, 64), (4, 64, 9)),          # one A for every B: batch stride 0
    ((769,), (769, 5125)),          # 1-D A
    ((3, 7, 769), (769,)),          # 1-D B
    ((2, 64), (3, 2, 64, 9)),
    ((64,), (64,)),                 # dot: a 0-d result
    ((64,), (4, 64, 9)),
]


@pytest.mark.parametrize("a_shape,b_shape", MATMUL_SHAPES)
def test_matmul_fp32(make_model, rng, a_shape, b_shape):
    feeds = {"A": uniform(rng, a_shape), "B": uniform(rng, b_shape)}
    run_both(matmul_model(make_model, a_shape, b_shape), feeds, k=a_shape[-1])


def test_matmul_weight_initializer(make_model, rng):
    """A weight stored in the model (a device constant) rather than fed."""
    w = uniform(rng, (769, 5125))
    model = matmul_model(make_model, (7, 769), None, b_init=w)
    run_both(model, {"A": uniform(rng, (7, 769))}, k=769)


@pytest.mark.parametrize("a_shape,b_shape", [((0, 64), (64, 9)), ((3, 0), (0, 5)),
                                             ((2, 0, 64), (2, 64, 9))])
def test_matmul_empty(make_model, rng, a_shape, b_shape):
    """No rows (nothing to launch) and K == 0 (an empty sum: zeros, not garbage)."""
    feeds = {"A": uniform(rng, a_shape), "B": uniform(rng, b_shape)}
    got, _ = run_both(matmul_model(make_model, a_shape, b_shape), feeds, k=a_shape[-1])
    if a_shape[-1] == 0:
        assert np.all(got == 0)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
@pytest.mark.parametrize("a_shape,b_shape", [((300, 769), (769, 5125)), ((3, 7, 769), (3, 769, 33)),
                                             ((1, 769), (769, 5125)),
                                             # big enough to round A and B to 16 bits first
                                             # (lt_rounding_pays), batches folded into M
                                             ((2, 1100, 769), (769, 2100))])
def test_matmul_half_precision(make_model, rng, precision, a_shape, b_shape):
    feeds = {"A": uniform(rng, a_shape), "B": uniform(rng, b_shape)}
    got, want = run_both(matmul_model(make_model, a_shape, b_shape), feeds, k=a_shape[-1],
                         precision=precision)
    if a_shape[0] == 300:
        # A large problem runs on the half-precision units, not on an fp32 path (whose error
        # would be ~1e-4 of the bound). cuBLASLt may keep fp32 for small ones.
        err = np.max(np.abs(got - want))
        assert err > 1e-2 * ATOL_PER_SQRT_K[precision] * np.sqrt(a_shape[-1]), err


def test_matmul_deterministic_rows_independent_of_m(make_model, rng):
    """deterministic=True: a row's result is bit-identical however many rows run with it (one
    algorithm for every M, no split-K)."""
    import inspect
    if "deterministic" not in inspect.signature(ember.Engine).parameters:
        pytest.skip("ember.Engine has no deterministic= option yet")
    w = uniform(rng, (769, 5125))
    model = matmul_model(make_model, ("M", 769), None, b_init=w)
    a = uniform(rng, (300, 769))
    dev = ember.Engine(model, device="cuda", deterministic=True)
    full = dev.run({"A": a})["Y"]
    assert dev.device_fallbacks == []
    for rows in (1, 7, 129):
        part = dev.run({"A": a[:rows]})["Y"]
        np.testing.assert_array_equal(part, full[:rows])


def test_matmul_two_sided_broadcast_falls_back(make_model, rng):
    """[2, 1] x [1, 3] batches need a gather, not a strided batch: the node runs on the CPU."""
    a_shape, b_shape = (2, 1, 7, 16), (1, 3, 16, 5)
    feeds = {"A": uniform(rng, a_shape), "B": uniform(rng, b_shape)}
    run_both(matmul_model(make_model, a_shape, b_shape), feeds, k=16,
             fallbacks=[("matmul_0", "MatMul")])


# ---- Gemm ------------------------------------------------------------------------------------

def gemm_model(make_model, a_shape, b_shape, c_shape, attrs):
    inputs = [("A", np.float32, a_shape), ("B", np.float32, b_shape)]
    if c_shape is not None:
        inputs.append(("C", np.float32, c_shape))
    return make_model("Gemm", inputs=inputs, outputs=["Y"], attrs=attrs, opset=13)


def gemm_feeds(rng, a_shape, b_shape, c_shape):
    feeds = {"A": uniform(rng, a_shape), "B": uniform(rng, b_shape)}
    if c_shape is not None:
        feeds["C"] = uniform(rng, c_shape)
    return feeds


GEMM_CASES = [  # M, K, N, transA, transB, alpha, beta, C shape ("M"/"N" stand for the sizes)
    (7, 769, 33, 0, 0, 1.0, 1.0, None),
    (7, 769, 33, 1, 0, 1.0, 1.0, None),
    (7, 769, 33, 0, 1, 1.0, 1.0, None),
    (7, 769, 33, 1, 1, 0.5, 1.0, None),
    (7, 769, 5125, 0, 1, 1.0, 1.0, ("N",)),      # a linear layer: the BIAS epilogue
    (300, 769, 33, 0, 0, 2.0, 1.0, (1, "N")),    # bias row, alpha scaled
    (7, 769, 33, 0, 0, 1.0, 0.5, ("N",)),        # row with beta != 1: broadcast + beta
    (7, 769, 33, 1, 1, -1.0, 0.25, ("M", "N")),  # full C
    (7, 769, 33, 0, 0, 1.0, 2.0, ("M", 1)),      # column
    (7, 769, 33, 0, 0, 1.0, 3.0, ()),            # scalar
    (7, 769, 33, 0, 0, 1.0, 1.0, (1,)),
    (7, 769, 33, 0, 0, 1.0, 0.0, ("M", "N")),    # beta 0: C is not read
    (1, 769, 5125, 0, 1, 1.0, 1.0, ("N",)),      # M == 1: the row is all of C
    (1, 1, 1, 0, 0, 1.0, 1.0, None),
]


def resolve(shape, m, n):
    return None if shape is None else tuple(m if d == "M" else n if d == "N" else d for d in shape)


@pytest.mark.parametrize("m,k,n,ta,tb,alpha,beta,c", GEMM_CASES)
def test_gemm_fp32(make_model, rng, m, k, n, ta, tb, alpha, beta, c):
    a_shape = (k, m) if ta else (m, k)
    b_shape = (n, k) if tb else (k, n)
    c_shape = resolve(c, m, n)
    model = gemm_model(make_model, a_shape, b_shape, c_shape,
                       {"transA": ta, "transB": tb, "alpha": alpha, "beta": beta})
    run_both(model, gemm_feeds(rng, a_shape, b_shape, c_shape), k=k)


def test_gemm_beta_zero_ignores_nan_c(make_model, rng):
    """beta == 0: the reference never reads C, so NaNs in it do not reach Y."""
    model = gemm_model(make_model, (7, 64), (64, 9), (7, 9), {"beta": 0.0})
    feeds = gemm_feeds(rng, (7, 64), (64, 9), (7, 9))
    feeds["C"][:] = np.nan
    got, _ = run_both(model, feeds, k=64)
    assert np.all(np.isfinite(got))


def test_gemm_empty_k(make_model, rng):
    """K == 0: Y is beta * C broadcast."""
    model = gemm_model(make_model, (3, 0), (0, 5), (3, 1), {"beta": 2.0})
    feeds = gemm_feeds(rng, (3, 0), (0, 5), (3, 1))
    got, _ = run_both(model, feeds, k=0)
    np.testing.assert_allclose(got, np.broadcast_to(2 * feeds["C"], (3, 5)), rtol=1e-6)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
@pytest.mark.parametrize("c", [None, ("N",), ("M", 1)])
@pytest.mark.parametrize("m,n", [(300, 5125), (2100, 2101)])  # the second rounds A and B first
def test_gemm_half_precision(make_model, rng, precision, c, m, n):
    k = 769
    c_shape = resolve(c, m, n)
    model = gemm_model(make_model, (m, k), (n, k), c_shape, {"transB": 1})
    run_both(model, gemm_feeds(rng, (m, k), (n, k), c_shape), k=k, precision=precision)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
@pytest.mark.parametrize("a_shape,b_shape", [((7, 769), (769, 5125)), ((2, 1100, 769), (769, 2100)),
                                             ((3, 7, 64), (3, 64, 9))])
def test_matmul_half_weight_initializer(make_model, rng, precision, a_shape, b_shape):
    """A constant B at fp16 / bf16 is rounded at load (weight_prepare_*) and every call takes
    the 16-bit path, small M included."""
    w = uniform(rng, b_shape)
    model = matmul_model(make_model, a_shape, None, b_init=w)
    run_both(model, {"A": uniform(rng, a_shape)}, k=a_shape[-1], precision=precision)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_gemm_half_weight_initializer(make_model, rng, precision):
    """A linear layer with constant W (transB) and bias at fp16 / bf16: W rounded at load, the
    bias kept F32 for the BIAS epilogue."""
    m, k, n = 7, 769, 5125
    inits = {"B": uniform(rng, (n, k)), "C": uniform(rng, (n,))}
    model = make_model("Gemm", inputs=[("A", np.float32, (m, k)), "B", "C"], outputs=["Y"],
                       attrs={"transB": 1}, opset=13, initializers=inits)
    run_both(model, {"A": uniform(rng, (m, k))}, k=k, precision=precision)


def linear_model(rng, k, n, act):
    """x [b, s, k] -> MatMul W [k, n] -> Add b [n] -> act: fuse_matmul_epilogue's FusedMatMul."""
    from onnx import TensorProto, helper, numpy_helper
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Add", ["h", "b"], ["y0"])]
    y = "y0"
    if act:
        nodes.append(helper.make_node(act, ["y0"], ["y1"]))
        y = "y1"
    nodes.append(helper.make_node("Identity", [y], ["Y"]))
    g = helper.make_graph(nodes, "linear", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "s", k])],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
                          initializer=[numpy_helper.from_array(uniform(rng, (k, n)), "W"),
                                       numpy_helper.from_array(uniform(rng, (n,)), "b")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)]).SerializeToString()


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("act", [None, "Relu", "Gelu"])
@pytest.mark.parametrize("deterministic", [False, True])
def test_fused_matmul_bias_epilogue(rng, precision, act, deterministic):
    """MatMul + bias Add [+ Relu | Gelu] runs as one FusedMatMul: cuBLASLt's BIAS epilogue (the
    bias written into Y first in deterministic runs), the activation in place after."""
    k, n = 769, 1000
    model = linear_model(rng, k, n, act)
    x = uniform(rng, (2, 65, k))
    dev = ember.Engine(model, device="cuda", precision=precision, deterministic=deterministic)
    got = dev.run({"x": x})["Y"]
    assert dev.device_fallbacks == []
    kernels = [(op, kern) for _n, op, kern, _i, _d in dev.plan_info({"x": x})["nodes"]]
    assert ("FusedMatMul", "fused_matmul_cuda") in kernels and ("Add", "add_cuda") not in kernels, kernels
    want = ember.Engine(model).run({"x": x})["Y"]
    atol = ATOL_PER_SQRT_K[precision] * np.sqrt(k)
    np.testing.assert_allclose(got, want, rtol=1e-5 if precision == "fp32" else 0, atol=atol)
    if deterministic:  # a row's bits do not depend on the rows run with it
        one = dev.run({"x": x[1:2, 7:8]})["Y"]
        np.testing.assert_array_equal(one[0, 0], got[1, 7])


def test_profile_times_device_work(make_model, rng):
    """Engine.profile times a CUDA node with CUDA events: the GPU's time for its kernels, so a
    2048^3 fp32 MatMul cannot read faster than the part's fp32 peak (about 67 TFLOP/s on an
    H100/H200 without TF32; 100 here), nor be zero, and the nodes fit in the run."""
    n = 2048
    model = matmul_model(make_model, (n, n), (n, n))
    eng = ember.Engine(model, device="cuda")
    prof = eng.profile({"A": uniform(rng, (n, n)), "B": uniform(rng, (n, n))}, runs=5, warmup=1)
    node = next(x for x in prof.nodes if x.op == "MatMul")
    assert node.kernel != "reference" and node.median_ms > 0
    assert 2 * n ** 3 / (node.median_ms * 1e-3) < 100e12, node.median_ms
    assert prof.nodes_ms <= prof.total_ms
