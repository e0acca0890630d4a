"""CUDA elementwise family (cuda/kernels/elementwise.cu) against the CPU engine: binary ops with
broadcasting, unary maths and activations, Clip, Where, Cast, Dropout, reductions, softmax and
the row norms. Every case asserts that no node fell back to the CPU.

SwiGLU is an ember-internal fused op (no ONNX form): the LLM end-to-end tests cover it.
"""
import numpy as np
import pytest

import ember

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not ember.cuda.is_available(), reason="no CUDA device")]


def run_both(model, feeds, rtol=1e-6, atol=0.0):
    """Runs `model` on the CPU and on CUDA; compares every output."""
    want = ember.Engine(model).run(feeds)
    eng = ember.Engine(model, device="cuda")
    got = eng.run(feeds)
    assert eng.device_fallbacks == []
    assert got.keys() == want.keys()
    for name in want:
        g, w = np.asarray(got[name]), np.asarray(want[name])
        assert g.dtype == w.dtype and g.shape == w.shape, name
        if w.dtype.kind in "biu" or w.dtype == np.bool_:
            np.testing.assert_array_equal(g, w, err_msg=name)
        else:
            np.testing.assert_allclose(g.astype(np.float64), w.astype(np.float64), rtol=rtol,
                                       atol=atol, err_msg=name)
    return got


# ---- binary ------------------------------------------------------------------------------

SHAPES = [
    ((7,), (7,)),                       # same shape, odd size
    ((769, 5125), (769, 5125)),         # same shape, vector path and tail
    ((769, 5), (5,)),                   # row broadcast
    ((3, 1, 5125), (1, 4, 1)),          # both sides broadcast
    ((2, 3, 4, 5), (2, 1, 4, 1)),       # alternating
    ((), (7, 3)),                       # rank-0 scalar
    ((1,), (1,)),
    ((13, 1), (1, 17)),                 # outer product
    ((0, 3), (3,)),                     # empty
]
FLOAT_OPS = ["Add", "Sub", "Mul", "Div", "Pow", "Min", "Max"]
COMPARE_OPS = ["Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"]


def _floats(rng, shape, op):
    if op == "Pow":
        return rng.uniform(0.1, 3.0, shape).astype(np.float32)
    x = rng.standard_normal(shape).astype(np.float32)
    if op == "Div":
        x = np.where(np.abs(x) < 0.1, 0.5, x).astype(np.float32)  # no huge quotients
    return x


@pytest.mark.parametrize("op", FLOAT_OPS + COMPARE_OPS)
@pytest.mark.parametrize("sa,sb", SHAPES)
def test_binary_f32(make_model, rng, op, sa, sb):
    model = make_model(op, inputs=[("a", np.float32, sa), ("b", np.float32, sb)], outputs=["y"])
    a, b = _floats(rng, sa, op), _floats(rng, sb, op)
    if op in COMPARE_OPS and a.size and b.size:
        b = np.where(rng.random(sb) < 0.3, a.reshape(-1)[0], b).astype(np.float32)  # some ties
    run_both(model, {"a": a, "b": b}, rtol=2e-6 if op == "Pow" else 1e-6)


def test_binary_f32_nan_min_max(make_model):
    a = np.array([1.0, np.nan, 3.0, -np.inf, np.nan], np.float32)
    b = np.array([np.nan, 2.0, 1.0, 5.0, np.nan], np.float32)
    for op in ("Min", "Max"):
        model = make_model(op, inputs=[("a", np.float32, [5]), ("b", np.float32, [5])], outputs=["y"])
        got = run_both(model, {"a": a, "b": b})["y"]
        assert np.isnan(got[[0, 1, 4]]).all()


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul"] + COMPARE_OPS)
@pytest.mark.parametrize("sa,sb", [((7,), (7,)), ((769, 5), (5,)), ((), (5, 1025))])
def test_binary_i64(make_model, rng, op, sa, sb):
    model = make_model(op, inputs=[("a", np.int64, sa), ("b", np.int64, sb)], outputs=["y"])
    a = rng.integers(-2**40, 2**40, sa, dtype=np.int64)
    b = rng.integers(-5, 5, sb, dtype=np.int64)
    run_both(model, {"a": a, "b": b})


