"""Zero-copy DLPack feeds and outputs on a GPU engine, with torch and cupy CUDA tensors: results
against the CPU engine, and the ordering of ember's stream against the default stream (a feed
still being written by a queued torch kernel, an output read by the next torch kernel)."""
import numpy as np
import pytest
from onnx import TensorProto as T, helper as oh

import ember

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not ember.cuda.is_available(), reason="no CUDA device")]


def mul_add_model(n):
    """y = a * b + a over [n] floats: one pass, so the run is short beside the feeds' writers."""
    g = oh.make_graph([oh.make_node("Mul", ["a", "b"], ["m"]), oh.make_node("Add", ["m", "a"], ["y"])],
                      "g", [oh.make_tensor_value_info(x, T.FLOAT, [n]) for x in ("a", "b")],
                      [oh.make_tensor_value_info("y", T.FLOAT, [n])])
    return oh.make_model(g, opset_imports=[oh.make_opsetid("", 18)]).SerializeToString()


def slow_fill(torch, x, rounds=200):
    """Overwrites x in place with queued kernels that take a while: x <- sin(x) + 1 repeated,
    every launch on the default stream and none finished when this returns."""
    for _ in range(rounds):
        torch.sin(x, out=x)
        x.add_(1.0)
    return x


def test_torch_feeds_and_outputs(rng):
    torch = pytest.importorskip("torch")
    n = 1 << 24  # 64 MiB per tensor: the fill kernels outlast a launch by far
    model = mul_add_model(n)
    a0 = rng.standard_normal(n).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    with ember.Engine(model, device="cuda") as eng:
        ta = torch.from_numpy(a0).cuda()
        tb = torch.from_numpy(b).cuda()
        torch.cuda.synchronize()
        slow_fill(torch, ta)                  # queued on the default stream, not finished
        out = eng.run({"a": ta, "b": tb}, device_outputs=True)
        ty = torch.from_dlpack(out["y"])
        assert ty.device.type == "cuda" and ty.shape == (n,) and ty.dtype == torch.float32
        z = (ty * 2).cpu().numpy()            # read by the next kernel on the default stream
        a = ta.cpu().numpy()                  # what ember must have read: the filled a
    want = ember.Engine(model).run({"a": a, "b": b})["y"]
    np.testing.assert_allclose(z, 2 * want, rtol=1e-6, atol=1e-6)


def test_torch_feed_is_read_in_place(rng):
    """A device feed is not copied: an engine reading a torch tensor sees the tensor's bytes
    as they are at run time, and numpy feeds give the same result."""
    torch = pytest.importorskip("torch")
    model = mul_add_model(1000)
    a = rng.standard_normal(1000).astype(np.float32)
    b = rng.standard_normal(1000).astype(np.float32)
    with ember.Engine(model, device="cuda") as eng:
        ta, tb = torch.from_numpy(a).cuda(), torch.from_numpy(b).cuda()
        first = eng.run({"a": ta, "b": tb})["y"]
        ta.mul_(-1)
        second = eng.run({"a": ta, "b": tb})["y"]
        host = eng.run({"a": -a, "b": b})["y"]
    np.testing.assert_allclose(first, a * b + a, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(second, host)


def test_cupy_feeds_and_outputs(rng):
    cp = pytest.importorskip("cupy")
    n = 1 << 20
    model = mul_add_model(n)
    a = rng.standard_normal(n).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    with ember.Engine(model, device="cuda") as eng:
        out = eng.run({"a": cp.asarray(a), "b": cp.asarray(b)}, device_outputs=True)
        y = cp.from_dlpack(out["y"])
        got = cp.asnumpy(y + 0)               # a cupy kernel on the default stream reads it
    np.testing.assert_allclose(got, ember.Engine(model).run({"a": a, "b": b})["y"], rtol=1e-6,
                               atol=1e-6)
