"""The first run on a GPU after building (benchmarks/gpu/build.sh): a few one-node models on
Engine(device="cuda") against numpy. A crash here (as in a module pair whose libstdc++ copies
disagree) stops the check before tests and benchmarks spend device time on it.

    PYTHONPATH=python python benchmarks/gpu/smoke.py      exit 0: every model matched
    EMBER_SMOKE_DEVICE=cpu ...                             the same on the CPU (a dry run)
"""
from __future__ import annotations

import os
import sys
import tempfile

import numpy as np
import onnx
from onnx import TensorProto, helper

import ember


def one_node(op: str, shapes: list[list[int]], out_shape: list[int], path: str) -> str:
    names = [chr(ord("A") + i) for i in range(len(shapes))]
    graph = helper.make_graph(
        [helper.make_node(op, names, ["Y"])], "smoke",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in zip(names, shapes)],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, out_shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, path)
    return path


def main() -> int:
    rng = np.random.default_rng()
    device = os.environ.get("EMBER_SMOKE_DEVICE", "cuda")
    print(f"ember {ember.__version__} on {device}; cuda available: {ember.cuda.is_available()}", flush=True)
    cases = [("Add", [[4, 8], [4, 8]], [4, 8], lambda a, b: a + b, 0.0),
             ("MatMul", [[33, 65], [65, 17]], [33, 17], lambda a, b: a @ b, 1e-4),
             ("Relu", [[3, 1000]], [3, 1000], lambda a: np.maximum(a, 0), 0.0)]
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for op, shapes, out_shape, ref, tol in cases:
            path = one_node(op, shapes, out_shape, os.path.join(tmp, op + ".onnx"))
            engine = ember.Engine(path, device=device)
            for attempt in range(2):  # the second run reuses the cached plan
                feeds = {chr(ord("A") + i): rng.standard_normal(s).astype(np.float32)
                         for i, s in enumerate(shapes)}
                got = engine.run(feeds)["Y"]
                want = ref(*feeds.values())
                err = float(np.max(np.abs(got - want))) if got.shape == want.shape else float("inf")
                ok = err <= tol * max(1.0, float(np.max(np.abs(want))))
                failed += not ok
                print(f"{op:7s} run {attempt}: max |error| {err:.3g} {'ok' if ok else 'WRONG'}"
                      f"{'' if not engine.device_fallbacks else f', CPU fallbacks {engine.device_fallbacks}'}",
                      flush=True)
    print("smoke ok" if not failed else f"smoke: {failed} wrong results", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
