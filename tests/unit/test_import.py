"""ONNX importer: version table, legacy-form conversions, malformed and hostile files."""
import os

import numpy as np
import onnx
import onnx.defs
import pytest
from onnx import TensorProto as TP
from onnx import helper as oh
from onnx import numpy_helper as onh

import ember
from ember import _core
from ember.errors import ModelError, UnsupportedOpError
from ember.onnx_import import import_model, supported_ops



def need(*ops):
    missing = [o for o in ops if o not in _core.op_names()]
    if missing:
        pytest.skip(f"ember._core has no OpDef for {', '.join(missing)} yet")


def model(nodes, inputs, outputs, inits=(), opset=17, **kw):
    g = oh.make_graph(nodes, "g", inputs, outputs, list(inits))
    return oh.make_model(g, opset_imports=[oh.make_opsetid("", opset)], **kw)


def vi(name, dtype=TP.FLOAT, shape=None):
    return oh.make_tensor_value_info(name, dtype, shape)


def run(m, feeds, **kw):
    with ember.Engine(m, **kw) as eng:
        return eng.run(feeds)


def small_model(rng=None):
    """x + w, then * b: two initializers, written by onnx so truncation cuts real fields."""
    rng = rng or np.random.default_rng()
    w = rng.standard_normal((4, 8)).astype(np.float32)
    b = rng.standard_normal((8,)).astype(np.float32)
    m = model([oh.make_node("Add", ["x", "w"], ["t"], name="add"),
               oh.make_node("Mul", ["t", "b"], ["y"], name="mul")],
              [vi("x", shape=["n", 8])], [vi("y")], [onh.from_array(w, "w"), onh.from_array(b, "b")])
    return m, w, b


# ---- the version table ---------------------------------------------------------------------

def test_table_lists_every_version_from_opset_11():
    """Every since_version reachable from opsets 11..max is accepted, and nothing else."""
    table = supported_ops()
    microsoft = supported_ops("com.microsoft")  # no ONNX schema: tests/unit/test_matmulnbits.py
    assert set(table) | set(microsoft) == set(_core.op_names()) | {"Constant"}  # every C++ op, no more
    for op, versions in table.items():
        reachable = set()
        for opset in range(11, onnx.defs.onnx_opset_version() + 1):
            try:
                reachable.add(onnx.defs.get_schema(op, opset, "").since_version)
            except onnx.defs.SchemaError:
                pass  # op introduced later (Gelu 20, LayerNormalization 17, Trilu 14, ...)
        assert set(versions) == reachable, op


# ---- running models ------------------------------------------------------------------------

def test_add_mul_with_initializers_runs(rng):
    m, w, b = small_model(rng)
    x = rng.standard_normal((4, 8)).astype(np.float32)
    np.testing.assert_allclose(run(m, {"x": x})["y"], (x + w) * b, rtol=1e-6)
    _, info = import_model(m)
    assert info.parameter_count == 40
    assert info.op_histogram == {"Add": 1, "Mul": 1}
    assert info.opset == {"ai.onnx": 17}
    assert [(t.name, t.dtype, t.shape) for t in info.inputs] == [("x", "float32", ["n", 8])]


def test_initializers_listed_as_inputs_are_constants(rng):
    m, w, b = small_model(rng)
    m.graph.input.extend([vi("w", shape=[4, 8]), vi("b", shape=[8])])  # old exporters did this
    _, info = import_model(m)
    assert [t.name for t in info.inputs] == ["x"]
    x = rng.standard_normal((4, 8)).astype(np.float32)
    np.testing.assert_allclose(run(m, {"x": x})["y"], (x + w) * b, rtol=1e-6)


def test_nodes_out_of_order_are_sorted(rng):
    m, w, b = small_model(rng)
    nodes = list(m.graph.node)
    del m.graph.node[:]
    m.graph.node.extend(reversed(nodes))
    x = rng.standard_normal((4, 8)).astype(np.float32)
    np.testing.assert_allclose(run(m, {"x": x})["y"], (x + w) * b, rtol=1e-6)


