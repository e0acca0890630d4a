"""Quantized GEMV / GEMM on one GPU: ember's W8A8 QMatMul and W4A16 Q4MatMul against torch fp16
matmul and torch._int_mm, over Llama-3-8B projection shapes.

    PYTHONPATH=python python benchmarks/gpu/bench_quant_cuda.py [--json out.json] [--time-limit 300]
    PYTHONPATH=python python benchmarks/gpu/bench_quant_cuda.py --dry-run      # tiny, on the CPU

Shapes (N x K, weight [K, N]): 4096x4096 (q/o proj), 14336x4096 (gate/up), 4096x14336 (down);
M = 1, 16, 4096 rows. Weights are rotated across R copies whose bytes exceed twice the L2
(--l2-mb, 60 MB), so every call streams its weight from HBM as in a real decode step.
- torch: R fp16 matmuls (or R torch._int_mm on int8, M > 16 where torch requires it) captured
  in one CUDA graph; µs = replay time / R (CUDA events, median). _int_mm gets its int8 A for
  free (no activation quantization), fp16 its fp16 A.
- ember: one model with R MatMul nodes on the same input, quantized by ember.quantize (int8:
  per-token dynamic W8A8 -> QMatMul; int4: MatMulNBits -> Q4MatMul; at M <= 16 also "int4
  stream", the opt-in stream kernel); µs = sum of the R nodes' Engine.profile medians / R
  (bench_cuda.py's timing: CUDA events around each node's launches, activation quantization
  and the split-K reduction included; before 2026-11-29's fourth
  session, host time up to a synchronize). A row whose nodes fell back to the CPU
  is refused (n/a, listed).
Reported: µs, GB/s (weight + A + Y bytes / time; weight bytes at the row's storage width),
TOPS (2 M N K / time), bw% (of the copy bandwidth measured in the same run: torch clone of
1 GiB) and ops% (of the best int8 TOPS torch._int_mm reached in this run).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
import traceback

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_cuda as bc  # noqa: E402  (shared: Ctx, torch_ms, ember_time, onnx_model)

SIZES = {
    "gpu": dict(shapes=[(4096, 4096), (14336, 4096), (4096, 14336)], ms=[1, 16, 4096],
                copy_elems=bc.GIB // 4, runs=20, warmup=3, max_rot=8),
    "dry": dict(shapes=[(64, 64), (96, 32), (32, 96)], ms=[1, 4, 32], copy_elems=1 << 20,
                runs=3, warmup=1, max_rot=2),
}


class Ctx(bc.Ctx):
    def __init__(self, args):
        super().__init__(args)
        self.sz = dict(bc.SIZES["dry" if self.dry else "gpu"], **SIZES["dry" if self.dry else "gpu"])


def rotations(weight_bytes, l2_bytes, max_rot):
    """Copies of a weight whose total exceeds 2 x L2 (at least 2, at most max_rot)."""
    return max(2, min(max_rot, math.ceil(2 * l2_bytes / max(weight_bytes, 1))))


def graph_ms(ctx, fns, runs, warmup):
    """Median ms per call of fns run back to back: a CUDA graph of all of them on the GPU
    (replay time / len(fns)), a plain loop on the CPU."""
    torch = ctx.torch
    if not ctx.cuda:
        return bc.torch_ms(ctx, lambda: [f() for f in fns], runs, warmup) / len(fns)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s), torch.inference_mode():
        for f in fns:            # warm-up outside capture (cuBLAS workspaces, heuristics)
            f()
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.inference_mode(), torch.cuda.graph(g):
        for f in fns:
            f()
    return bc.torch_ms(ctx, g.replay, runs, warmup) / len(fns)


def rot_model(ctx, k, n, r):
    """R MatMul nodes x @ W_i, W_i fp32 [k, n]: one graph input, R outputs."""
    from onnx import helper
    inits = [(f"W{i}", (ctx.rng.standard_normal((k, n), dtype=np.float32) * 0.02)) for i in range(r)]
    nodes = [helper.make_node("MatMul", ["x", f"W{i}"], [f"y{i}"], name=f"mm{i}") for i in range(r)]
    return bc.onnx_model(nodes, [("x", ["M", k])], [f"y{i}" for i in range(r)], inits, opset=21)


def quantized(ctx, model, scheme, path, r=1):
    """ember.quantize of `model` (one MatMul x @ W0) into `path`; with r > 1 the quantized
    graph is then repeated r times on the same input, every initializer copied (distinct memory
    for the rotation, no second quantization: that took 13-32 s a shape on the device)."""
    cfg = ctx.ember.QuantConfig(scheme=scheme, quantize_first_last=True, min_weight_elements=0)
    ctx.ember.quantize(model, path, config=cfg)
    if r > 1:
        import onnx
        m = onnx.load(path)
        g = m.graph
        inputs = {i.name for i in g.input}
        nodes, inits, outs = list(g.node), list(g.initializer), list(g.output)
        del g.node[:], g.output[:]
        for i in range(r):
            ren = lambda v: v if v in inputs or not v else f"{v}_{i}"  # noqa: E731
            for nd in nodes:
                c = onnx.NodeProto()
                c.CopyFrom(nd)
                c.name = f"{nd.name}_{i}"
                c.input[:] = [ren(v) for v in nd.input]
                c.output[:] = [ren(v) for v in nd.output]
                g.node.append(c)
            for o in outs:
                c = onnx.ValueInfoProto()
                c.CopyFrom(o)
                c.name = ren(o.name)
                g.output.append(c)
            if i:
                for t in inits:
                    c = onnx.TensorProto()
                    c.CopyFrom(t)
                    c.name = ren(t.name)
                    g.initializer.append(c)
        for t in g.initializer[:len(inits)]:
            t.name = f"{t.name}_0"
        del g.value_info[:]
        onnx.save(m, path)
    return path


def result(what, unit_bytes, m, n, k, ms, note=""):
    return dict(what=what, m=m, n=n, k=k, us=ms * 1e3 if ms else None,
                gbs=unit_bytes / (ms * 1e6) if ms else None,
                tops=2 * m * n * k / (ms * 1e9) if ms else None, note=note)


def torch_rows(ctx, n, k, ms_list):
    torch = ctx.torch
    rows = []
    l2 = ctx.args.l2_mb * 2 ** 20
    fp = ctx.tdtype("fp16")
    esz = 2 if fp == torch.float16 else 4
    r16 = rotations(k * n * esz, l2, ctx.sz["max_rot"])
    w16 = [ctx.randn(k, n, dtype=fp) for _ in range(r16)]
    r8 = rotations(k * n, l2, ctx.sz["max_rot"])
    w8 = [torch.randint(-127, 128, (k, n), dtype=torch.int8, device=ctx.tdev) for _ in range(r8)]
    for m in ms_list:
        a16 = ctx.randn(m, k, dtype=fp)
        t = graph_ms(ctx, [lambda w=w: torch.matmul(a16, w) for w in w16], ctx.sz["runs"], ctx.sz["warmup"])
        rows.append(result("torch fp16" if esz == 2 else "torch fp32 (dry)", (k * n + m * k + m * n) * esz,
                           m, n, k, t, f"R={r16}"))
        a8 = torch.randint(-127, 128, (m, k), dtype=torch.int8, device=ctx.tdev)
        try:
            t = graph_ms(ctx, [lambda w=w: torch._int_mm(a8, w) for w in w8], ctx.sz["runs"], ctx.sz["warmup"])
            note = f"R={r8}"
        except Exception as e:  # M <= 16, or no int8 kernel on this device / CPU build
            t, note = None, f"n/a: {str(e).splitlines()[0][:60]}"
        rows.append(result("torch _int_mm", k * n + m * k + 4 * m * n, m, n, k, t, note))
        del a16, a8
    del w16, w8
    ctx.free()
    return rows


def ember_rows(ctx, n, k, ms_list, tmp):
    rows = []
    l2 = ctx.args.l2_mb * 2 ** 20
    # int8 rows rotate over copies exceeding 2 x L2 at 1 byte / weight; int4 at half that
    for scheme, wbytes, op in (("int8", k * n, "QMatMul"), ("int4", k * n // 2 + k * n // 64, "Q4MatMul")):
        r = rotations(wbytes, l2, ctx.sz["max_rot"])
        t0 = time.monotonic()
        try:
            path = quantized(ctx, rot_model(ctx, k, n, 1), scheme, os.path.join(tmp, f"{scheme}_{n}_{k}.onnx"), r)
        except Exception as e:
            for m in ms_list:
                rows.append(result(f"ember {scheme}", 0, m, n, k, None, f"quantize failed: {e}"))
            continue
        qs = time.monotonic() - t0
        for m in ms_list:
            x = ctx.rng.standard_normal((m, k), dtype=np.float32)
            # Decode int4 also on the opt-in stream kernel (EMBER_CUDA_Q4_KERNEL, read per run).
            variants = [("", None)] + ([(" stream", "stream")] if scheme == "int4" and m <= 16 else [])
            for suffix, kernel in variants:
                if kernel:
                    os.environ["EMBER_CUDA_Q4_KERNEL"] = kernel
                try:
                    e = bc.ember_time(ctx, path, {"x": x}, "fp16", ctx.sz["runs"], ctx.sz["warmup"], 1)
                finally:
                    os.environ.pop("EMBER_CUDA_Q4_KERNEL", None)
                rows.append(ember_row(f"ember {scheme}{suffix}", e, op, r, qs, wbytes, m, n, k))
        os.remove(path)
    return rows


def ember_row(what, e, op, r, qs, wbytes, m, n, k):
    """One ember row from bc.ember_time's result `e` over R rotated copies of the weight."""
    note = f"R={r}, kernels {','.join(e['kernels'])}, quantized in {qs:.1f} s"
    ms = None
    if e["fallbacks"]:
        note = "refused: on the CPU: " + ", ".join(f"{a} ({b})" for a, b in e["fallbacks"][:4])
    elif e["error"]:
        note = "ember: " + e["error"]
    elif e["device_ms"] is not None:
        ms = e["device_ms"] / r
        if op not in e["ops"]:
            note += f"; NOT {op}: {sorted(set(e['ops']))}"
    return result(what, wbytes + m * k * 4 + m * n * 4, m, n, k, ms, note)


