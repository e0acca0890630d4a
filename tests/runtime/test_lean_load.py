"""Lean loading of .onnx files (python/ember/onnx_lean.py): large initializers are read from the
file into ember's tensors without a protobuf copy beside them. The result is the model loaded
from its bytes, bit for bit; the load's peak memory holds the weights about once, not twice;
files whose wire format the lean walk does not take still load (or fail) as before.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T, helper as oh, numpy_helper

import ember
from ember.onnx_lean import SELF, lean_model_bytes


def mlp_model(rng, width, layers, extra_small=True):
    """x [B, width] -> layers x (MatMul W_i, Add b_i, Relu); W_i large, b_i small, plus an If
    whose branch holds its own initializer (a subgraph: left inline)."""
    inits, nodes, x = [], [], "x"
    for i in range(layers):
        inits.append(numpy_helper.from_array(
            (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32), f"w{i}"))
        inits.append(numpy_helper.from_array(rng.standard_normal(width).astype(np.float32), f"b{i}"))
        nodes += [oh.make_node("MatMul", [x, f"w{i}"], [f"m{i}"]),
                  oh.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"]),
                  oh.make_node("Relu", [f"a{i}"], [f"r{i}"])]
        x = f"r{i}"
    if extra_small:
        branch_w = numpy_helper.from_array(rng.standard_normal(width).astype(np.float32), "bw")
        then_g = oh.make_graph([oh.make_node("Mul", [x, "bw"], ["t"])], "then", [],
                               [oh.make_tensor_value_info("t", T.FLOAT, None)], [branch_w])
        else_g = oh.make_graph([oh.make_node("Neg", [x], ["e"])], "else", [],
                               [oh.make_tensor_value_info("e", T.FLOAT, None)])
        inits.append(numpy_helper.from_array(np.array(True), "cond"))
        nodes.append(oh.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g))
    else:
        nodes.append(oh.make_node("Identity", [x], ["y"]))
    g = oh.make_graph(nodes, "g", [oh.make_tensor_value_info("x", T.FLOAT, ["B", width])],
                      [oh.make_tensor_value_info("y", T.FLOAT, None)], initializer=inits)
    return oh.make_model(g, opset_imports=[oh.make_opsetid("", 17)])


def test_a_file_loads_lean_with_the_bits_of_its_bytes(rng, tmp_path):
    model = mlp_model(rng, 96, 3)
    path = tmp_path / "m.onnx"
    data = model.SerializeToString()
    path.write_bytes(data)
    lean = lean_model_bytes(str(path))
    assert lean is not None and len(lean) < len(data) // 4  # the weights stay in the file
    m = onnx.ModelProto()
    m.ParseFromString(lean)
    refs = [t for t in m.graph.initializer if t.data_location == T.EXTERNAL]
    assert {t.name for t in refs} == {"w0", "w1", "w2"}  # small ones stay inline
    assert all({e.key: e.value for e in t.external_data}["location"] == SELF for t in refs)
    x = rng.standard_normal((5, 96)).astype(np.float32)
    got = ember.Engine(str(path)).run({"x": x})["y"]
    want = ember.Engine(data).run({"x": x})["y"]
    assert np.array_equal(got, want)
    assert ember.Engine(str(path)).info.parameter_count == ember.Engine(data).info.parameter_count


def test_the_self_location_is_refused_outside_a_lean_load(rng, tmp_path):
    """Only the lean parse may point a tensor at the model file itself: the same reference in
    model bytes (no file) is a location with a NUL, which the import refuses."""
    path = tmp_path / "m.onnx"
    path.write_bytes(mlp_model(rng, 96, 1, extra_small=False).SerializeToString())
    m = onnx.ModelProto()
    m.ParseFromString(lean_model_bytes(str(path)))
    with pytest.raises(ember.ModelError, match="external data"):
        ember.Engine(m.SerializeToString())
    from ember.onnx_import import import_model
    with pytest.raises(ember.ModelError, match="NUL"):
        import_model(m.SerializeToString(), str(tmp_path))


def test_a_file_changed_under_the_load_is_a_clear_error(rng, tmp_path, monkeypatch):
    path = tmp_path / "m.onnx"
    path.write_bytes(mlp_model(rng, 96, 1, extra_small=False).SerializeToString())
    import ember.onnx_lean as lean_mod
    real = lean_mod.lean_model_bytes

    def lean_then_truncate(p):
        out = real(p)
        with open(p, "r+b") as f:  # the weights' bytes are gone before they are read
            f.truncate(len(out))
        return out
    monkeypatch.setattr(lean_mod, "lean_model_bytes", lean_then_truncate)
    with pytest.raises(ember.ModelError, match="changed while loading"):
        ember.Engine(str(path))


@pytest.mark.parametrize("cut", [1, 7, 100, -1])
def test_truncated_files_fall_back_to_the_whole_parse_and_its_error(rng, tmp_path, cut):
    data = mlp_model(rng, 96, 2).SerializeToString()
    path = tmp_path / "m.onnx"
    path.write_bytes(data[:cut])
    with pytest.raises(ember.ModelError):
        ember.Engine(str(path))


def test_a_file_the_walk_refuses_loads_whole_and_says_so(rng, tmp_path, caplog):
    model = mlp_model(rng, 96, 2, extra_small=False)
    data = model.SerializeToString()
    # An unknown field as an empty group (field 99, start and end): protobuf skips it, the
    # lean walk (which takes no groups) refuses the file.
    path = tmp_path / "m.onnx"
    path.write_bytes(data + bytes([0x9B, 0x06, 0x9C, 0x06]))
    assert lean_model_bytes(str(path)) is None
    x = {"x": rng.standard_normal((3, 96)).astype(np.float32)}
    with caplog.at_level("INFO", logger="ember"):
        got = ember.Engine(str(path)).run(x)["y"]
    assert any("parsed whole, not lean" in r.getMessage() for r in caplog.records)
    np.testing.assert_array_equal(got, ember.Engine(data).run(x)["y"])


def test_peak_memory_holds_the_weights_about_once(rng, tmp_path):
    """A fresh process loading ~128 MB of weights: its peak RSS above the same process without
    the load stays under 1.4x the weights (a whole protobuf parse held them twice)."""
    width, layers = 2048, 8  # 8 x 16 MiB
    path = tmp_path / "big.onnx"
    path.write_bytes(mlp_model(rng, width, layers, extra_small=False).SerializeToString())
    weights = layers * width * width * 4
    code = ("import resource, sys, numpy, ember\n"
            "if sys.argv[1] != '-': ember.Engine(sys.argv[1])\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)\n")
    env = dict(os.environ)

    def peak(arg):
        out = subprocess.run([sys.executable, "-c", code, arg], capture_output=True, text=True,
                             env=env, check=True, timeout=300)
        return int(out.stdout.split()[-1])
    base, loaded = peak("-"), peak(str(path))
    assert loaded - base < 1.4 * weights, (base, loaded, weights)
