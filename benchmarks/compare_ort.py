"""ember vs onnxruntime on one model, side by side in one process, same thread count.

    python benchmarks/compare_ort.py minilm-l6 --shape input_ids=8x128 --threads 2

A thin wrapper over `ember bench MODEL --compare onnxruntime` (ember/bench.py), kept so the
commands recorded in RESULTS.md still run: --runs N becomes N interleaved rounds of one run
each, --dim the value of symbolic dims that no --shape sets. Prefer `ember bench` directly.
"""

from __future__ import annotations

import argparse
import sys


def main():
    from ember.cli import main as ember_main

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("--shape", action="append", metavar="NAME=DxD")
    p.add_argument("--dim", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--runs", type=int, default=20)
    args = p.parse_args()
    argv = ["bench", args.model, "--compare", "onnxruntime", "--threads", str(args.threads),
            "--warmup", str(args.warmup), "--rounds", str(args.runs), "--block", "1",
            "--batch", str(args.dim), "--seq", str(args.dim)]
    for s in args.shape or []:
        argv += ["--shape", s]
    return ember_main(argv)


if __name__ == "__main__":
    sys.exit(main())
