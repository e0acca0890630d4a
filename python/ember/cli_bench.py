"""`ember bench MODEL`: ember against onnxruntime (or itself) on one model, over a shape sweep.

Shapes: for each input, its first symbolic dim takes the --batch value and every later symbolic
dim the --seq value (so [batch, seq] token ids get B x S and [N, 3, H, W] images B x 3 x S x S);
fixed dims stay as declared; --shape NAME=DxD sets an input's whole shape and wins. Each
(--batch, --seq) pair is one case; cases that resolve to the same feeds run once.
Integer inputs get ids in [0, 2), float inputs standard normal values (as `ember info` samples).
"""
from __future__ import annotations

import itertools
import json
import os
import sys

from ember.errors import InputError

QUICK = dict(warmup=1, rounds=2, block=1, pause_ms=5.0)
DEFAULTS = dict(warmup=3, rounds=10, block=None, pause_ms=50.0)


def add_parser(sub):
    import argparse
    p = sub.add_parser(
        "bench", help="time a model on ember vs onnxruntime (or ember itself), interleaved",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Times ember against a rival on one model over a shape sweep. Engines run in\n"
        "interleaved blocks, who goes first alternating each round, each block after a short\n"
        "pause; the table gives medians, spread (half the p10-p90 range, relative to the\n"
        "median), ember time / rival time, and the max abs difference of their outputs.",
        epilog=__doc__.split("\n\n", 1)[1].strip())
    p.add_argument("model", help="path to an .onnx file, or a known model name (minilm-l6)")
    p.add_argument("--batch", type=int, action="append", metavar="B",
                   help="value of each input's first symbolic dim (repeatable: a sweep; default 1)")
    p.add_argument("--seq", type=int, action="append", metavar="S",
                   help="value of each input's later symbolic dims (repeatable; default 128)")
    p.add_argument("--shape", action="append", metavar="NAME=DxD",
                   help="an input's whole shape; overrides --batch/--seq for it (repeatable)")
    from ember.cli import add_quantize_arg  # cli imports this module: import at call time
    add_quantize_arg(p)
    p.add_argument("--threads", type=int, default=None,
                   help="threads for both engines (default: ember's pool size)")
    p.add_argument("--compare", choices=["onnxruntime", "ember", "none"], default="onnxruntime",
                   help="the rival: onnxruntime (CPU EP, defaults but threads), a second ember "
                        "engine (A/A check: the ratio should be 1.0 within noise), or none")
    p.add_argument("--warmup", type=int, default=None, help="untimed runs per engine (default 3)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 10)")
    p.add_argument("--block", type=int, default=None,
                   help="timed runs per engine per round (default: as many as fill ~0.25 s)")
    p.add_argument("--pause-ms", type=float, default=None,
                   help="sleep before each block, so the other engine's spinning workers park "
                        "(default 50)")
    p.add_argument("--quick", action="store_true",
                   help="smoke mode: 1 warm-up, 2 rounds of 1 run, 5 ms pauses (for CI)")
    p.add_argument("--rss", action="store_true",
                   help="also measure each engine's peak RSS in a fresh process (VmHWM)")
    p.add_argument("--json", metavar="OUT.json", help="write every number (and per-run times) here")
    p.add_argument("--plot", metavar="OUT.png", help="bar chart of the medians (needs matplotlib)")
    p.set_defaults(fn=cmd_bench)
    return p


def case_shapes(inputs, batch, seq, overrides):
    """({input name: shape}, most symbolic dims filled in one input) for one (batch, seq) case,
    by the rule in this module's docstring."""
    shapes, used = {}, 0
    for t in inputs:
        if t.name in overrides:
            shapes[t.name] = list(overrides[t.name])
            continue
        if t.shape is None:
            raise InputError(f"[bench] input '{t.name}' has no declared shape; "
                             f"pass --shape {t.name}=DxD")
        shape, n_sym = [], 0
        for d in t.shape:
            if isinstance(d, int) and d >= 0:
                shape.append(d)
            else:
                shape.append(batch if n_sym == 0 else seq)
                n_sym += 1
        shapes[t.name] = shape
        used = max(used, n_sym)
    return shapes, used


def case_label(shapes) -> str:
    """'1x128' when every input has that shape, else 'a=1x8 b=1x4'."""
    dims = {name: "x".join(map(str, s)) or "scalar" for name, s in shapes.items()}
    if len(set(dims.values())) == 1:
        return next(iter(dims.values()))
    return " ".join(f"{k}={v}" for k, v in dims.items())


