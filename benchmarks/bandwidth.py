"""Streaming-read bandwidth of this machine, for the benchmarks' memory-bound floors.

stream_read_gbs(threads, mb) sums an mb-MB float32 array with torch on `threads` threads (numpy,
one thread, where torch is missing: a lower bound for more threads) and returns (GB/s over the
median of 5 sums, a label saying which probe ran).
"""
from __future__ import annotations

import time

import numpy as np


def stream_read_gbs(threads: int, mb: int = 1024):
    n = mb * (1 << 20) // 4
    try:
        import torch
        torch.set_num_threads(threads)
        a = torch.ones(n, dtype=torch.float32)
        fn, label = (lambda: float(a.sum())), f"torch.sum, {threads} threads"
    except ImportError:
        a = np.ones(n, np.float32)
        fn, label = (lambda: float(a.sum())), "numpy.sum, 1 thread"
    fn()
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return n * 4 / float(np.median(times)) / 1e9, label
