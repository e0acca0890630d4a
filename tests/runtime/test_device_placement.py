"""Placement on a second device, without a GPU: the fake device (ember/device.h) holds its
own memory pool and runs the CPU's kernels for the ops it is given. The executor checks that
every step reads and writes only memory on its own side, so a missing copy fails loudly here
exactly where a GPU engine would read garbage. The whole op table also runs on a fake device
holding every op (tests/ops/test_ops.py)."""
from __future__ import annotations

import gc
import logging
import threading

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import ember
from ember import _core

PART = "fake-part"  # MatMul and Relu only: every other node falls back to the CPU
ALL = "fake-every-op"
_core.register_fake_device(PART, ["MatMul", "Relu", "Mul", "Transpose"])
_core.register_fake_device(ALL, _core.op_names(fused=True))


def stats(name=PART):
    return _core.fake_device_stats(name)


def mlp(rng):
    """x [n, 16] -> MatMul W -> Add b -> Relu -> Softmax; outputs y and the Relu output r. b is
    [1, 32], a shape fuse_matmul_epilogue leaves alone, so the Add stays a node of its own (the
    CPU's, on fake-part) between device nodes."""
    w = rng.standard_normal((16, 32)).astype(np.float32)
    b = rng.standard_normal((1, 32)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"),
             helper.make_node("Add", ["h", "b"], ["h2"], name="add"),
             helper.make_node("Relu", ["h2"], ["r"], name="relu"),
             helper.make_node("Softmax", ["r"], ["y"], axis=-1, name="softmax")]
    g = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("r", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


def assert_close_to_cpu(model, feeds, device, rtol=1e-6, atol=1e-6):
    with ember.Engine(model) as cpu, ember.Engine(model, device=device) as dev:
        want = cpu.run(feeds)
        got = dev.run(feeds)
        again = dev.run(feeds)
    assert sorted(got) == sorted(want)
    for k in want:
        assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape, k
        np.testing.assert_allclose(got[k], want[k], rtol=rtol, atol=atol, err_msg=k)
        np.testing.assert_array_equal(again[k], got[k], err_msg=f"{k}: second run")
    return got


def test_mixed_placement_copies_only_at_boundaries(rng, caplog):
    model = mlp(rng)
    x = rng.standard_normal((5, 16)).astype(np.float32)
    with caplog.at_level(logging.WARNING, logger="ember"):
        eng = ember.Engine(model, device=PART)
        before = stats()
        eng.run({"x": x})
        first = stats()
        eng.run({"x": x})
        second = stats()
    # Per run: x and h2 go to the device, h and r come back (r once, for Softmax and the
    # output both); the weight W is uploaded once per engine, not per run.
    assert second["copies_to_device"] - first["copies_to_device"] == 2
    assert second["copies_to_host"] - first["copies_to_host"] == 2
    assert second["bytes_to_device"] - first["bytes_to_device"] == x.nbytes + 5 * 32 * 4
    assert first["bytes_to_device"] - before["bytes_to_device"] == x.nbytes + 5 * 32 * 4 + 16 * 32 * 4
    placed = {n[0]: n[4] for n in eng.plan_info({"x": x})["nodes"]}
    assert placed["mm"] == PART and placed["relu"] == PART
    assert placed["add"] == "cpu" and placed["softmax"] == "cpu"
    copies = sorted(n[0] for n in eng.plan_info({"x": x})["nodes"] if n[1] == "Copy")
    assert copies == [f"copy from {PART}: h", f"copy from {PART}: r", f"copy to {PART}: h2",
                      f"copy to {PART}: x"]
    assert eng.device_fallbacks == [("add", "Add"), ("softmax", "Softmax")]
    warned = [r.getMessage() for r in caplog.records if "run on the CPU" in r.getMessage()]
    assert len(warned) == 1 and "add (Add)" in warned[0] and "softmax (Softmax)" in warned[0]
    eng.close()
    assert_close_to_cpu(model, {"x": x}, PART)


def test_every_node_on_the_device_only_feeds_and_outputs_cross(rng):
    model = mlp(rng)
    x = rng.standard_normal((3, 16)).astype(np.float32)
    with ember.Engine(model, device=ALL) as eng:
        eng.run({"x": x})
        a = stats(ALL)
        eng.run({"x": x})
        b = stats(ALL)
        assert eng.device_fallbacks == []
        assert {n[4] for n in eng.plan_info({"x": x})["nodes"]} == {ALL}
    assert b["copies_to_device"] - a["copies_to_device"] == 1   # x
    assert b["copies_to_host"] - a["copies_to_host"] == 2       # y, r
    assert_close_to_cpu(model, {"x": x}, ALL)


def test_device_memory_is_reused_and_freed(rng):
    model = mlp(rng)
    base = stats(ALL)["live_allocations"]
    eng = ember.Engine(model, device=ALL)
    for n in (2, 7, 2, 7):
        eng.run({"x": rng.standard_normal((n, 16)).astype(np.float32)})
    # one device arena per plan (two shapes) and the two uploaded constants
    assert stats(ALL)["live_allocations"] - base == 4
    eng.close()
    del eng
    gc.collect()
    assert stats(ALL)["live_allocations"] == base


def test_output_that_is_a_feed_or_read_again_on_the_device(rng):
    # x is an output as fed; t = Transpose(x) is an output and is read again by Mul on the device.
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0]),
             helper.make_node("Mul", ["t", "t"], ["m"]),
             helper.make_node("Add", ["m", "t"], ["s"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 3])],
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
                           for n in ("x", "t", "s", "m")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    x = rng.standard_normal((4, 3)).astype(np.float32)
    got = assert_close_to_cpu(model, {"x": x}, PART, rtol=0, atol=0)
    np.testing.assert_array_equal(got["x"], x)