@pytest.mark.parametrize("form", ["value", "value_float", "value_floats", "value_int", "value_ints"])
def test_constant_forms(form, rng):
    if form == "value":
        c = np.arange(6, dtype=np.float32).reshape(2, 3)
        attr = {"value": onh.from_array(c)}
    elif form == "value_float":
        c, attr = np.float32(2.5), {"value_float": 2.5}
    elif form == "value_floats":
        c, attr = np.array([1.5, -2.0, 3.0], np.float32), {"value_floats": [1.5, -2.0, 3.0]}
    elif form == "value_int":
        c, attr = np.int64(7), {"value_int": 7}
    else:
        c, attr = np.array([1, -2, 3], np.int64), {"value_ints": [1, -2, 3]}
    c = np.asarray(c)
    dt = TP.FLOAT if c.dtype == np.float32 else TP.INT64
    m = model([oh.make_node("Constant", [], ["c"], **attr), oh.make_node("Add", ["x", "c"], ["y"])],
              [vi("x", dt, [2, 3])], [vi("y", dt)])
    x = rng.integers(-5, 5, (2, 3)).astype(c.dtype)
    np.testing.assert_array_equal(run(m, {"x": x})["y"], x + c)


@pytest.mark.parametrize("dtype", [np.float16, np.int8, np.uint8, np.int16, np.int32, np.float64, np.bool_])
def test_typed_field_initializers(dtype, rng):
    """Tensors stored in int32_data/double_data (not raw_data) convert with the right bits."""
    a = rng.standard_normal((3, 2)) * 50
    a = (a > 0) if dtype == np.bool_ else a.astype(dtype)
    t = onh.from_array(a, "w")
    vals = a.astype(np.int32) if dtype != np.float16 else a.view(np.uint16).astype(np.int32)
    t.ClearField("raw_data")
    if dtype == np.float64:
        t.double_data.extend(a.ravel().tolist())
    else:
        t.int32_data.extend(vals.ravel().tolist())
    op = "Or" if dtype == np.bool_ else "Add"
    elem = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    m = model([oh.make_node(op, ["x", "w"], ["y"])], [vi("x", elem, [3, 2])], [vi("y", elem)], [t])
    x = np.zeros((3, 2), dtype)
    np.testing.assert_array_equal(run(m, {"x": x})["y"], a)


def test_bfloat16_initializer(rng):
    ml_dtypes = pytest.importorskip("ml_dtypes", reason="bf16 feeds need ml_dtypes")
    a = rng.standard_normal((2, 3)).astype(ml_dtypes.bfloat16)
    t = oh.make_tensor("w", TP.BFLOAT16, [2, 3], a.view(np.uint16).tobytes(), raw=True)
    m = model([oh.make_node("Add", ["x", "w"], ["y"])], [vi("x", TP.BFLOAT16, [2, 3])],
              [vi("y", TP.BFLOAT16)], [t])
    y = run(m, {"x": np.zeros((2, 3), ml_dtypes.bfloat16)})["y"]
    np.testing.assert_array_equal(np.asarray(y).view(np.uint16), a.view(np.uint16))


def test_reducesum_opset11_axes_attribute(rng):
    need("ReduceSum")
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    m = model([oh.make_node("ReduceSum", ["x"], ["y"], axes=[0, 2], keepdims=0)],
              [vi("x", shape=[2, 3, 4])], [vi("y")], opset=11)
    np.testing.assert_allclose(run(m, {"x": x})["y"], x.sum(axis=(0, 2)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op,opset,np_fn", [("ReduceMean", 13, np.mean), ("ReduceMax", 12, np.max),
                                            ("ReduceMean", 18, np.mean)])