def table(rows, peaks, header):
    lines = [header,
             f"peaks (measured here): copy {peaks.get('copy', 0):.1f} GB/s, int8 {peaks.get('int8', 0):.1f} TOPS "
             "(best torch._int_mm)",
             f"{'N x K':<12} {'M':>5} {'what':<18} {'us':>9} {'GB/s':>8} {'TOPS':>7} {'bw%':>6} {'ops%':>6}  note"]
    for r in rows:
        bw = 100 * r["gbs"] / peaks["copy"] if r["gbs"] and peaks.get("copy") else None
        op = 100 * r["tops"] / peaks["int8"] if r["tops"] and peaks.get("int8") else None
        lines.append(f"{r['n']}x{r['k']:<{11 - len(str(r['n']))}} {r['m']:>5} {r['what']:<18} "
                     f"{bc.fmt(r['us'], '9.1f')} {bc.fmt(r['gbs'], '8.1f')} {bc.fmt(r['tops'], '7.2f')} "
                     f"{bc.fmt(bw, '6.1f')} {bc.fmt(op, '6.1f')}  {r['note']}")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="tiny sizes, ember and torch on the CPU")
    ap.add_argument("--device", help="ember's device (default cuda; cpu in a dry run)")
    ap.add_argument("--json", help="write results here (default $OUT/bench_quant.json when OUT is set)")
    ap.add_argument("--table", help="also write the table here")
    ap.add_argument("--time-limit", type=float, default=300, help="seconds for all shapes")
    ap.add_argument("--l2-mb", type=float, default=60, help="L2 size the weight rotation defeats")
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args(argv)
    ctx, header = bc.start(Ctx, args, "bench_quant_cuda", "bench_quant.json")
    if ctx is None:
        return 2
    deadline = time.monotonic() + args.time_limit
    peaks, rows, failures = {}, [], {}
    copy = bc.sec_copy(ctx)[0]
    peaks["copy"] = copy["torch_rate"]
    ctx.free()
    with tempfile.TemporaryDirectory() as tmp:
        for n, k in ctx.sz["shapes"]:
            if time.monotonic() > deadline:
                failures[f"{n}x{k}"] = "skipped: time limit"
                continue
            t0 = time.monotonic()
            got = []
            # torch and ember apart: an ember failure keeps the shape's torch figures.
            for who, rows_of in (("torch", torch_rows), ("ember", lambda *a: ember_rows(*a, tmp))):
                try:
                    got += rows_of(ctx, n, k, ctx.sz["ms"])
                except Exception as e:
                    failures[f"{n}x{k} {who}"] = f"{type(e).__name__}: {e}"
                    traceback.print_exc(limit=4)
                finally:
                    ctx.free()
            if not got:
                continue
            got.sort(key=lambda r: (r["m"], r["what"]))
            rows += got
            for r in got:
                if r["what"] == "torch _int_mm" and r["tops"]:
                    peaks["int8"] = max(peaks.get("int8", 0), r["tops"])
            print(f"-- {n}x{k}: {time.monotonic() - t0:.1f} s", flush=True)
            print("\n".join(table(got, peaks, "").splitlines()[3:]), flush=True)
            if args.json:
                with open(args.json, "w") as f:
                    json.dump({"machine": bc.machine(ctx), "peaks": peaks, "rows": rows,
                               "failures": failures}, f, indent=1, default=str)
    text = table(rows, peaks, header)
    if failures:
        text += "\n" + "\n".join(f"{k}: {v}" for k, v in failures.items())
    print("\n" + text, flush=True)
    if args.table:
        with open(args.table, "w") as f:
            f.write(text + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