def test_eager_boundary_carries_device_values_through_the_host(rng):
    # Relu runs on the device before NonZero (eager, on the CPU), and Mul after it reads both
    # a value from before the boundary and the eager result's consumer.
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("NonZero", ["r"], ["nz"]),
             helper.make_node("Cast", ["nz"], ["nzf"], to=TensorProto.FLOAT),
             helper.make_node("ReduceSum", ["nzf"], ["cnt"], keepdims=0),
             helper.make_node("Mul", ["r", "cnt"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
                           helper.make_tensor_value_info("r", TensorProto.FLOAT, None)])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    x = rng.standard_normal(6).astype(np.float32)
    for device in (PART, ALL):
        assert_close_to_cpu(model, {"x": x}, device, rtol=0, atol=0)


def test_if_branches_place_their_own_nodes(rng):
    def branch(name, op):
        n = helper.make_node(op, ["x", "x"] if op == "Mul" else ["x"], [f"{name}_y"])
        return helper.make_graph([n], name, [], [helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, None)])
    nodes = [helper.make_node("If", ["c"], ["y"], then_branch=branch("then", "Mul"),
                              else_branch=branch("else", "Relu"))]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("c", TensorProto.BOOL, []),
                                       helper.make_tensor_value_info("x", TensorProto.FLOAT, [5])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    x = rng.standard_normal(5).astype(np.float32)
    for c in (True, False):
        assert_close_to_cpu(model, {"c": np.array(c), "x": x}, PART, rtol=0, atol=0)


def test_concurrent_runs_on_one_device(rng):
    model = mlp(rng)
    feeds = [rng.standard_normal((n, 16)).astype(np.float32) for n in (1, 3, 8, 13)]
    with ember.Engine(model) as cpu:
        want = [cpu.run({"x": x})["y"] for x in feeds]
    eng = ember.Engine(model, device=PART)
    errors = []

    def work(i):
        try:
            for _ in range(20):
                np.testing.assert_allclose(eng.run({"x": feeds[i]})["y"], want[i], rtol=1e-6, atol=1e-7)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(feeds))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    eng.close()
    assert not errors, errors[0]


def test_profile_times_device_steps_and_copies(rng):
    model = mlp(rng)
    x = rng.standard_normal((4, 16)).astype(np.float32)
    with ember.Engine(model, device=PART) as eng:
        prof = eng.profile({"x": x}, runs=3, warmup=1)
    names = [n.name for n in prof.nodes]
    assert "mm" in names and "softmax" in names
    assert f"copy to {PART}: x" in names and f"copy from {PART}: r" in names