@pytest.mark.parametrize("op", ["And", "Or", "Xor"])
@pytest.mark.parametrize("sa,sb", [((1025,), (1025,)), ((3, 7), (7,)), ((4, 1), (1, 9))])
def test_binary_bool(make_model, rng, op, sa, sb):
    model = make_model(op, inputs=[("a", np.bool_, sa), ("b", np.bool_, sb)], outputs=["y"])
    run_both(model, {"a": rng.random(sa) < 0.5, "b": rng.random(sb) < 0.5})


# ---- unary -------------------------------------------------------------------------------

UNARY = [  # op, attrs, input range
    ("Sqrt", {}, (0.0, 100.0)), ("Exp", {}, (-20.0, 20.0)), ("Log", {}, (1e-3, 1e3)),
    ("Neg", {}, None), ("Abs", {}, None), ("Reciprocal", {}, (0.1, 10.0)), ("Erf", {}, None),
    ("Tanh", {}, None), ("Sigmoid", {}, (-30.0, 30.0)), ("Relu", {}, None),
    ("Gelu", {}, (-10.0, 10.0)), ("Gelu", {"approximate": "tanh"}, (-10.0, 10.0)),
    ("Softplus", {}, (-30.0, 30.0)), ("Sin", {}, (-10.0, 10.0)), ("Cos", {}, (-10.0, 10.0)),
    ("LeakyRelu", {"alpha": 0.07}, None), ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}, (-5.0, 5.0)),
    ("HardSwish", {}, (-6.0, 6.0)), ("Elu", {"alpha": 0.7}, (-10.0, 10.0)),
]


@pytest.mark.parametrize("op,attrs,span", UNARY, ids=[f"{u[0]}-{i}" for i, u in enumerate(UNARY)])
@pytest.mark.parametrize("shape", [(1,), (7,), (769, 3), (5125,), (0, 4)])
def test_unary(make_model, rng, op, attrs, span, shape):
    opset = 20 if op == "Gelu" else 18
    model = make_model(op, inputs=[("x", np.float32, shape)], outputs=["y"], attrs=attrs,
                       opset=opset)
    x = (rng.uniform(*span, shape) if span else rng.standard_normal(shape) * 3).astype(np.float32)
    # Transcendentals: the GPU's float functions against the reference's double ones.
    run_both(model, {"x": x}, rtol=4e-6, atol=1e-7)


def test_unary_nan_inf(make_model):
    x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-40, 88.0, -88.0], np.float32)
    for op in ("Relu", "Sigmoid", "Tanh", "Exp", "Abs", "Neg", "Softplus"):
        model = make_model(op, inputs=[("x", np.float32, [8])], outputs=["y"])
        run_both(model, {"x": x}, rtol=4e-6, atol=1e-38)


def test_dropout_inference(make_model, rng):
    model = make_model("Dropout", inputs=[("x", np.float32, [7, 769])], outputs=["y"])
    x = rng.standard_normal((7, 769)).astype(np.float32)
    got = run_both(model, {"x": x})
    np.testing.assert_array_equal(got["y"], x)


# ---- Clip, Where -------------------------------------------------------------------------

@pytest.mark.parametrize("lo,hi", [(-0.5, 0.7), (-0.5, None), (None, 0.2), (None, None),
                                   (0.3, -0.3)])
@pytest.mark.parametrize("shape", [(7,), (769, 33)])
def test_clip(make_model, rng, lo, hi, shape):
    inputs, feeds = [("x", np.float32, shape)], {}
    for name, v in (("lo", lo), ("hi", hi)):
        if v is None:
            inputs.append("")
        else:
            inputs.append((name, np.float32, []))   # a device scalar, read on the device
            feeds[name] = np.array(v, np.float32)
    while inputs and inputs[-1] == "":
        inputs.pop()
    model = make_model("Clip", inputs=inputs, outputs=["y"])
    feeds["x"] = rng.standard_normal(shape).astype(np.float32)
    run_both(model, feeds)


def test_clip_initializers(make_model, rng):
    model = make_model("Clip", inputs=[("x", np.float32, [1025]), "lo", "hi"], outputs=["y"],
                       initializers={"lo": np.array(-1.0, np.float32),
                                     "hi": np.array(np.nan, np.float32)})
    got = run_both(model, {"x": rng.standard_normal(1025).astype(np.float32)})
    assert np.isnan(got["y"]).all()