def test_reduce_axes(op, opset, np_fn, rng):
    need(op)
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    if opset < 18:
        nodes, inits = [oh.make_node(op, ["x"], ["y"], axes=[-1])], []
    else:
        nodes, inits = [oh.make_node(op, ["x", "ax"], ["y"])], [onh.from_array(np.array([-1]), "ax")]
    m = model(nodes, [vi("x", shape=[2, 3, 4])], [vi("y")], inits, opset=opset)
    np.testing.assert_allclose(run(m, {"x": x})["y"], np_fn(x, axis=-1, keepdims=True), rtol=1e-5)


def test_reduce_without_axes_reduces_all(rng):
    need("ReduceMax")
    x = rng.standard_normal((2, 3)).astype(np.float32)
    m = model([oh.make_node("ReduceMax", ["x"], ["y"])], [vi("x", shape=[2, 3])], [vi("y")], opset=11)
    np.testing.assert_allclose(run(m, {"x": x})["y"], x.max(keepdims=True))


def _legacy_softmax(x, axis, log):
    x2 = x.reshape(int(np.prod(x.shape[:axis])), -1)
    e = np.exp(x2 - x2.max(axis=1, keepdims=True))
    y = e / e.sum(axis=1, keepdims=True)
    return (np.log(y) if log else y).reshape(x.shape)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("axis", [None, 1, -2])
