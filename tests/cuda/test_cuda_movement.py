"""CUDA data-movement ops (cuda/kernels/movement.cu) against the CPU engine.

Data movement is exact, so outputs must be bit-equal to the CPU's; Rope (sin/cos on the
device) allows 2e-6. Every case asserts that no node fell back to the CPU. Odd sizes (1, 7,
769, 5125), negative axes and steps, empty tensors, 1/2/4/8-byte dtypes.
"""
import numpy as np
import pytest

import ember

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not ember.cuda.is_available(), reason="no CUDA device")]

DTYPES = [np.float32, np.int64, np.float16, np.uint8]


def data(rng, dtype, shape):
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return rng.random(shape) < 0.5
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
    return rng.standard_normal(shape).astype(dtype)


def run_both(model, feeds):
    """(device outputs, CPU outputs); fails when any node ran on the CPU."""
    with ember.Engine(model, device="cuda") as eng:
        got = eng.run(feeds)
        assert eng.device_fallbacks == []
    with ember.Engine(model) as cpu:
        want = cpu.run(feeds)
    assert got.keys() == want.keys()
    return got, want


def check_exact(model, feeds):
    got, want = run_both(model, feeds)
    for name in want:
        assert got[name].dtype == want[name].dtype, name
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


# ---- copies ----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES + [np.bool_])
@pytest.mark.parametrize("op,shape,attrs,extra", [
    ("Reshape", (7, 769), {}, {"s": np.array([-1, 7], np.int64)}),
    ("Flatten", (3, 5, 7), {"axis": -1}, {}),
    ("Squeeze", (1, 769, 1), {}, {"s": np.array([0, -1], np.int64)}),
    ("Unsqueeze", (5125,), {}, {"s": np.array([0, 2], np.int64)}),
    ("Identity", (0, 7), {}, {}),
])
def test_copies(make_model, rng, dtype, op, shape, attrs, extra):
    inputs = [("x", dtype, shape)] + list(extra)
    model = make_model(op, inputs, ["y"], attrs=attrs, initializers=extra)
    check_exact(model, {"x": data(rng, dtype, shape)})


# ---- Transpose -------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,perm", [
    ((7, 769), (1, 0)),                  # tiled
    ((1, 5125), (1, 0)),                 # collapses to a copy
    ((2, 3, 20, 18), (1, 0, 3, 2)),      # tiled with a batch dim
    ((5, 40, 3, 37), (0, 3, 2, 1)),
    ((2, 7, 3, 64), (0, 2, 1, 3)),       # last dim kept: widened rows
    ((4, 1, 7, 1, 9), (4, 2, 0, 3, 1)),
    ((3, 17, 19), None),                 # default: reversed
    ((3, 0, 4), (2, 1, 0)),
])
def test_transpose(make_model, rng, dtype, shape, perm):
    attrs = {} if perm is None else {"perm": list(perm)}
    model = make_model("Transpose", [("x", dtype, shape)], ["y"], attrs=attrs)
    check_exact(model, {"x": data(rng, dtype, shape)})


# ---- Slice -----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.float16])
@pytest.mark.parametrize("shape,starts,ends,axes,steps", [
    ((7, 769), [1, 3], [6, 700], [0, 1], [2, 1]),
    ((7, 769), [-1, -2], [-100, 0], [0, -1], [-1, -3]),
    ((5125,), [4], [5125], None, [4]),
    ((3, 4, 5), [10], [-10], [-1], [-2]),
    ((1,), [-2], [-9], [0], [-1]),
    ((6, 6), [4], [2], [0], None),          # empty
    ((2, 9, 8), [0, 1], [2, 9], [0, 1], None),
])
def test_slice(make_model, rng, dtype, shape, starts, ends, axes, steps):
    inits = {"starts": np.array(starts, np.int64), "ends": np.array(ends, np.int32 if axes else np.int64)}
    names = ["starts", "ends"]
    if axes is not None or steps is not None:
        inits["axes"] = np.array(axes if axes is not None else list(range(len(starts))), np.int64)
        names.append("axes")
    if steps is not None:
        inits["steps"] = np.array(steps, np.int64)
        names.append("steps")
    model = make_model("Slice", [("x", dtype, shape)] + names, ["y"], initializers=inits)
    check_exact(model, {"x": data(rng, dtype, shape)})


