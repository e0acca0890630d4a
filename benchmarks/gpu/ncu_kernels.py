"""Runs the kernels that missed their H200 targets a few times each, for Nsight Compute (ncu) to
profile: the int4 GEMV (Q4MatMul 4096 x 4096, M = 1, group 32 as ember.quantize writes it), SDPA
8 x 12 x 512 x 64 at fp16 (the mma.sync or, with EMBER_CUDA_ATTN_KERNEL=wmma, the wmma kernel)
and Add + RMSNorm on 16384 x 4096 fp32. ncu_kernels.sh wraps it in ncu; alone it only runs them.
    PYTHONPATH=python python benchmarks/gpu/ncu_kernels.py [--case q4|sdpa|rms] [--device cuda]
        [--runs 3]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_cuda as bc  # noqa: E402  (the models)


def cases(rng, tmp):
    """[(case, what, model or path, feeds, precision)]."""
    import ember
    from onnx import helper
    k = n = 4096
    w = (rng.standard_normal((k, n), dtype=np.float32) * 0.02)
    mm = bc.onnx_model([helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")], [("x", ["M", k])],
                       ["y"], [("W", w)], opset=21)
    q4 = os.path.join(tmp, "q4.onnx")
    ember.quantize(mm, q4, config=ember.QuantConfig(scheme="int4", quantize_first_last=True,
                                                    min_weight_elements=0))
    b, h, s, d = 8, 12, 512, 64
    sdpa_feeds = {"q": rng.standard_normal((b, h, s, d), dtype=np.float32),
                  "kt": rng.standard_normal((b, h, d, s), dtype=np.float32),
                  "v": rng.standard_normal((b, h, s, d), dtype=np.float32)}
    shape = [16384, 4096]
    rms = bc.rms_residual_model(shape, rng.standard_normal(shape[1], dtype=np.float32))
    return [("q4", "GEMV 4096x4096 M=1", q4, {"x": rng.standard_normal((1, k), dtype=np.float32)}, "fp16"),
            ("sdpa", "SDPA 8x12x512x64 fp16", bc.sdpa_model(b, h, s, d), sdpa_feeds, "fp16"),
            ("rms", "Add + RMSNorm 16384x4096", rms, {"x": rng.standard_normal(shape, dtype=np.float32),
                                               "r": rng.standard_normal(shape, dtype=np.float32)},
             "fp32")]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--case", action="append", choices=["q4", "sdpa", "rms"],
                    help="repeatable; default all")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args(argv)
    import ember
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        for case, name, model, feeds, precision in cases(rng, tmp):
            if args.case and case not in args.case:
                continue
            eng = ember.Engine(model, device=args.device,
                               precision=precision if args.device == "cuda" else "fp32")
            kernels = sorted({k for _n, _op, k, _i, _d in eng.plan_info(feeds)["nodes"]})
            for _ in range(args.runs):
                eng.run(feeds)
            print(f"{name}: {args.runs} runs, kernels {', '.join(kernels)}", flush=True)
            eng.close()


if __name__ == "__main__":
    main()