@pytest.mark.parametrize("device,match", [
    ("nope", "device must be"), ("gpu", "device must be"), ("cuda:x", "cuda' or 'cuda:N"),
    ("", "device must be"), (3, "device must be")])
def test_bad_device_names(rng, device, match):
    with pytest.raises(ember.EmberError, match=match):
        ember.Engine(mlp(rng), device=device)


def test_cuda_without_a_device_says_why(rng):
    if ember.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(ember.EmberError, match=r"\[cuda\] (this ember was built without|no CUDA device)"):
        ember.Engine(mlp(rng), device="cuda")


def test_precision_and_deterministic_options(rng):
    with pytest.raises(ember.EmberError, match="applies to GPU engines"):
        ember.Engine(mlp(rng), precision="fp16")
    with pytest.raises(ember.EmberError, match="precision must be"):
        ember.Engine(mlp(rng), device=PART, precision="fp8")
    with pytest.raises(ember.EmberError, match="deterministic must be"):
        ember.Engine(mlp(rng), device=PART, deterministic="yes")
    x = rng.standard_normal((2, 16)).astype(np.float32)
    with ember.Engine(mlp(rng), device=PART, precision="bf16", deterministic=True) as eng:
        assert eng.run({"x": x})["y"].shape == (2, 32)


def test_llm_on_a_device_reads_its_file_first(tmp_path):
    """LLMs take a device (tests/e2e/test_llm_device.py runs one); a bad file is still named."""
    path = tmp_path / "m.gguf"
    path.write_bytes(b"GGUF")
    with pytest.raises(ember.ModelError, match="too short for a GGUF header"):
        ember.Engine(str(path), device=PART)


def test_info_shows_placement(rng, tmp_path, capsys):
    from ember import cli
    path = tmp_path / "mlp.onnx"
    path.write_bytes(mlp(rng).SerializeToString())
    assert cli.main(["info", str(path), "--device", PART, "--shape", "x=3x16"]) == 0
    out = capsys.readouterr().out
    assert f"device {PART}" in out and "device arena" in out
    assert f"copy to {PART}: x" in out
    assert "no kernel for them: add (Add), softmax (Softmax)" in out


# ---- device memory in and out (DLPack; on a GPU these are torch / cupy CUDA tensors) ----------

def relu_model(width=32):
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", width])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


@pytest.mark.parametrize("device", [PART, ALL])
def test_device_outputs_stay_on_the_device(rng, device):
    model = mlp(rng)
    x = rng.standard_normal((3, 16)).astype(np.float32)
    with ember.Engine(model) as cpu:
        want = cpu.run({"x": x})
    with ember.Engine(model, device=device) as eng:
        eng.run({"x": x}, device_outputs=True)
        before = stats(device)
        out = eng.run({"x": x}, device_outputs=True)
        after = stats(device)
    for k in want:
        assert out[k].__dlpack_device__() == (1, 0)  # the fake device's memory is host memory
        np.testing.assert_allclose(np.from_dlpack(out[k]), want[k], rtol=1e-6, atol=1e-7)
    # r never comes back to the host: PART copies h and r back for the CPU's Add and Softmax
    # and uploads y (made on the CPU); ALL copies nothing back at all.
    back = after["copies_to_host"] - before["copies_to_host"]
    assert back == (2 if device == PART else 0)


def test_device_feeds_are_read_in_place(rng):
    first, second = mlp(rng), relu_model()
    x = rng.standard_normal((4, 16)).astype(np.float32)
    with ember.Engine(first, device=ALL) as a, ember.Engine(second, device=ALL) as b:
        r = a.run({"x": x}, device_outputs=True)["r"]
        before = stats(ALL)
        y = b.run({"x": np.from_dlpack(r)})["y"]      # a view of device memory: no upload
        after = stats(ALL)
        assert after["copies_to_device"] == before["copies_to_device"]
        np.testing.assert_array_equal(y, np.maximum(np.from_dlpack(r), 0))
    with ember.Engine(relu_model(16), device=ALL) as half:
        with pytest.raises(ember.InputError, match="in device memory and not contiguous"):
            half.run({"x": np.from_dlpack(r)[:, ::2]})
    with ember.Engine(second) as cpu:
        with pytest.raises(ember.InputError, match="needs an engine on a device"):
            cpu.run({"x": rng.standard_normal((2, 32)).astype(np.float32)}, device_outputs=True)