@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.bool_, np.float16])
@pytest.mark.parametrize("sc,sx,sy", [((769,), (769,), (769,)), ((3, 1, 5), (4, 5), ()),
                                      ((7, 1), (1, 1025), (7, 1025)), ((0, 2), (2,), (1,))])
def test_where(make_model, rng, dtype, sc, sx, sy):
    model = make_model("Where", inputs=[("c", np.bool_, sc), ("x", dtype, sx), ("y", dtype, sy)],
                       outputs=["z"])
    def data(shape):
        return (rng.standard_normal(shape) * 100).astype(dtype) if dtype != np.bool_ else \
            rng.random(shape) < 0.5
    run_both(model, {"c": rng.random(sc) < 0.5, "x": data(sx), "y": data(sy)})


# ---- Cast --------------------------------------------------------------------------------

def _bf16():
    import ml_dtypes
    return ml_dtypes.bfloat16


CAST_TYPES = {"float32": 1, "float16": 10, "bfloat16": 16, "int64": 7, "int32": 6, "bool": 9}


def _cast_input(rng, src, n):
    if src == "bool":
        return rng.random(n) < 0.5
    if src in ("int64", "int32"):
        return rng.integers(-70000, 70000, n).astype(src)
    v = rng.standard_normal(n) * 1000
    v[:8] = [0.5, -0.5, 2.5, -1e10, 1e10, np.nan, np.inf, 65519.0]  # rounding, ranges, specials
    with np.errstate(over="ignore"):  # 1e10 -> inf in float16 on purpose
        if src == "bfloat16":
            return v.astype(np.float32).astype(_bf16())
        return v.astype(src)


@pytest.mark.parametrize("src", list(CAST_TYPES))
@pytest.mark.parametrize("dst", list(CAST_TYPES))
def test_cast(make_model, rng, src, dst):
    dtype = _bf16() if src == "bfloat16" else np.dtype(src)
    model = make_model("Cast", inputs=[("x", dtype, [1031])], outputs=["y"],
                       attrs={"to": CAST_TYPES[dst]})
    x = _cast_input(rng, src, 1031)
    # Every conversion is exactly rounded on both sides: outputs must match bit for bit.
    want = ember.Engine(model).run({"x": x})["y"]
    eng = ember.Engine(model, device="cuda")
    got = eng.run({"x": x})["y"]
    assert eng.device_fallbacks == []
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(np.asarray(got).view(np.uint8), np.asarray(want).view(np.uint8)) \
        if dst not in ("float32", "float16", "bfloat16") else \
        np.testing.assert_array_equal(np.asarray(got, np.float64), np.asarray(want, np.float64))


def test_cast_like(make_model, rng):
    model = make_model("CastLike", inputs=[("x", np.float32, [769]), ("t", np.float16, [1])],
                       outputs=["y"])
    run_both(model, {"x": (rng.standard_normal(769) * 100).astype(np.float32),
                     "t": np.zeros(1, np.float16)})


# ---- reductions --------------------------------------------------------------------------

REDUCE_CASES = [  # shape, axes (None: attribute-free, reduce all), keepdims
    ((7, 769), [1], 1), ((7, 769), [-1], 0), ((5125,), [0], 0), ((100000, 7), [1], 1),
    ((3, 50, 517), [1], 1), ((1000, 3), [0], 0), ((5, 7, 9), None, 0), ((64, 1024), [0, 1], 1),
    ((2, 3, 4, 5), [0, 2], 0), ((2, 1, 3, 4), [0, 1, 2], 1), ((4, 1, 6, 1, 3), [1, 2, 4], 0),
    ((3, 0), [1], 1), ((1, 32000), [1], 0), ((5, 1), [1], 0),
]


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMean", "ReduceMax"])
@pytest.mark.parametrize("shape,axes,keepdims", REDUCE_CASES)
def test_reduce(make_model, rng, op, shape, axes, keepdims):
    inputs, inits = [("x", np.float32, shape)], {}
    if axes is not None:
        inputs.append("axes")
        inits["axes"] = np.array(axes, np.int64)
    model = make_model(op, inputs=inputs, outputs=["y"], attrs={"keepdims": keepdims},
                       initializers=inits)
    x = rng.standard_normal(shape).astype(np.float32)
    # Sums accumulate in double on both sides; the result is rounded once.
    run_both(model, {"x": x}, rtol=1e-6, atol=1e-6)


