"""precision="bf16" on the CPU: weight matmuls and attention on AVX512_BF16 dot products (fp32
accumulation), norms and softmax in fp32. Where the CPU has AVX512_BF16 the plan names the bf16
kernels and results are close to fp32 but not equal, and do not depend on the batch; with
EMBER_CPU_ISA lowered below it (or on a CPU without it) bf16 sessions run fp32, bit for bit.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import ember
from ember import _core

HAS_BF16 = _core.cpu_isa() == "avx512bf16"
needs_bf16 = pytest.mark.skipif(not HAS_BF16, reason=f"the CPU lacks AVX512_BF16 (cpu_isa "
                                f"{_core.cpu_isa()}): precision='bf16' runs fp32 here")


def encoder_layer(seed=0, d=48, heads=4, ff=100):
    """x [b, s, d] -> Q, K, V projections -> attention (MatMul, Mul, Add mask, Softmax, MatMul)
    -> output projection -> Gelu MLP: the MatMul + Add (+ act) and attention patterns the
    fusion passes turn into FusedMatMul and Attention (odd K: tests/cpp/test_gemm_bf16.cpp)."""
    rng = np.random.default_rng(seed)
    dh = d // heads
    inits = {}

    def w(name, *shape):
        inits[name] = (rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32)
        return name

    nodes = []
    for p in "qkv":
        nodes += [helper.make_node("MatMul", ["x", w(f"W{p}", d, d)], [f"{p}0"]),
                  helper.make_node("Add", [f"{p}0", w(f"b{p}", d)], [f"{p}1"]),
                  helper.make_node("Reshape", [f"{p}1", "heads_shape"], [f"{p}2"])]
    inits["heads_shape"] = np.array([0, 0, heads, dh], np.int64)
    nodes += [helper.make_node("Transpose", ["q2"], ["q3"], perm=[0, 2, 1, 3]),
              helper.make_node("Transpose", ["k2"], ["k3"], perm=[0, 2, 3, 1]),
              helper.make_node("Transpose", ["v2"], ["v3"], perm=[0, 2, 1, 3]),
              helper.make_node("MatMul", ["q3", "k3"], ["s0"]),
              helper.make_node("Mul", ["s0", "scale"], ["s1"]),
              helper.make_node("Add", ["s1", "mask"], ["s2"]),
              helper.make_node("Softmax", ["s2"], ["p"], axis=-1),
              helper.make_node("MatMul", ["p", "v3"], ["c0"]),
              helper.make_node("Transpose", ["c0"], ["c1"], perm=[0, 2, 1, 3]),
              helper.make_node("Reshape", ["c1", "merge_shape"], ["c2"]),
              helper.make_node("MatMul", ["c2", w("Wo", d, d)], ["o0"]),
              helper.make_node("Add", ["o0", w("bo", d)], ["o1"]),
              helper.make_node("MatMul", ["o1", w("W1", d, ff)], ["h0"]),
              helper.make_node("Add", ["h0", w("b1", ff)], ["h1"]),
              helper.make_node("Gelu", ["h1"], ["h2"]),
              helper.make_node("MatMul", ["h2", w("W2", ff, d)], ["y0"]),
              helper.make_node("Add", ["y0", w("b2", d)], ["y"])]
    inits["scale"] = np.array(1 / np.sqrt(dh), np.float32)
    inits["merge_shape"] = np.array([0, 0, d], np.int64)
    g = helper.make_graph(
        nodes, "layer",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "s", d]),
         helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["b", 1, 1, "s"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)])


def feeds(b, s, d=48, seed=1):
    rng = np.random.default_rng(seed)
    mask = np.zeros((b, 1, 1, s), np.float32)
    mask[0, ..., s - 3:] = -1e4  # row 0 padded
    return {"x": rng.standard_normal((b, s, d)).astype(np.float32), "mask": mask}


def kernels(eng, f):
    return {op: k for _, op, k, _, _ in eng.plan_info(f)["nodes"] if op in ("FusedMatMul", "Attention")}


@needs_bf16
def test_bf16_session_runs_bf16_kernels_close_to_fp32():
    model, f = encoder_layer(), feeds(3, 37)
    with ember.Engine(model, threads=2) as e32, ember.Engine(model, threads=2, precision="bf16") as e16:
        assert kernels(e16, f) == {"FusedMatMul": "fused_matmul_bf16_avx512bf16",
                                   "Attention": "attention_bf16_avx512bf16"}
        assert "bf16" not in " ".join(kernels(e32, f).values())
        want, got = e32.run(f)["y"].astype(np.float64), e16.run(f)["y"].astype(np.float64)
    err = np.abs(got - want).max() / np.abs(want).max()
    cos = (got * want).sum(-1) / np.linalg.norm(got, axis=-1) / np.linalg.norm(want, axis=-1)
    print(f"bf16 vs fp32: max err {err:.2e} of max |y|, min cosine {cos.min():.6f}")
    assert 1e-5 < err < 3e-2          # rounded operands: not fp32's numbers, but near them
    assert cos.min() > 0.999


@needs_bf16
def test_bf16_results_do_not_depend_on_the_batch():
    model, f = encoder_layer(), feeds(5, 29)
    with ember.Engine(model, threads=2, precision="bf16") as eng:
        all_rows = eng.run(f)["y"]
        for i in (0, 3):
            one = eng.run({k: v[i:i + 1] for k, v in f.items()})["y"]
            np.testing.assert_array_equal(one[0], all_rows[i])


def test_bf16_below_avx512bf16_runs_fp32_bit_for_bit(tmp_path):
    """EMBER_CPU_ISA=avx512 (no AVX512_BF16): a bf16 session is the fp32 session, with a
    warning that says so."""
    path = tmp_path / "layer.onnx"
    path.write_bytes(encoder_layer().SerializeToString())
    code = (
        "import sys, numpy as np, ember\n"
        "sys.path.insert(0, sys.argv[2])\n"
        "from test_precision_bf16 import feeds, kernels\n"
        "f = feeds(2, 19)\n"
        "a = ember.Engine(sys.argv[1], precision='fp32'); b = ember.Engine(sys.argv[1], precision='bf16')\n"
        "assert kernels(a, f) == kernels(b, f), (kernels(a, f), kernels(b, f))\n"
        "assert 'bf16' not in ' '.join(kernels(b, f).values())\n"
        "np.testing.assert_array_equal(a.run(f)['y'], b.run(f)['y'])\n"
        "print('ok')\n")
    # the child imports the same ember as this process (a source tree or an installed wheel)
    pypath = os.pathsep.join(p for p in (os.path.dirname(os.path.dirname(ember.__file__)),
                                         os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, EMBER_CPU_ISA="avx512", PYTHONPATH=pypath)
    r = subprocess.run([sys.executable, "-c", code, str(path), os.path.dirname(__file__)],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
    assert "has no AVX512_BF16 dot products; the CPU runs fp32" in r.stderr  # said, not silent


def test_fp16_is_refused_on_the_cpu():
    with pytest.raises(ember.EmberError, match="applies to GPU engines"):
        ember.Engine(encoder_layer(), precision="fp16")


def small_cnn(seed=0):
    """x [n, 3, 20, 20] -> Conv 5x5 stride 2 (bias) -> Relu -> Conv 1x1 -> depthwise Conv 3x3
    -> Conv 3x3 stride 1 (Winograd's) -> y: the bf16 convs, and the two that stay fp32."""
    rng = np.random.default_rng(seed)
    inits = {"W1": rng.standard_normal((16, 3, 5, 5)) / 8, "b1": rng.standard_normal(16),
             "W2": rng.standard_normal((24, 16, 1, 1)) / 4, "Wd": rng.standard_normal((24, 1, 3, 3)) / 3,
             "W3": rng.standard_normal((16, 24, 3, 3)) / 14}
    nodes = [helper.make_node("Conv", ["x", "W1", "b1"], ["c1"], strides=[2, 2], pads=[2, 2, 2, 2]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "W2"], ["c2"]),
             helper.make_node("Conv", ["c2", "Wd"], ["c3"], group=24, pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["c3", "W3"], ["y"], pads=[1, 1, 1, 1])]
    g = helper.make_graph(
        nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 20, 20])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


@needs_bf16
def test_bf16_convs_run_bf16_close_to_fp32_batch_invariant():
    model = small_cnn()
    x = np.random.default_rng(3).standard_normal((3, 3, 20, 20)).astype(np.float32)
    with ember.Engine(model, threads=2) as e32, ember.Engine(model, threads=2, precision="bf16") as e16:
        used = sorted(k for _, op, k, _, _ in e16.plan_info({"x": x})["nodes"] if "onv" in op)
        # The 5x5 and 1x1 convs in bf16; the depthwise one and the 3x3 (Winograd) stay fp32.
        assert used.count("conv_bf16_avx512bf16") == 2, used
        assert not any("bf16" in k for _, op, k, _, _ in e32.plan_info({"x": x})["nodes"])
        want, got = e32.run({"x": x})["y"].astype(np.float64), e16.run({"x": x})["y"]
        one = e16.run({"x": x[1:2]})["y"]
    np.testing.assert_array_equal(one[0], got[1])
    err = np.abs(got - want).max() / np.abs(want).max()
    print(f"cnn bf16 vs fp32: max err {err:.2e} of max |y|")
    assert 1e-5 < err < 3e-2