def test_profile_takes_device_feeds(rng):
    """Engine.profile reads device feeds in place, as run does (no upload, same outputs)."""
    with ember.Engine(mlp(rng), device=ALL) as a, ember.Engine(relu_model(), device=ALL) as b:
        r = a.run({"x": rng.standard_normal((4, 16)).astype(np.float32)}, device_outputs=True)["r"]
        before = stats(ALL)
        prof = b.profile({"x": np.from_dlpack(r)}, runs=2, warmup=1)
        after = stats(ALL)
    assert after["copies_to_device"] == before["copies_to_device"]
    assert [n.op for n in prof.nodes if n.kernel not in ("copy_to_device", "copy_to_host")] == ["Relu"]


def test_device_outputs_that_are_feeds_constants_or_repeated(rng):
    c = rng.standard_normal(3).astype(np.float32)
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Identity", ["c"], ["k"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("x", "r", "k")],
                          initializer=[numpy_helper.from_array(c, "c")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    x = rng.standard_normal(3).astype(np.float32)
    for device in (PART, ALL):
        with ember.Engine(model, device=device) as eng:
            out = eng.run({"x": x}, device_outputs=True)
            twice = eng.run({"x": x}, outputs=["r", "r"], device_outputs=True)
        np.testing.assert_array_equal(np.from_dlpack(out["x"]), x)
        np.testing.assert_array_equal(np.from_dlpack(out["r"]), np.maximum(x, 0))
        np.testing.assert_array_equal(np.from_dlpack(out["k"]), c)
        np.testing.assert_array_equal(np.from_dlpack(twice["r"]), np.maximum(x, 0))


def test_device_outputs_across_an_eager_boundary(rng):
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("NonZero", ["r"], ["nz"]),
             helper.make_node("Cast", ["nz"], ["nzf"], to=TensorProto.FLOAT),
             helper.make_node("ReduceSum", ["nzf"], ["cnt"], keepdims=0),
             helper.make_node("Mul", ["r", "cnt"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6])],
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y", "r", "nz")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    x = rng.standard_normal(6).astype(np.float32)
    with ember.Engine(model) as cpu:
        want = cpu.run({"x": x})
    for device in (PART, ALL):
        with ember.Engine(model, device=device) as eng:
            out = eng.run({"x": x}, device_outputs=True)
        for k in want:
            np.testing.assert_array_equal(np.from_dlpack(out[k]), want[k], err_msg=f"{device}: {k}")