# ---- Concat, Split ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shapes,axis", [
    ([(7, 3), (7, 769), (7, 1)], -1),
    ([(2, 3, 5), (2, 0, 5), (2, 7, 5)], 1),
    ([(5125,), (1,)], 0),
])
def test_concat(make_model, rng, dtype, shapes, axis):
    inputs = [(f"x{i}", dtype, s) for i, s in enumerate(shapes)]
    model = make_model("Concat", inputs, ["y"], attrs={"axis": axis})
    check_exact(model, {f"x{i}": data(rng, dtype, s) for i, s in enumerate(shapes)})


@pytest.mark.parametrize("dtype", DTYPES)
def test_split_sizes(make_model, rng, dtype):
    model = make_model("Split", [("x", dtype, (7, 769)), "split"], ["a", "b", "c"], attrs={"axis": -1},
                       initializers={"split": np.array([1, 700, 68], np.int64)})
    check_exact(model, {"x": data(rng, dtype, (7, 769))})


@pytest.mark.parametrize("dtype", DTYPES)
def test_split_num_outputs(make_model, rng, dtype):
    model = make_model("Split", [("x", dtype, (7, 5, 3))], ["a", "b", "c"], attrs={"axis": 0, "num_outputs": 3})
    check_exact(model, {"x": data(rng, dtype, (7, 5, 3))})


# ---- Gather, GatherElements ------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("idx_dtype", [np.int64, np.int32])
@pytest.mark.parametrize("shape,axis,idx_shape", [
    ((5125, 7), 0, (3, 4)),
    ((7, 769), 1, (5,)),
    ((2, 9, 64), -2, (1,)),
    ((4, 3), 0, (0,)),
])
def test_gather(make_model, rng, dtype, idx_dtype, shape, axis, idx_shape):
    dim = shape[axis]
    idx = rng.integers(-dim, dim, size=idx_shape).astype(idx_dtype)
    model = make_model("Gather", [("x", dtype, shape), ("i", idx_dtype, idx_shape)], ["y"], attrs={"axis": axis})
    check_exact(model, {"x": data(rng, dtype, shape), "i": idx})


@pytest.mark.parametrize("bad", [5, -6, 1 << 40])
def test_gather_out_of_range(make_model, rng, bad):
    model = make_model("Gather", [("x", np.float32, (5, 3)), ("i", np.int64, (4,))], ["y"], attrs={"axis": 0})
    with ember.Engine(model, device="cuda") as eng:
        with pytest.raises(ember.InputError, match=f"gather_0.*index {bad} is out of range for axis 0 of size 5"):
            eng.run({"x": data(rng, np.float32, (5, 3)), "i": np.array([0, bad, 1, 2], np.int64)})
        # The engine stays usable after the error.
        ok = eng.run({"x": np.ones((5, 3), np.float32), "i": np.array([4, -5, 0, 1], np.int64)})
        np.testing.assert_array_equal(ok["y"], np.ones((4, 3), np.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.uint8])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_gather_elements(make_model, rng, dtype, axis):
    shape, idx_shape = (7, 9, 5), (5, 9, 3)
    dim = shape[axis]
    idx = rng.integers(-dim, dim, size=idx_shape).astype(np.int64)
    model = make_model("GatherElements", [("x", dtype, shape), ("i", np.int64, idx_shape)], ["y"],
                       attrs={"axis": axis})
    check_exact(model, {"x": data(rng, dtype, shape), "i": idx})


def test_gather_elements_out_of_range(make_model, rng):
    model = make_model("GatherElements", [("x", np.float32, (3, 4)), ("i", np.int32, (2, 4))], ["y"],
                       attrs={"axis": 1})
    idx = np.zeros((2, 4), np.int32)
    idx[1, 2] = 4
    with ember.Engine(model, device="cuda") as eng:
        with pytest.raises(ember.InputError, match="index 4 is out of range"):
            eng.run({"x": data(rng, np.float32, (3, 4)), "i": idx})


# ---- Expand, Tile, Pad, Trilu ----------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,target", [
    ((3, 1, 5), (2, 3, 7, 5)),
    ((769, 1), (769, 40)),
    ((1,), (5125,)),
    ((7,), (0, 7)),
])
def test_expand(make_model, rng, dtype, shape, target):
    model = make_model("Expand", [("x", dtype, shape), "shape"], ["y"],
                       initializers={"shape": np.array(target, np.int64)})
    check_exact(model, {"x": data(rng, dtype, shape)})


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,reps", [((3, 1, 5), (2, 3, 1)), ((7, 769), (1, 2)), ((4,), (0,))])
def test_tile(make_model, rng, dtype, shape, reps):
    model = make_model("Tile", [("x", dtype, shape), "r"], ["y"], initializers={"r": np.array(reps, np.int64)})
    check_exact(model, {"x": data(rng, dtype, shape)})


