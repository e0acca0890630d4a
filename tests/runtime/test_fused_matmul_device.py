"""Device sessions fuse MatMul(A, W constant) + Add(bias [N]) and / or Relu / Gelu into a
FusedMatMul whose W stays as it is (attr packed 0, fuse_matmul_epilogue): the device's GEMM
takes the bias in its epilogue. Checked on fake devices (the CPU's kernels behind a device
boundary): the fused node's outputs equal a CPU session's bit for bit, where the device runs
it and where it falls back to the CPU (W packed per call); its reference matches numpy."""
from __future__ import annotations

import math

import numpy as np
import pytest
from onnx import TensorProto as T, helper as oh, numpy_helper

import ember
from ember import _core

ALL = "fake-fused-all"       # every op, fused ones included
MATMUL_ONLY = "fake-fused-mm"  # no FusedMatMul kernel: the fused node runs on the CPU
_core.register_fake_device(ALL, _core.op_names(fused=True))
_core.register_fake_device(MATMUL_ONLY, ["MatMul"])
K, N = 37, 45


def linear(rng, bias=True, act=None, rank=2):
    """x [..., K] -> MatMul W -> [Add b] -> [act]."""
    inits = [numpy_helper.from_array(rng.standard_normal((K, N)).astype(np.float32), "W")]
    nodes = [oh.make_node("MatMul", ["x", "W"], ["h0"], name="mm")]
    y = "h0"
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(N).astype(np.float32), "b"))
        nodes.append(oh.make_node("Add", [y, "b"], ["h1"], name="bias"))
        y = "h1"
    if act:
        nodes.append(oh.make_node(act, [y], ["h2"], name="act"))
        y = "h2"
    nodes.append(oh.make_node("Identity", [y], ["y"], name="out"))
    shape = ["n", K] if rank == 2 else ["b", "n", K]
    g = oh.make_graph(nodes, "linear", [oh.make_tensor_value_info("x", T.FLOAT, shape)],
                      [oh.make_tensor_value_info("y", T.FLOAT, None)], initializer=inits)
    return oh.make_model(g, opset_imports=[oh.make_opsetid("", 20)]).SerializeToString()


def plan(eng, feeds):
    """[(op, kernel, where)] of the plan, without copy steps."""
    return [(op, k, d) for _n, op, k, _i, d in eng.plan_info(feeds)["nodes"] if op != "Copy"]


def numpy_linear(data, x):
    from onnx import load_from_string, numpy_helper as nh
    inits = {t.name: nh.to_array(t) for t in load_from_string(data).graph.initializer}
    return x.astype(np.float64) @ inits["W"] + inits.get("b", 0.0)


@pytest.mark.parametrize("bias,act", [(True, None), (True, "Relu"), (True, "Gelu"), (False, "Relu")])
@pytest.mark.parametrize("rank", [2, 3])
def test_linear_fuses_on_a_device_and_matches_the_cpu(rng, bias, act, rank):
    data = linear(rng, bias, act, rank)
    x = rng.standard_normal((7, K) if rank == 2 else (2, 5, K)).astype(np.float32)
    with ember.Engine(data) as cpu:
        want = cpu.run({"x": x})["y"]
    for device in (ALL, MATMUL_ONLY):
        with ember.Engine(data, device=device) as dev:
            got = dev.run({"x": x})["y"]
            ops = plan(dev, {"x": x})
        assert [op for op, _k, _d in ops if op != "Identity"] == ["FusedMatMul"], ops
        np.testing.assert_array_equal(got, want, err_msg=device)
    h = numpy_linear(data, x)
    if act == "Relu":
        h = np.maximum(h, 0)
    elif act == "Gelu":
        h = 0.5 * h * (1 + np.vectorize(math.erf)(h / math.sqrt(2)))
    np.testing.assert_allclose(want, h, rtol=1e-4, atol=1e-4)


def test_fused_node_falls_back_to_the_cpu_where_the_device_lacks_it(rng):
    data = linear(rng, True, "Relu")
    x = rng.standard_normal((3, K)).astype(np.float32)
    with ember.Engine(data, device=MATMUL_ONLY) as dev:
        dev.run({"x": x})
        ops = plan(dev, {"x": x})
    fused = [(k, d) for op, k, d in ops if op == "FusedMatMul"]
    assert len(fused) == 1 and fused[0][1] == "cpu", ops


def test_matmul_with_nothing_to_absorb_stays(rng):
    data = linear(rng, bias=False, act=None)
    x = rng.standard_normal((3, K)).astype(np.float32)
    with ember.Engine(data, device=ALL) as dev:
        assert [op for op, _k, _d in plan(dev, {"x": x})] == ["MatMul", "Identity"]


def test_cpu_sessions_keep_packed_weights(rng):
    """A CPU session's FusedMatMul carries sgemm panels (fuse_matmul), not W as it is."""
    data = linear(rng, True, "Gelu")
    x = rng.standard_normal((3, K)).astype(np.float32)
    with ember.Engine(data) as cpu:
        ops = plan(cpu, {"x": x})
    assert [op for op, _k, _d in ops if op != "Identity"] == ["FusedMatMul"], ops
