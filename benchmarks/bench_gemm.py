"""fp32 GEMM: ember MatMul vs numpy (OpenBLAS) and torch, same threads, interleaved.

    PYTHONPATH=python python benchmarks/bench_gemm.py --threads 2 [--json out.json] [--plot out.png]

C[M,N] = A[M,K] @ B[K,N] for each shape MxKxN. ember runs a one-node ONNX MatMul two ways:
"ember" with B as an initializer (the weights case: ember may pre-pack it at load) and
"ember B fed" with B as a graph input. numpy's BLAS is held to --threads by setting
OPENBLAS_NUM_THREADS / OMP_NUM_THREADS / MKL_NUM_THREADS before numpy is imported (and by
threadpoolctl when installed); torch by torch.set_num_threads. Engines alternate in blocks with
a pause before each (OpenBLAS workers spin up to ~0.1 s after a call), as in ember.bench.compare.

Prints median time, GFLOP/s (2*M*K*N / median) and its share of the peak: --peak-gflops, else
threads x FLOP/cycle x GHz, with FLOP/cycle from ember's ISA (avx512 64, avx2 32 = 2 FMA pipes
x 8 lanes x 2, neon 16, else 8) and GHz from /proc/cpuinfo "cpu MHz" (the base clock a VM
reports; boost may be higher). The line printed says which numbers it used.
"""
from __future__ import annotations

import argparse
import os
import sys

SHAPES = [(2048, 2048, 2048), (128, 384, 384), (128, 384, 1536), (1, 384, 384),
          (32 * 128, 384, 1536)]
QUICK_SHAPES = [(1, 384, 384), (128, 384, 384), (256, 256, 256)]
FLOPS_PER_CYCLE = {"avx512": 64, "avx512bf16": 64, "avx2": 32, "neon": 16}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--shape", action="append", metavar="MxKxN", help="shapes to run (repeatable)")
    p.add_argument("--quick", action="store_true", help="smoke mode: small shapes, 2 rounds")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--pause-ms", type=float, default=150.0,
                   help="sleep before each block (default 150: longer than OpenBLAS's spin)")
    p.add_argument("--peak-gflops", type=float, default=None, help="the machine's fp32 peak")
    p.add_argument("--flops-per-cycle", type=float, default=None,
                   help="per core, for the peak estimate (default from ember's ISA)")
    p.add_argument("--no-torch", action="store_true", help="skip torch even when installed")
    p.add_argument("--json", metavar="OUT.json")
    p.add_argument("--plot", metavar="OUT.png", help="GFLOP/s bar chart (needs matplotlib)")
    return p.parse_args(argv)


def cpu_mhz():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("cpu MHz"):
                    return float(line.split(":", 1)[1])
    except (OSError, ValueError):
        pass
    return None


def peak(args, isa):
    """(GFLOP/s, how it was obtained)."""
    if args.peak_gflops:
        return args.peak_gflops, "--peak-gflops"
    fpc = args.flops_per_cycle or FLOPS_PER_CYCLE.get(isa, 8)
    fpc_src = "--flops-per-cycle" if args.flops_per_cycle else f"ember isa {isa}"
    mhz = cpu_mhz()
    if mhz is None:
        return None, "unknown: no 'cpu MHz' in /proc/cpuinfo; pass --peak-gflops"
    value = args.threads * fpc * mhz / 1e3
    return value, (f"{args.threads} threads x {fpc:g} FLOP/cycle ({fpc_src}) x {mhz / 1e3:.3f} GHz "
                   "(/proc/cpuinfo 'cpu MHz')")