@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.float16])
@pytest.mark.parametrize("shape,pads,axes,value", [
    ((3, 4, 5), [0, 1, 0, 0, 2, 0], None, 1.5),
    ((7, 9), [2, -3, 1, 4], None, None),
    ((2, 3, 769), [1, 2], [-1], 7),
    ((0, 3), [1, 1, 1, 1], None, 2),
])
def test_pad_constant(make_model, rng, dtype, shape, pads, axes, value):
    inits = {"pads": np.array(pads, np.int64)}
    names = ["pads"]
    if value is not None or axes is not None:
        names.append("value" if value is not None else "")
        if value is not None:
            inits["value"] = np.array(value, dtype)
    if axes is not None:
        inits["axes"] = np.array(axes, np.int64)
        names.append("axes")
    model = make_model("Pad", [("x", dtype, shape)] + names, ["y"], attrs={"mode": "constant"}, initializers=inits)
    check_exact(model, {"x": data(rng, dtype, shape)})


@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.bool_])
@pytest.mark.parametrize("upper", [0, 1])
@pytest.mark.parametrize("k", [None, 0, 2, -3, 100])
def test_trilu(make_model, rng, dtype, upper, k):
    shape = (2, 7, 9)
    names, inits = [], {}
    if k is not None:
        names, inits = ["k"], {"k": np.array(k, np.int64)}
    model = make_model("Trilu", [("x", dtype, shape)] + names, ["y"], attrs={"upper": upper}, initializers=inits)
    check_exact(model, {"x": data(rng, dtype, shape)})


# ---- Rope ------------------------------------------------------------------------------------

def rope_graph(tokens, heads, head_dim, rot_half, interleaved, pos_dtype):
    """Rope is an ember-internal op (the LLM builders emit it): a one-node core graph."""
    from ember import _core
    g = _core.Graph()
    x = g.add_value("x", "float32", [tokens, heads * head_dim])
    p = g.add_value("pos", np.dtype(pos_dtype).name, [tokens])
    g.add_input(x)
    g.add_input(p)
    f = g.add_value("inv_freq")
    g.set_constant(f, (10000.0 ** (-np.arange(rot_half) / rot_half)).astype(np.float32))
    y = g.add_value("y")
    g.add_node("Rope", "rope_0", [x, p, f], [y],
               {"num_heads": heads, "head_dim": head_dim, "interleaved": int(interleaved)})
    g.add_output(y)
    return g


@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("pos_dtype", [np.int64, np.int32])
@pytest.mark.parametrize("tokens,heads,head_dim,rot_half", [(7, 3, 64, 32), (1, 32, 128, 64), (5, 2, 10, 3),
                                                            (0, 4, 8, 4)])
def test_rope(rng, interleaved, pos_dtype, tokens, heads, head_dim, rot_half):
    from ember import _core
    g = rope_graph(tokens, heads, head_dim, rot_half, interleaved, pos_dtype)
    x = rng.standard_normal((tokens, heads * head_dim)).astype(np.float32)
    pos = rng.integers(0, 40000, size=tokens).astype(pos_dtype)
    feeds = [("x", x, "float32"), ("pos", pos, np.dtype(pos_dtype).name)]
    # The core Session takes a registered name ("cuda:0"); ember.cuda.device resolves "cuda".
    dev = _core.Session(g, device=ember.cuda.device("cuda"))
    got = {name: arr for name, arr, _ in dev.run(feeds)}
    assert dev.device_fallbacks() == []
    want = {name: arr for name, arr, _ in _core.Session(rope_graph(tokens, heads, head_dim, rot_half, interleaved,
                                                                   pos_dtype)).run(feeds)}
    # sin/cos of angles up to 4e4 rad differ by an ulp or two between libm and CUDA.
    np.testing.assert_allclose(got["y"], want["y"], rtol=2e-6, atol=2e-6)
    # Dims past 2 * rot_half are copied exactly.
    tail = np.arange(heads * head_dim) % head_dim >= 2 * rot_half
    np.testing.assert_array_equal(got["y"][:, tail], x[:, tail])