def test_softmax_opset11_legacy_2d(op, axis, rng):
    """Opset < 13 flattens to 2-D at axis (default 1). onnx.reference applies the opset-13
    rule to opset-11 nodes, so the reference here is numpy (and ORT agrees with it)."""
    need(op)
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    kw = {} if axis is None else {"axis": axis}
    m = model([oh.make_node(op, ["x"], ["y"], **kw)], [vi("x", shape=[2, 3, 4])], [vi("y")], opset=11)
    want = _legacy_softmax(x, (1 if axis is None else axis) % 3, op == "LogSoftmax")
    per_axis = _legacy_softmax(np.moveaxis(x, 1, -1), 2, False)  # opset-13 reading
    assert not np.allclose(want, np.moveaxis(per_axis, -1, 1))   # the test can tell them apart
    np.testing.assert_allclose(run(m, {"x": x})["y"], want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op,opset", [("Squeeze", 11), ("Unsqueeze", 11), ("Squeeze", 13)])
def test_squeeze_unsqueeze(op, opset, rng):
    need(op)
    x = rng.standard_normal((3, 1, 4)).astype(np.float32)
    axes = [1]
    if opset < 13:
        nodes, inits = [oh.make_node(op, ["x"], ["y"], axes=axes)], []
    else:
        nodes, inits = [oh.make_node(op, ["x", "ax"], ["y"])], [onh.from_array(np.array(axes), "ax")]
    m = model(nodes, [vi("x", shape=[3, 1, 4])], [vi("y")], inits, opset=opset)
    want = np.squeeze(x, 1) if op == "Squeeze" else np.expand_dims(x, 1)
    np.testing.assert_array_equal(run(m, {"x": x})["y"], want)


def test_squeeze_opset11_without_axes(rng):
    need("Squeeze")
    x = rng.standard_normal((1, 3, 1)).astype(np.float32)
    m = model([oh.make_node("Squeeze", ["x"], ["y"])], [vi("x", shape=[1, 3, 1])], [vi("y")], opset=11)
    np.testing.assert_array_equal(run(m, {"x": x})["y"], x.reshape(3))


@pytest.mark.parametrize("opset,split", [(11, [2, 4]), (11, None), (13, None), (18, None)])
def test_split(opset, split, rng):
    need("Split")
    x = rng.standard_normal((3, 6)).astype(np.float32)
    kw = {"split": split} if split else {}
    m = model([oh.make_node("Split", ["x"], ["a", "b"], axis=1, **kw)],
              [vi("x", shape=[3, 6])], [vi("a"), vi("b")], opset=opset)
    out = run(m, {"x": x})
    cut = split[0] if split else 3
    np.testing.assert_array_equal(out["a"], x[:, :cut])
    np.testing.assert_array_equal(out["b"], x[:, cut:])


def test_dropout10_ratio_is_dropped(rng):
    need("Dropout")
    x = rng.standard_normal((2, 3)).astype(np.float32)
    m = model([oh.make_node("Dropout", ["x"], ["y"], ratio=0.3)], [vi("x", shape=[2, 3])], [vi("y")],
              opset=11)
    np.testing.assert_array_equal(run(m, {"x": x})["y"], x)


def test_cast_saturate_is_dropped(rng):
    need("Cast")
    x = rng.standard_normal((2, 3)).astype(np.float32)
    m = model([oh.make_node("Cast", ["x"], ["y"], to=TP.FLOAT16, saturate=1)],
              [vi("x", shape=[2, 3])], [vi("y", TP.FLOAT16)], opset=19)
    np.testing.assert_array_equal(run(m, {"x": x})["y"], x.astype(np.float16))


def test_clip_absent_optional_input(rng):
    need("Clip")
    x = rng.standard_normal((2, 5)).astype(np.float32)
    m = model([oh.make_node("Clip", ["x", "", "hi"], ["y"])], [vi("x", shape=[2, 5])], [vi("y")],
              [onh.from_array(np.array(0.25, np.float32), "hi")], opset=13)
    np.testing.assert_array_equal(run(m, {"x": x})["y"], np.minimum(x, 0.25))


def test_constant_of_shape_bfloat16_value():
    need("Shape", "ConstantOfShape", "Cast")
    ml_dtypes = pytest.importorskip("ml_dtypes", reason="bf16 outputs need ml_dtypes")
    v = np.array([1.5], ml_dtypes.bfloat16)
    value = oh.make_tensor("v", TP.BFLOAT16, [1], v.view(np.uint16).tobytes(), raw=True)
    m = model([oh.make_node("Shape", ["x"], ["s"]),
               oh.make_node("ConstantOfShape", ["s"], ["y"], value=value)],
              [vi("x", shape=[2, 3])], [vi("y", TP.BFLOAT16)], opset=21)
    y = run(m, {"x": np.ones((2, 3), np.float32)})["y"]
    assert y.shape == (2, 3)
    assert (np.asarray(y).view(np.uint16) == v.view(np.uint16)[0]).all()


# ---- unsupported ops -------------------------------------------------------------------------

def test_unsupported_ops_are_listed_together():
    m = model([oh.make_node("Foo", ["x"], ["a"], name="f1"),
               oh.make_node("Bar", ["a"], ["b"], name="b1"),
               oh.make_node("Foo", ["b"], ["c"], name="f2"),
               oh.make_node("FusedMatMul", ["c", "c"], ["y"], name="ms", domain="com.microsoft")],
              [vi("x", shape=[2])], [vi("y")])
    m.opset_import.append(oh.make_opsetid("com.microsoft", 1))
    with pytest.raises(UnsupportedOpError) as e:
        import_model(m)
    assert e.value.ops == {"Foo": ["f1", "f2"], "Bar": ["b1"], "com.microsoft:FusedMatMul": ["ms"]}
    msg = str(e.value)
    assert "Foo (2 nodes: f1, f2)" in msg and "Bar (1 node: b1)" in msg
    assert isinstance(e.value, ModelError)


def test_opset_outside_range_is_unsupported(rng):
    m, _, _ = small_model(rng)
    opset = onnx.defs.onnx_opset_version() + 1
    m.opset_import[0].version = opset
    with pytest.raises(UnsupportedOpError) as e:
        import_model(m)
    assert f"Add@opset{opset}" in e.value.ops
    assert "outside the range" in str(e.value)


def test_old_opset_loads_only_reviewed_versions(rng):
    """An opset-10 model loads when each node's since_version is one ember reviewed (Add 7)."""
    m, w, b = small_model(rng)
    m.opset_import[0].version = 10
    x = rng.standard_normal((4, 8)).astype(np.float32)
    np.testing.assert_allclose(ember.Engine(m).run({"x": x})["y"], (x + w) * b, rtol=1e-6)
    soft = model([oh.make_node("Softmax", ["x"], ["y"], name="sm")], [vi("x", shape=[2, 3])], [vi("y")])
    soft.opset_import[0].version = 10   # Softmax-1: a version ember never reviewed
    with pytest.raises(UnsupportedOpError) as e:
        import_model(soft)
    assert "Softmax@opset10" in e.value.ops


def test_op_not_yet_in_opset_and_in_subgraph_and_float8_cast():
    # Unsupported nodes inside If branches are reported with the rest (ember info counts them).
    det = oh.make_node("Det", ["m"], ["d"], name="det_in_branch")
    then = oh.make_graph([det], "t", [], [vi("d")])
    m = model([oh.make_node("Gelu", ["x"], ["a"], name="g"),  # Gelu needs opset 20
               oh.make_node("Cast", ["a"], ["b"], to=TP.FLOAT8E4M3FN, name="c8"),
               oh.make_node("If", ["cond"], ["y"], name="if", then_branch=then,
                            else_branch=oh.make_graph([], "e", [], [vi("m")]))],
              [vi("x", shape=[2]), vi("cond", TP.BOOL, []), vi("m", shape=[2, 2])], [vi("y")],
              opset=18)
    with pytest.raises(UnsupportedOpError) as e:
        import_model(m)
    assert e.value.ops == {"Gelu@opset18": ["g"], "Cast(to=FLOAT8E4M3FN)": ["c8"],
                           "Det": ["det_in_branch"]}
    assert e.value.op_histogram == {"Gelu": 1, "Cast": 1, "If": 1, "Det": 1}


# ---- malformed models ------------------------------------------------------------------------

def test_garbage_bytes():
    for data in [b"\xff" * 64, os.urandom(1000), b"not an onnx model at all", b"\x00"]:
        with pytest.raises(ModelError):
            import_model(data)


def test_empty_missing_and_directory(tmp_path):
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ModelError, match="empty"):
        import_model(empty)
    with pytest.raises(ModelError, match="no such file"):
        import_model(tmp_path / "missing.onnx")
    with pytest.raises(ModelError, match="directory"):
        import_model(str(tmp_path))
    with pytest.raises(ModelError):
        import_model(12345)