def matmul_model(m, k, n, b=None):
    """One MatMul node: A [M, K] input; B [K, N] an initializer when given, else an input."""
    from onnx import TensorProto, helper, numpy_helper
    vi = helper.make_tensor_value_info
    inputs = [vi("A", TensorProto.FLOAT, [m, k])]
    inits = []
    if b is None:
        inputs.append(vi("B", TensorProto.FLOAT, [k, n]))
    else:
        inits.append(numpy_helper.from_array(b, "B"))
    graph = helper.make_graph([helper.make_node("MatMul", ["A", "B"], ["C"], name="mm")], "gemm",
                              inputs, [vi("C", TensorProto.FLOAT, [m, n])], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def main(argv=None):
    args = parse_args(argv)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)          # before numpy (and torch) load their BLAS
    import json

    import numpy as np

    import ember
    from ember import _core, bench

    blas = "numpy BLAS threads: OPENBLAS_NUM_THREADS"
    try:
        from threadpoolctl import threadpool_info, threadpool_limits
        threadpool_limits(args.threads, user_api="blas")
        pools = [f"{p['internal_api']} {p['num_threads']}" for p in threadpool_info()
                 if p.get("user_api") == "blas"]
        blas = "numpy BLAS threads (threadpoolctl): " + (", ".join(pools) or "none found")
    except ImportError:
        pass
    if args.plot:
        bench.require_matplotlib()
    torch = None
    if not args.no_torch:
        try:
            import torch
            torch.set_num_threads(args.threads)
        except ImportError:
            torch = None

    if args.shape:
        shapes = [tuple(int(x) for x in s.lower().split("x")) for s in args.shape]
    else:
        shapes = QUICK_SHAPES if args.quick else SHAPES
    warmup, rounds = (1, 2) if args.quick else (args.warmup, args.rounds)
    pause = args.pause_ms / 1e3               # kept in --quick: torch's and OpenBLAS's spin
    peak_gflops, how = peak(args, _core.cpu_isa())
    print(f"threads {args.threads}; {blas}; torch {torch.__version__ if torch else 'skipped'}")
    print(f"peak {peak_gflops:.0f} GFLOP/s = {how}" if peak_gflops else f"peak {how}")

    rng = np.random.default_rng(0)
    rows = []
    for m, k, n in shapes:
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        eng_w = ember.Engine(matmul_model(m, k, n, b), threads=args.threads)
        eng_fed = ember.Engine(matmul_model(m, k, n), threads=args.threads)
        engines = {"numpy": lambda f: np.matmul(f["A"], f["B"]),
                   "ember": lambda f: eng_w.run({"A": f["A"]}),
                   "ember B fed": lambda f: eng_fed.run(f)}
        if torch is not None:
            ta, tb = torch.from_numpy(a), torch.from_numpy(b)
            engines["torch"] = lambda f: torch.matmul(ta, tb)
        feeds = {"A": a, "B": b}
        ref = np.matmul(a, b)
        scale = float(np.abs(ref).max())
        err = {"ember": float(np.abs(eng_w.run({"A": a})["C"] - ref).max()) / scale,
               "ember B fed": float(np.abs(eng_fed.run(feeds)["C"] - ref).max()) / scale}
        case = f"{m}x{k}x{n}"
        print(f"[gemm] {case} ...", file=sys.stderr, flush=True)
        res = bench.compare(engines, feeds, warmup=warmup, rounds=rounds, pause_s=pause)
        flop = 2.0 * m * k * n
        rows.append({"case": case, "m": m, "k": k, "n": n, "flop": flop, "engines": res["engines"],
                     "ratio_to_numpy": res["ratio"], "rel_err_vs_numpy": err,
                     "gflops": {lb: flop / st["median_s"] / 1e9 for lb, st in res["engines"].items()}})
        eng_w.close()
        eng_fed.close()

    labels = list(rows[0]["engines"])
    pk = f" (% of {peak_gflops:.0f})" if peak_gflops else ""
    headers = ["M x K x N"] + [f"{lb} GFLOP/s{pk}" for lb in labels] + \
              ["ember/numpy time", "ember median ±", "rel err"]
    table = []
    for r in rows:
        g = r["gflops"]
        table.append([r["case"]]
                     + [f"{g[lb]:.1f}" + (f" ({100 * g[lb] / peak_gflops:.0f}%)" if peak_gflops else "")
                        for lb in labels]
                     + [f"{r['ratio_to_numpy']['ember']:.2f}x", bench.fmt_stat(r["engines"]["ember"]),
                        f"{max(r['rel_err_vs_numpy'].values()):.1e}"])
    bench.print_table(headers, table)
    print("ember: B an initializer (weights); ember B fed: B a graph input; rel err: "
          "max |ember - numpy| / max |numpy|")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": args.threads, "peak_gflops": peak_gflops, "peak_source": how,
                       "blas": blas, "machine": bench.machine_info(args.threads),
                       "settings": {"warmup": warmup, "rounds": rounds, "pause_s": pause},
                       "results": rows}, f, indent=1)
        print(f"wrote {args.json}")
    if args.plot:
        bench.plot_results(rows, args.plot, unit="GFLOP/s",
                           title=f"fp32 GEMM, {args.threads} threads (peak {peak_gflops or 0:.0f})")
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
