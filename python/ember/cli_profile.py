"""`ember profile MODEL`: per-node and per-op-type median times, shares, GFLOP/s and GB/s on
sample feeds (as `ember info` makes them), optionally a Chrome trace and a JSON report."""

from __future__ import annotations

import json
import sys


def add_parser(sub):
    p = sub.add_parser("profile", help="time every node: median ms, share, GFLOP/s, GB/s; "
                                       "Chrome trace (--trace)")
    p.add_argument("model", help="path to an .onnx file, or a known model name (minilm-l6)")
    p.add_argument("--shape", action="append", metavar="NAME=DxD",
                   help="concrete shape of an input (repeatable); others take declared dims")
    p.add_argument("--dim", type=int, default=1, help="value for symbolic dims (default 1)")
    p.add_argument("--runs", type=int, default=10, help="timed runs (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs first (default 2)")
    p.add_argument("--threads", type=int, default=None)
    from ember.cli import add_quantize_arg  # cli imports this module: import at call time
    add_quantize_arg(p)
    p.add_argument("--trace", metavar="OUT.json",
                   help="write a Chrome trace (open in ui.perfetto.dev or chrome://tracing)")
    p.add_argument("--json", metavar="OUT.json", help="write the whole profile as JSON")
    p.add_argument("--top", type=int, default=20, metavar="K",
                   help="show the K slowest nodes (default 20; 0 for none)")
    p.set_defaults(fn=cmd_profile)
    return p


def cmd_profile(args):
    from ember import cli
    from ember.engine import Engine
    eng = Engine(args.model, threads=args.threads, quantize=args.quantize)
    feeds = cli._sample_feeds(eng, cli._parse_shapes(args.shape), args.dim)
    shapes = ", ".join(f"{k}={'x'.join(map(str, v.shape)) or 'scalar'}" for k, v in feeds.items())
    print(f"profiling {args.model} ({shapes}): {args.warmup} warmup + {args.runs} runs",
          file=sys.stderr, flush=True)
    prof = eng.profile(feeds, runs=args.runs, warmup=args.warmup)
    print(prof.table(top=args.top))
    if args.trace:
        prof.to_chrome_trace(args.trace)
        print(f"trace: {args.trace} ({prof.runs * len(prof.nodes)} events; open in "
              "ui.perfetto.dev or chrome://tracing)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(prof.as_dict(), f, indent=1)
        print(f"json: {args.json}")
    return 0