def test_truncated_file_never_crashes(tmp_path, rng):
    m, _, _ = small_model(rng)
    data = m.SerializeToString()
    assert len(data) > 200
    path = tmp_path / "cut.onnx"
    for cut in list(range(0, len(data), 3)) + [len(data) - 1]:
        path.write_bytes(data[:cut])
        with pytest.raises(ModelError) as e:
            import_model(path)
        assert str(path) in str(e.value) or "unsupported" in str(e.value)


def test_truncated_graph_loses_outputs_or_nodes(rng):
    """A cut that still parses (dropping trailing nodes) leaves dangling references."""
    m, _, _ = small_model(rng)
    del m.graph.node[1]
    with pytest.raises(ModelError, match="graph output 'y' is never produced"):
        import_model(m)
    m, _, _ = small_model(rng)
    del m.graph.initializer[1]
    with pytest.raises(ModelError, match="node 'mul' .*reads 'b'"):
        import_model(m)


@pytest.mark.parametrize("where", ["initializer", "constant", "typed"])
def test_wrong_size_data(where, rng):
    m, _, _ = small_model(rng)
    if where == "initializer":
        t = m.graph.initializer[0]
        t.raw_data = t.raw_data[:-4]
        name = "initializer 'w'"
    elif where == "typed":
        t = m.graph.initializer[1]
        t.ClearField("raw_data")
        t.float_data.extend([1.0] * 7)
        name = "initializer 'b'"
    else:
        c = onh.from_array(np.ones((2, 2), np.float32))
        c.raw_data = c.raw_data[:8]
        m.graph.node.insert(0, oh.make_node("Constant", [], ["unused"], value=c, name="k"))
        name = "Constant node 'k'"
    with pytest.raises(ModelError) as e:
        import_model(m)
    assert name in str(e.value)


