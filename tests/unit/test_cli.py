"""`ember info` and `ember run` as a user calls them: a subprocess per command."""

import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


def ember_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "ember", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


@pytest.fixture
def model_path(tmp_path, rng):
    w = rng.standard_normal((8, 4)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
         helper.make_node("Relu", ["h"], ["y"], name="relu")],
        "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(w, "w")])
    path = tmp_path / "tiny.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path, w


def test_info_describes_the_model(model_path):
    path, _ = model_path
    r = ember_cli("info", str(path), "--shape", "x=3x8")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "x" in out and "float32" in out and "[batch, 8]" in out
    assert "parameters: 32" in out
    assert "MatMul" in out and "Relu" in out  # the ONNX histogram, before passes
    assert "peak arena:" in out
    # per-node kernel and ISA, after passes: MatMul + Relu run as one fused node
    assert "mm" in out and "FusedMatMul" in out and "fused_matmul_f32" in out


def test_run_writes_outputs(model_path, tmp_path, rng):
    path, w = model_path
    x = rng.standard_normal((5, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out_dir = tmp_path / "out"
    r = ember_cli("run", str(path), "--input", f"x={tmp_path / 'x.npy'}", "--output-dir", str(out_dir))
    assert r.returncode == 0, r.stderr
    np.testing.assert_allclose(np.load(out_dir / "y.npy"), np.maximum(x @ w, 0), rtol=1e-5, atol=1e-6)


def test_errors_exit_2_with_a_message(model_path, tmp_path):
    path, _ = model_path
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(os.urandom(300))
    r = ember_cli("info", str(garbage))
    assert r.returncode == 2 and "ModelError" in r.stderr and "garbage.onnx" in r.stderr
    np.save(tmp_path / "bad.npy", np.zeros((2, 3), np.float32))
    r = ember_cli("run", str(path), "--input", f"x={tmp_path / 'bad.npy'}")
    assert r.returncode == 2 and "InputError" in r.stderr and "'x'" in r.stderr
    r = ember_cli("run", str(path), "--input", "x=/nonexistent.npy")
    assert r.returncode == 2 and "nonexistent.npy" in r.stderr


def test_help():
    r = ember_cli("--help")
    assert r.returncode == 0 and "info" in r.stdout and "run" in r.stdout


@pytest.mark.slow
def test_readme_main_job(tmp_path):
    """The README's first command after `pip install .`: info and run on the default model."""
    r = ember_cli("info", "minilm-l6")
    assert r.returncode == 0, r.stderr
    assert "input_ids" in r.stdout and "sentence_embedding" in r.stdout and "parameters: 22," in r.stdout
    r = ember_cli("run", "minilm-l6", "--sample", "--output", "sentence_embedding",
                  "--output-dir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    emb = np.load(tmp_path / "sentence_embedding.npy")
    assert emb.shape == (8, 384)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)  # normalised


def test_info_lists_unsupported_ops_without_failing(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["a"], name="r"),
         helper.make_node("FancyOp", ["a"], ["b"], name="f1"),
         helper.make_node("FancyOp", ["b"], ["c"], name="f2"),
         helper.make_node("OtherOp", ["c"], ["y"], name="o1")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    r = ember_cli("info", str(path))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert any(l.split()[:3] == ["FancyOp", "2", "UNSUPPORTED"] for l in lines), r.stdout
    assert any(l.split()[:2] == ["Relu", "1"] and "UNSUPPORTED" not in l for l in lines), r.stdout
    assert "unsupported: 2 op types, 3 nodes (of 4)" in r.stdout


def test_quantize_flag_on_info_and_run(tmp_path, rng):
    # Three 64 x 64 layers: the first and last stay float by default, the middle one is int8.
    ws = [(rng.standard_normal((64, 64)) / 8).astype(np.float32) for _ in range(3)]
    nodes = [helper.make_node("MatMul", [f"h{i}", f"w{i}"], [f"h{i + 1}"], name=f"mm{i}") for i in range(3)]
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("h0", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("h3", TensorProto.FLOAT, ["batch", 64])],
        [numpy_helper.from_array(w, f"w{i}") for i, w in enumerate(ws)])
    path = tmp_path / "mlp.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    r = ember_cli("info", str(path), "--shape", "h0=2x64", "--quantize", "int8")
    assert r.returncode == 0, r.stderr
    assert "QMatMul" in r.stdout and "qmatmul_i8" in r.stdout
    x = rng.standard_normal((3, 64)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    r = ember_cli("run", str(path), "--input", f"h0={tmp_path / 'x.npy'}", "--output-dir",
                  str(tmp_path / "out"), "--quantize", "int8")
    assert r.returncode == 0, r.stderr
    want = x @ ws[0] @ ws[1] @ ws[2]
    got = np.load(tmp_path / "out" / "h3.npy")
    assert np.abs(got - want).max() < 0.02 * np.abs(want).max()
    assert ember_cli("run", str(path), "--sample", "--quantize", "int3").returncode == 2