def test_reduce_noop_and_nan(make_model, rng):
    model = make_model("ReduceSum", inputs=[("x", np.float32, [3, 7]), "axes"], outputs=["y"],
                       attrs={"noop_with_empty_axes": 1},
                       initializers={"axes": np.array([], np.int64)})
    run_both(model, {"x": rng.standard_normal((3, 7)).astype(np.float32)})
    model = make_model("ReduceMax", inputs=[("x", np.float32, [3, 7]), "axes"], outputs=["y"],
                       attrs={"keepdims": 0}, initializers={"axes": np.array([1], np.int64)})
    x = rng.standard_normal((3, 7)).astype(np.float32)
    x[1, 4] = np.nan
    got = run_both(model, {"x": x})["y"]
    assert np.isnan(got[1]) and not np.isnan(got[0])


# ---- softmax and norms -------------------------------------------------------------------

@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("shape,axis", [((7,), -1), ((4, 32000), -1), ((3, 769), 1),
                                        ((2, 5, 7), 1), ((6, 5, 3), 0), ((9, 1025), -1),
                                        ((0, 5), -1)])
def test_softmax(make_model, rng, op, shape, axis):
    model = make_model(op, inputs=[("x", np.float32, shape)], outputs=["y"], attrs={"axis": axis})
    x = (rng.standard_normal(shape) * 5).astype(np.float32)
    # atol: log-softmax values near 0 carry lse's absolute rounding error.
    run_both(model, {"x": x}, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_softmax_legacy_axis(make_model, rng, op):
    # opset 11 flattens to 2-D at axis: each row is x[i, :, :].
    model = make_model(op, inputs=[("x", np.float32, [2, 3, 4])], outputs=["y"],
                       attrs={"axis": 1}, opset=11)
    run_both(model, {"x": rng.standard_normal((2, 3, 4)).astype(np.float32)}, rtol=1e-5,
             atol=1e-7)


def test_softmax_inf_rows(make_model):
    x = np.array([[-np.inf, 0.0, 1.0], [-np.inf] * 3, [np.nan, 0.0, 1.0]], np.float32)
    model = make_model("Softmax", inputs=[("x", np.float32, [3, 3])], outputs=["y"])
    run_both(model, {"x": x}, rtol=1e-6)


@pytest.mark.parametrize("shape,axis,sshape,bias", [
    ((5, 769), -1, (769,), True), ((7, 32), -1, (32,), False), ((2, 3, 1025), 1, (3, 1025), True),
    ((4, 5125), -1, (1,), True), ((3, 4096), 1, (1, 4096), False), ((0, 8), -1, (8,), True),
])
def test_layer_norm(make_model, rng, shape, axis, sshape, bias):
    inputs = [("x", np.float32, shape), ("s", np.float32, sshape)]
    feeds = {"x": (rng.standard_normal(shape) * 3 + 1).astype(np.float32),
             "s": rng.standard_normal(sshape).astype(np.float32)}
    if bias:
        inputs.append(("b", np.float32, sshape))
        feeds["b"] = rng.standard_normal(sshape).astype(np.float32)
    model = make_model("LayerNormalization", inputs=inputs, outputs=["y"],
                       attrs={"axis": axis, "epsilon": 1e-5}, opset=17)
    run_both(model, feeds, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape,axis,sshape", [((7, 4096), -1, (4096,)), ((3, 5, 7), 1, (5, 7)),
                                               ((5, 1025), -1, (1,)), ((1, 33), -1, (33,))])
def test_rms_norm(make_model, rng, shape, axis, sshape):
    model = make_model("RMSNormalization", inputs=[("x", np.float32, shape), ("s", np.float32, sshape)],
                       outputs=["y"], attrs={"axis": axis, "epsilon": 1e-6}, opset=23)
    feeds = {"x": rng.standard_normal(shape).astype(np.float32),
             "s": rng.standard_normal(sshape).astype(np.float32)}
    run_both(model, feeds, rtol=1e-5, atol=1e-6)
