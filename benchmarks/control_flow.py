"""Control-flow overhead, ember vs onnxruntime side by side (same process, same threads).

    python benchmarks/control_flow.py --threads 2

- loop: a Loop of M iterations whose body is one small Add (v <- v + 1 on 4 floats): what a
  Loop costs per iteration beyond its body (ember runs the body as a child session).
- nonzero: x [N, 64] -> NonZero(x > 0) -> GatherND -> Mul: a data-dependent shape in the
  middle of a graph (ember runs NonZero eagerly, then a continuation plan; the count differs
  on every run, so the continuation is compiled on almost every run too).

Prints medians of --runs runs and the ember / onnxruntime time ratio.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from onnx import TensorProto as T, helper as oh, numpy_helper


def timed(fn, warmup, runs):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def model(nodes, inputs, outputs, inits=()):
    g = oh.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    return oh.make_model(g, opset_imports=[oh.make_opsetid("", 18)]).SerializeToString()


def loop_model():
    vi = oh.make_tensor_value_info
    body = oh.make_graph(
        [oh.make_node("Add", ["v_in", "one"], ["v_out"]), oh.make_node("Identity", ["c_in"], ["c_out"])],
        "body", [vi("i", T.INT64, []), vi("c_in", T.BOOL, []), vi("v_in", T.FLOAT, [4])],
        [vi("c_out", T.BOOL, []), vi("v_out", T.FLOAT, [4])])
    return model([oh.make_node("Loop", ["m", "", "v"], ["vf"], body=body)],
                 [vi("m", T.INT64, []), vi("v", T.FLOAT, [4])], [vi("vf", T.FLOAT, [4])],
                 [numpy_helper.from_array(np.ones(1, np.float32), "one")])


def nonzero_model():
    vi = oh.make_tensor_value_info
    nodes = [oh.make_node("Greater", ["x", "zero"], ["pos"]), oh.make_node("NonZero", ["pos"], ["nz"]),
             oh.make_node("Transpose", ["nz"], ["idx"], perm=[1, 0]),
             oh.make_node("GatherND", ["x", "idx"], ["vals"]), oh.make_node("Mul", ["vals", "two"], ["y"])]
    return model(nodes, [vi("x", T.FLOAT, ["N", 64])], [vi("y", T.FLOAT, None)],
                 [numpy_helper.from_array(np.float32(0), "zero"),
                  numpy_helper.from_array(np.float32(2), "two")])


def main():
    import onnxruntime as ort

    import ember

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=15)
    args = p.parse_args()
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    rng = np.random.default_rng(0)
    cases = [("loop", loop_model(), lambda m: {"m": np.array(m), "v": np.zeros(4, np.float32)},
              [100, 10000]),
             ("nonzero", nonzero_model(),
              lambda n: {"x": rng.standard_normal((n, 64)).astype(np.float32)}, [16, 1024])]
    print(f"{'case':<10} {'size':>7} {'ember':>11} {'onnxruntime':>12} {'ember/ORT':>10}")
    for name, data, feeds_for, sizes in cases:
        eng = ember.Engine(data, threads=args.threads)
        sess = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
        for size in sizes:
            feeds = feeds_for(size)
            want = sess.run(None, feeds)[0]
            np.testing.assert_allclose(next(iter(eng.run(feeds).values())), want, rtol=1e-6)
            t_e = timed(lambda: eng.run(feeds_for(size)), 3, args.runs)
            t_o = timed(lambda: sess.run(None, feeds_for(size)), 3, args.runs)
            unit = f"{t_e / size * 1e6:.2f} us/iter" if name == "loop" else f"{t_e * 1e6:.0f} us"
            print(f"{name:<10} {size:>7} {t_e * 1e3:>9.3f}ms {t_o * 1e3:>10.3f}ms {t_e / t_o:>9.2f}x"
                  f"   ({unit})")


if __name__ == "__main__":
    main()