def _settings(args):
    base = QUICK if args.quick else DEFAULTS
    s = {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in base.items()}
    for k in ("warmup", "rounds", "block"):
        if s[k] is not None and s[k] < (0 if k == "warmup" else 1):
            raise InputError(f"[bench] --{k} must be {'>= 0' if k == 'warmup' else '>= 1'}")
    if s["pause_ms"] < 0:
        raise InputError("[bench] --pause-ms must be >= 0")
    return s


def cmd_bench(args):
    from ember import bench
    from ember.cli import _parse_shapes, _sample_feeds

    settings = _settings(args)
    if args.plot:
        bench.require_matplotlib()              # fail now, not after the runs
    if args.threads is not None and args.threads < 1:
        raise InputError("[bench] --threads must be >= 1")
    if any(v < 1 for v in (args.batch or []) + (args.seq or [])):
        raise InputError("[bench] --batch and --seq values must be >= 1")
    model = args.model
    if not os.path.exists(model):
        from ember import hub
        model = hub.resolve(model)
    threads = args.threads
    if threads is None:
        from ember import _core
        threads = _core.thread_pool_size()
    overrides = _parse_shapes(args.shape)

    runners = [bench.ember_runner(model, threads, quantize=args.quantize)]
    if args.compare == "onnxruntime":
        runners.append(bench.ort_runner(model, threads))
    elif args.compare == "ember":
        runners.append(bench.ember_runner(model, threads, label="ember (B)", quantize=args.quantize))
    ember = runners[0]
    unknown = set(overrides) - {t.name for t in ember.inputs}
    if unknown:
        raise InputError(f"[bench] --shape names unknown inputs {sorted(unknown)}; "
                         f"inputs: {[t.name for t in ember.inputs]}")

    cases, seen = [], set()
    for b, s in itertools.product(args.batch or [1], args.seq or [128]):
        shapes, used = case_shapes(ember.inputs, b, s, overrides)
        key = tuple((k, tuple(v)) for k, v in shapes.items())
        if key not in seen:
            seen.add(key)
            cases.append((b if used >= 1 else None, s if used >= 2 else None, shapes))

    results = []
    for i, (b, s, shapes) in enumerate(cases):
        label = case_label(shapes)
        print(f"[bench] {i + 1}/{len(cases)} {label}: {' vs '.join(r.label for r in runners)}, "
              f"{threads} threads", file=sys.stderr, flush=True)
        feeds = _sample_feeds(ember, shapes, 1)
        row = {"case": label, "batch": b, "seq": s}
        row.update(bench.run_case(runners, feeds, warmup=settings["warmup"],
                                  rounds=settings["rounds"], block=settings["block"],
                                  pause_s=settings["pause_ms"] / 1e3,
                                  rss_model=model if args.rss else None, threads=threads))
        results.append(row)

    for r in runners:
        r.close()
    report = {"model": args.model, "model_path": model, "threads": threads,
              "engines": [r.label for r in runners],
              "settings": {**settings, "quick": args.quick},
              "machine": bench.machine_info(threads), "results": results}
    _print_report(report, args.rss)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
        print(f"wrote {args.json}")
    if args.plot:
        bench.plot_results(results, args.plot,
                           title=f"{args.model}, {threads} threads (median, p10-p90)")
        print(f"wrote {args.plot}")
    return 0


def _print_report(report, rss):
    from ember.bench import fmt_stat, print_table

    labels = report["engines"]
    m = report["machine"]
    s = report["settings"]
    print(f"model {report['model']}  threads {report['threads']}  cpu {m.get('cpu')} "
          f"(ember isa {m.get('ember_isa', '?')})  warmup {s['warmup']} rounds {s['rounds']} "
          f"pause {s['pause_ms']:g} ms")
    headers = ["shape"] + [f"{k} median ±" for k in labels]
    if len(labels) > 1:
        headers += [f"ember/{labels[1]}", "(rounds p10-p90)", "max |diff|"]
    if rss:
        headers += [f"RSS {k} MiB" for k in labels if k != "ember (B)"]
    rows = []
    for r in report["results"]:
        row = [r["case"]] + [fmt_stat(r["engines"][k]) for k in labels]
        if len(labels) > 1:
            rr = r["ratio_rounds"]
            diff = r["max_abs_diff"]
            row += [f"{r['ratio']:.2f}x", f"{rr['p10']:.2f}-{rr['p90']:.2f}",
                    "-" if diff is None else f"{diff:.1e}"]
        if rss:
            row += [f"{v['peak_mib']:.0f}" for v in r["rss"].values()]
        rows.append(row)
    print_table(headers, rows)
    print("median ±: median time per run, ± half the p10-p90 range relative to it; "
          "ember/rival: ratio of medians (< 1: ember faster)")
