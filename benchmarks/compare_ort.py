"""ember vs onnxruntime on one model, side by side in one process, same thread count.

    python benchmarks/compare_ort.py minilm-l6 --shape input_ids=8x128 --threads 2

Feeds are random but valid (ids in [0, 2) for integer inputs, as `ember info` samples them;
pass --shape for every symbolic input). Prints median and spread of each, the ratio, and the
max abs difference between the two outputs.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def timed(fn, warmup, runs):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def main():
    import onnxruntime as ort

    import ember
    from ember import hub
    from ember.cli import _parse_shapes, _sample_feeds

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("--shape", action="append", metavar="NAME=DxD")
    p.add_argument("--dim", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--runs", type=int, default=20)
    args = p.parse_args()

    import os
    path = args.model if os.path.exists(args.model) else hub.resolve(args.model)
    eng = ember.Engine(path, threads=args.threads)
    feeds = _sample_feeds(eng, _parse_shapes(args.shape), args.dim)

    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    ort_feeds = {i.name: feeds[i.name] for i in sess.get_inputs()}

    ours = eng.run(feeds)
    theirs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, ort_feeds)))
    diff = max(float(np.max(np.abs(ours[k].astype(np.float64) - theirs[k]))) for k in theirs if k in ours)

    t_ember = timed(lambda: eng.run(feeds), args.warmup, args.runs)
    t_ort = timed(lambda: sess.run(None, ort_feeds), args.warmup, args.runs)
    m_e, m_o = statistics.median(t_ember), statistics.median(t_ort)
    shapes = ", ".join(f"{k}={'x'.join(map(str, v.shape))}" for k, v in feeds.items())
    print(f"model {args.model}  feeds {shapes}  threads {args.threads}  runs {args.runs}")
    print(f"  ember        median {m_e * 1e3:9.2f} ms  (min {min(t_ember) * 1e3:.2f}, max {max(t_ember) * 1e3:.2f})")
    print(f"  onnxruntime  median {m_o * 1e3:9.2f} ms  (min {min(t_ort) * 1e3:.2f}, max {max(t_ort) * 1e3:.2f})")
    print(f"  ember / onnxruntime time ratio: {m_e / m_o:.2f}x   max |diff| {diff:.2e}")


if __name__ == "__main__":
    main()