def test_negative_dims_and_unsupported_dtype(rng):
    m, _, _ = small_model(rng)
    m.graph.initializer[1].dims[0] = -8
    with pytest.raises(ModelError, match="negative dims"):
        import_model(m)
    m, _, _ = small_model(rng)
    m.graph.initializer.append(oh.make_tensor("u16", TP.UINT16, [2], [1, 2]))
    with pytest.raises(ModelError, match="'u16' has dtype UINT16"):
        import_model(m)


def test_graph_structure_errors(rng):
    # duplicate producer
    m = model([oh.make_node("Add", ["x", "x"], ["y"], name="a"),
               oh.make_node("Mul", ["x", "x"], ["y"], name="b")], [vi("x", shape=[2])], [vi("y")])
    with pytest.raises(ModelError, match="produced by two nodes"):
        import_model(m)
    # cycle
    m = model([oh.make_node("Add", ["x", "b"], ["a"], name="n1"),
               oh.make_node("Add", ["a", "x"], ["b"], name="n2")], [vi("x", shape=[2])], [vi("a")])
    with pytest.raises(ModelError, match="cycle"):
        import_model(m)
    # unknown attribute, wrong attribute type
    m = model([oh.make_node("Add", ["x", "x"], ["y"], bogus=1)], [vi("x", shape=[2])], [vi("y")])
    with pytest.raises(ModelError, match="unknown attribute 'bogus'"):
        import_model(m)
    m = model([oh.make_node("Softmax", ["x"], ["y"], axis=1.0)], [vi("x", shape=[2])], [vi("y")])
    with pytest.raises(ModelError, match="attribute 'axis' is FLOAT"):
        import_model(m)
    # wrong arity
    m = model([oh.make_node("Add", ["x"], ["y"])], [vi("x", shape=[2])], [vi("y")])
    with pytest.raises(ModelError, match="has 1 inputs"):
        import_model(m)
    # no default-domain opset
    m, _, _ = small_model(rng)
    del m.opset_import[:]
    with pytest.raises(ModelError, match="no opset"):
        import_model(m)


# ---- external data ---------------------------------------------------------------------------

def _save_external(tmp_path, m, name="model.onnx", location="weights.bin"):
    path = tmp_path / name
    onnx.save_model(m, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=location, size_threshold=0)
    return path


def test_external_data_inside_folder_loads(tmp_path, rng):
    m, w, b = small_model(rng)
    path = _save_external(tmp_path, m)
    x = rng.standard_normal((4, 8)).astype(np.float32)
    np.testing.assert_allclose(run(path, {"x": x})["y"], (x + w) * b, rtol=1e-6)
    # A ModelProto or bytes needs base_dir; without it, a clear error.
    proto = onnx.load_model(str(path), load_external_data=False)
    import_model(proto, base_dir=str(tmp_path))
    with pytest.raises(ModelError, match="base_dir"):
        import_model(proto.SerializeToString())


def test_external_data_outside_folder_is_refused(tmp_path, rng):
    outside = tmp_path / "outside"
    inner = tmp_path / "inner"
    outside.mkdir()
    inner.mkdir()
    m, _, _ = small_model(rng)
    _save_external(outside, m)
    secret = outside / "weights.bin"
    for loc in ["../outside/weights.bin", str(secret)]:
        proto = onnx.load_model(str(outside / "model.onnx"), load_external_data=False)
        for t in proto.graph.initializer:
            for e in t.external_data:
                if e.key == "location":
                    e.value = loc
        path = inner / "model.onnx"
        path.write_bytes(proto.SerializeToString())
        with pytest.raises(ModelError, match="initializer 'w'.*(outside|absolute)"):
            import_model(path)
    # a symlink inside the folder that points out of it
    os.symlink(secret, inner / "link.bin")
    for t in proto.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "link.bin"
    path.write_bytes(proto.SerializeToString())
    with pytest.raises(ModelError, match="outside"):
        import_model(path)