def test_constants_repacked_for_a_device_kernel_once_per_engine(rng):
    """A device kernel's prepare (GPU weight layouts) runs once per constant per engine, on
    its own device slot: another reader of the constant still gets it as it is."""
    name = "fake-repack"
    _core.register_fake_device(name, ["MatMul", "Add"], repack_ops=["MatMul"])
    w = rng.standard_normal((16, 16)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Add", ["h", "W"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          initializer=[numpy_helper.from_array(w, "W")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    before = stats(name)
    with ember.Engine(model, device=name) as eng:
        for n in (16, 3, 16, 5):  # three plans
            x = rng.standard_normal((n, 16, 16)).astype(np.float32)
            np.testing.assert_allclose(eng.run({"x": x})["y"], x @ w + w, rtol=1e-5, atol=1e-5)
        after = stats(name)
    assert after["prepared"] - before["prepared"] == 1
    # W goes up twice, once repacked for MatMul and once as it is for Add; then only x per run.
    assert after["bytes_to_device"] - before["bytes_to_device"] == 2 * w.nbytes + 40 * 16 * 16 * 4


@pytest.mark.parametrize("scheme", ["int8", "int4"])
def test_quantized_engine_on_a_device_repacks_its_weights(rng, scheme):
    """Engine(device=..., quantize=...): the integer matmuls run on the device, each of their
    constant inputs repacked once (the GPU kernels' layouts), with the CPU's results."""
    from ember.quantize import QuantConfig
    name = "fake-quant"
    _core.register_fake_device(name, _core.op_names(fused=True), repack_ops=["QMatMul", "Q4MatMul"])
    w = [rng.standard_normal((64, 64)).astype(np.float32) for _ in range(3)]
    nodes, x = [], "x"
    for i in range(3):
        nodes += [helper.make_node("MatMul", [x, f"w{i}"], [f"h{i}"]), helper.make_node("Relu", [f"h{i}"], [f"r{i}"])]
        x = f"r{i}"
    g = helper.make_graph(nodes, "mlp3", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
                          [helper.make_tensor_value_info("r2", TensorProto.FLOAT, None)],
                          initializer=[numpy_helper.from_array(a, f"w{i}") for i, a in enumerate(w)])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    config = QuantConfig(scheme=scheme, quantize_first_last=True, min_weight_elements=0)
    feeds = {"x": rng.standard_normal((5, 64)).astype(np.float32)}
    with ember.Engine(model, quantize=config) as cpu:
        want = cpu.run(feeds)["r2"]
    before = stats(name)["prepared"]
    with ember.Engine(model, quantize=config, device=name) as eng:
        got = eng.run(feeds)["r2"]
        ops = {n[1] for n in eng.plan_info(feeds)["nodes"]}
        assert eng.device_fallbacks == []
    assert ({"QMatMul"} if scheme == "int8" else {"Q4MatMul"}) <= ops
    assert stats(name)["prepared"] - before >= 3
    np.testing.assert_array_equal(got, want)


def test_int8_qkv_read_the_norms_quantized_rows(rng):
    """fuse_norm_quant (device sessions): an AddNorm read by int8 QMatMuls (a BERT block's Q, K
    and V) also writes Y's per-token codes and scales, and the QMatMuls read them (a_mode
    "rows", no quantization of their own): the CPU engine's results exactly, with Y still read
    as floats by the residual Add."""
    from ember.quantize import QuantConfig
    name = "fake-norm-quant"
    _core.register_fake_device(name, _core.op_names(fused=True))
    d = 64
    inits = {"g": (1 + 0.1 * rng.standard_normal(d)).astype(np.float32),
             "b": (0.1 * rng.standard_normal(d)).astype(np.float32)}
    nodes = [helper.make_node("Add", ["x", "r"], ["s"]),
             helper.make_node("LayerNormalization", ["s", "g", "b"], ["y"], axis=-1, name="ln")]
    for w in ("wq", "wk", "wv"):
        inits[w] = (rng.standard_normal((d, d)) / 8).astype(np.float32)
        nodes.append(helper.make_node("MatMul", ["y", w], [w + "_out"], name=w))
    nodes.append(helper.make_node("Add", ["y", "wv_out"], ["res"]))
    g = helper.make_graph(nodes, "qkv", [helper.make_tensor_value_info(v, TensorProto.FLOAT, ["n", d])
                                         for v in ("x", "r")],
                          [helper.make_tensor_value_info(v, TensorProto.FLOAT, None)
                           for v in ("wq_out", "wk_out", "res")],
                          initializer=[numpy_helper.from_array(a, k) for k, a in inits.items()])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    config = QuantConfig(scheme="int8", quantize_first_last=True, min_weight_elements=0)
    feeds = {v: rng.standard_normal((7, d)).astype(np.float32) for v in ("x", "r")}
    with ember.Engine(model, quantize=config) as cpu:
        want = cpu.run(feeds)
    with ember.Engine(model, quantize=config, device=name) as eng:
        got = eng.run(feeds)
        nodes = eng.plan_info(feeds)["nodes"]
        assert eng.device_fallbacks == []
    q = [n for n in nodes if n[1] == "QMatMul"]
    assert len(q) == 3 and any(n[1] == "AddNorm" for n in nodes)
    # int8 codes in: the CPU registry has no fast kernel for them, so the reference runs.
    assert all(n[2] == "reference" for n in q), q
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])