def test_external_data_range_checked(tmp_path, rng):
    m, _, _ = small_model(rng)
    path = _save_external(tmp_path, m)
    proto = onnx.load_model(str(path), load_external_data=False)
    for e in proto.graph.initializer[1].external_data:
        if e.key == "offset":
            e.value = str(10**9)
    path.write_bytes(proto.SerializeToString())
    with pytest.raises(ModelError, match="initializer 'b'.*offset"):
        import_model(path)
    (tmp_path / "weights.bin").write_bytes(b"\0" * 16)  # shorter than the tensors
    proto = onnx.load_model(str(_save_external(tmp_path, m, "m2.onnx", "w2.bin")),
                            load_external_data=False)
    (tmp_path / "w2.bin").write_bytes(b"\0" * 16)
    (tmp_path / "m2.onnx").write_bytes(proto.SerializeToString())
    with pytest.raises(ModelError, match="past the end"):
        import_model(tmp_path / "m2.onnx")


def test_only_foreign_domain_nodes_are_unsupported_not_corrupt():
    m = model([oh.make_node("LabelEncoder", ["x"], ["y"], name="le", domain="ai.onnx.ml")],
              [vi("x", shape=[2])], [vi("y")])
    del m.opset_import[:]
    m.opset_import.append(oh.make_opsetid("ai.onnx.ml", 4))
    with pytest.raises(UnsupportedOpError) as e:
        import_model(m)
    assert e.value.ops == {"ai.onnx.ml:LabelEncoder": ["le"]}


def test_huge_dims_and_repeated_names(rng):
    m, _, _ = small_model(rng)
    m.graph.initializer[1].dims[:] = [2**50, 0]
    with pytest.raises(ModelError, match="initializer 'b'.*large dims"):
        import_model(m)
    m, _, _ = small_model(rng)
    m.graph.input.append(vi("x", shape=[4]))
    with pytest.raises(ModelError, match="repeated name 'x'"):
        import_model(m)
    m, _, _ = small_model(rng)
    m.graph.initializer.append(onh.from_array(np.zeros(8, np.float32), "b"))
    with pytest.raises(ModelError, match="two initializers named 'b'"):
        import_model(m)


def test_model_info_from_path(tmp_path, rng):
    m, _, _ = small_model(rng)
    m.producer_name = "exporter"
    path = tmp_path / "m.onnx"
    onnx.save_model(m, str(path))
    _, info = import_model(path)
    assert info.path == str(path) and info.producer_name == "exporter" and info.ir_version == m.ir_version
    assert [(t.name, t.dtype, t.shape) for t in info.outputs] == [("y", "float32", None)]


def test_strings_attribute_reaches_the_op(rng):
    """LSTM's `activations` (a STRINGS attribute) is honoured: Relu as the cell function."""
    H, I, S, B = 4, 3, 5, 2
    W = rng.standard_normal((1, 4 * H, I)).astype(np.float32)
    R = rng.standard_normal((1, 4 * H, H)).astype(np.float32)
    m = model([oh.make_node("LSTM", ["x", "W", "R"], ["Y"], name="lstm", hidden_size=H,
                            activations=["Sigmoid", "Relu", "Tanh"])],
              [vi("x", shape=[S, B, I])], [vi("Y")], [onh.from_array(W, "W"), onh.from_array(R, "R")],
              opset=14)
    x = rng.standard_normal((S, B, I)).astype(np.float32)
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    h = np.zeros((B, H))
    c = np.zeros((B, H))
    want = []
    for t in range(S):
        i, o, f, g = np.split(x[t] @ W[0].T + h @ R[0].T, 4, axis=1)  # ONNX gate order iofc
        c = sig(f) * c + sig(i) * np.maximum(g, 0)
        h = sig(o) * np.tanh(c)
        want.append(h)
    got = ember.Engine(m).run({"x": x})["Y"][:, 0]
    np.testing.assert_allclose(got, np.array(want), rtol=1e-5, atol=1e-6)
