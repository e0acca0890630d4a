"""ember's CUDA backend against torch on one GPU, same shapes and precision, side by side.

    PYTHONPATH=python python benchmarks/gpu/bench_cuda.py [--json out.json] [--time-limit 150]
    PYTHONPATH=python python benchmarks/gpu/bench_cuda.py --dry-run [--device fake]

Sections: (a) copy: torch clone of a 1 GiB fp32 tensor, the bandwidth peak the memory-bound rows
are shares of; (b) Add and Add + RMSNormalization (residual) on 1 GiB fp32 tensors, one- and
two-node ONNX models; (c) SDPA fp16, batch 8 x 12 heads x seq 512 x head 64, as the
MatMul-Mul-Softmax-MatMul graph ember fuses into Attention, vs F.scaled_dot_product_attention;
(d) GEMM 4096^3 at fp32 and fp16 vs torch.matmul (their TFLOP/s are the peaks of the matrix rows);
(e) a BERT-like encoder in all-MiniLM-L6-v2's shape (6 layers, hidden 384, 12 heads, ffn 1536;
random weights, exported from the torch module defined here) at batch 32 x seq 128 fp16 vs that
module in torch fp16 eager; (f) a ResNet-18-style CNN at batch 64 x 224 x 224 fp16, likewise.

What is timed. torch: CUDA events around each call, median of N after warm-up. ember: "ember ms"
is the median wall time of one Engine.run whose feeds are already torch CUDA tensors (read in
place through DLPack) and whose outputs stay on the GPU (device_outputs=True), the device
synchronized before and after: like torch's figure, it counts the host's launch work. "nodes ms"
is the sum of the per-node medians of Engine.profile over the nodes that run on the device (copy
steps excluded), each timed by CUDA events around its launches: the GPU's time for the node's
kernels, host launch work between them included only where the GPU waited for it. "e2e ms" is
Engine.run's median wall time, numpy in and out, host<->device copies included.
ember's "precision" keeps fp32 tensors in device memory and computes matmuls / attention on fp16
tensor cores; torch's fp16 rows hold fp16 tensors. An ember figure is refused (n/a, nodes listed)
when any node fell back to the CPU (Engine.device_fallbacks non-empty).

--dry-run builds every model at tiny sizes and runs ember on the CPU (or, with --device fake, on
a fake device that has exactly the CUDA backend's op list, cuda/src/registry.cpp) and torch on the
CPU: the script's logic without a GPU.
"""
from __future__ import annotations

import argparse
import io
import json
import math
import os
import re
import signal
import statistics
import sys
import time
import traceback

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
COPY_KERNELS = ("copy_to_device", "copy_to_host")
GIB = 1 << 30

# Per mode: shapes, runs. "gpu" is what check.sh runs on the H200; "dry" keeps the CPU quick.
SIZES = {
    "gpu": dict(copy_elems=GIB // 4, rows=65536, hidden=4096, sdpa=(8, 12, 512, 64), gemm=4096,
                bert=dict(batch=32, seq=128, vocab=30522, layers=6, hidden=384, heads=12, ffn=1536),
                resnet=dict(batch=64, size=224, widths=(64, 128, 256, 512)),
                runs=20, warmup=3, big_runs=8, e2e_runs=3, section_s=75),
    "dry": dict(copy_elems=1 << 20, rows=64, hidden=256, sdpa=(2, 2, 16, 8), gemm=64,
                bert=dict(batch=2, seq=16, vocab=100, layers=2, hidden=32, heads=4, ffn=64),
                resnet=dict(batch=1, size=32, widths=(4, 8, 8, 16)),
                runs=3, warmup=1, big_runs=3, e2e_runs=2, section_s=120),
}


# ---- models -----------------------------------------------------------------------------------

def onnx_model(nodes, inputs, outputs, initializers=(), opset=17):
    """inputs: [(name, shape)] fp32; outputs: names; initializers: [(name, np.ndarray)]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    g = helper.make_graph(
        nodes, "bench", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_empty_tensor_value_info(o) for o in outputs],
        initializer=[numpy_helper.from_array(v, n) for n, v in initializers])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 10 if opset >= 21 else 8
    return onnx.shape_inference.infer_shapes(m)


def add_model(shape):
    from onnx import helper
    return onnx_model([helper.make_node("Add", ["x", "r"], ["y"], name="add")],
                      [("x", shape), ("r", shape)], ["y"])


def rms_residual_model(shape, weight):
    """h = x + r (the residual stream, an output too); y = RMSNormalization(h) * w."""
    from onnx import helper
    nodes = [helper.make_node("Add", ["x", "r"], ["h"], name="residual"),
             helper.make_node("RMSNormalization", ["h", "w"], ["y"], axis=-1, epsilon=1e-6,
                              name="rms_norm")]
    return onnx_model(nodes, [("x", shape), ("r", shape)], ["y", "h"], [("w", weight)], opset=23)


def sdpa_model(b, h, s, d):
    """q [B,H,S,D], kt [B,H,D,S] (keys pre-transposed), v [B,H,S,D]: MatMul-Mul-Softmax-MatMul,
    the pattern ember fuses into one Attention node."""
    from onnx import helper
    nodes = [helper.make_node("MatMul", ["q", "kt"], ["s"], name="qk"),
             helper.make_node("Mul", ["s", "c"], ["s2"], name="scale"),
             helper.make_node("Softmax", ["s2"], ["p"], axis=-1, name="softmax"),
             helper.make_node("MatMul", ["p", "v"], ["y"], name="pv")]
    return onnx_model(nodes, [("q", [b, h, s, d]), ("kt", [b, h, d, s]), ("v", [b, h, s, d])],
                      ["y"], [("c", np.array(1 / math.sqrt(d), np.float32))])


def gemm_model(n):
    from onnx import helper
    return onnx_model([helper.make_node("MatMul", ["a", "b"], ["y"], name="gemm")],
                      [("a", [n, n]), ("b", [n, n])], ["y"])


def bert_like(vocab, layers, hidden, heads, ffn, max_pos=512, **_):
    """BERT encoder (all-MiniLM-L6-v2's layout: post-LN, erf GELU, additive -1e4 key mask) with
    random weights; forward(input_ids, attention_mask, token_type_ids) -> last hidden state.
    Attention is written out (matmul, / sqrt(d), + mask, softmax, matmul) so that the exported
    graph has the pattern ember fuses."""
    import torch
    from torch import nn
    d = hidden // heads

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.q, self.k, self.v, self.o = (nn.Linear(hidden, hidden) for _ in range(4))
            self.ln1 = nn.LayerNorm(hidden, eps=1e-12)
            self.up, self.down = nn.Linear(hidden, ffn), nn.Linear(ffn, hidden)
            self.ln2 = nn.LayerNorm(hidden, eps=1e-12)

        def forward(self, x, bias):
            b, t, _ = x.shape
            q, k, v = (y.view(b, t, heads, d).transpose(1, 2) for y in (self.q(x), self.k(x), self.v(x)))
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(d)
            ctx = torch.matmul(torch.softmax(scores + bias, dim=-1), v)
            x = self.ln1(x + self.o(ctx.transpose(1, 2).reshape(b, t, hidden)))
            return self.ln2(x + self.down(nn.functional.gelu(self.up(x))))

    class Bert(nn.Module):
        def __init__(self):
            super().__init__()
            self.word, self.pos = nn.Embedding(vocab, hidden), nn.Embedding(max_pos, hidden)
            self.token_type = nn.Embedding(2, hidden)
            self.ln = nn.LayerNorm(hidden, eps=1e-12)
            self.layers = nn.ModuleList(Layer() for _ in range(layers))

        def forward(self, input_ids, attention_mask, token_type_ids):
            x = self.word(input_ids) + self.pos.weight[: input_ids.shape[1]] + self.token_type(token_type_ids)
            x = self.ln(x)
            bias = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * -10000.0
            for layer in self.layers:
                x = layer(x, bias)
            return x

    torch.manual_seed(0)
    net = Bert()
    with torch.no_grad():                      # BERT-scale weights keep activations O(1)
        for p in net.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.05)
    return net.eval()


def bert_feeds(rng, batch, seq, vocab, **_):
    ids = rng.integers(0, vocab, (batch, seq), dtype=np.int64)
    mask = np.ones((batch, seq), np.int64)
    mask[: batch // 2, seq - seq // 4:] = 0    # padded rows: the mask Add is exercised
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def bert_flops(batch, seq, layers, hidden, ffn, **_):
    tokens = batch * seq
    return layers * (2 * tokens * (4 * hidden * hidden + 2 * hidden * ffn) + 4 * batch * seq * seq * hidden)


def resnet_like(widths=(64, 128, 256, 512), blocks=(2, 2, 2, 2), classes=1000, **_):
    """ResNet-18's layout: the CPU benchmark's model (benchmarks/bench_models.py)."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from bench_models import resnet_like as cpu_resnet_like
    return cpu_resnet_like(widths, blocks, classes)


def conv_linear_flops(net, x):
    """2 x MACs of every Conv2d and Linear in one forward of `net` on x (torch, any device)."""
    import torch
    total = [0]

    def hook(m, inp, out):
        if isinstance(m, torch.nn.Conv2d):
            total[0] += 2 * out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        else:
            total[0] += 2 * out.numel() * m.in_features
    handles = [m.register_forward_hook(hook) for m in net.modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        net(x)
    for h in handles:
        h.remove()
    return total[0]


def export(net, args, input_names, output_names, dynamic_axes):
    """torch module -> ONNX bytes (TorchScript exporter, opset 17, fp32), as ember loads them."""
    import warnings

    import torch
    f = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")        # the TorchScript exporter's deprecation notice
        torch.onnx.export(net, args, f, input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic_axes, opset_version=17, dynamo=False)
    return f.getvalue()


def bert_onnx(cfg):
    import torch
    net = bert_like(**cfg)
    ids = torch.zeros(1, 8, dtype=torch.int64)
    axes = {n: {0: "batch", 1: "seq"} for n in ("input_ids", "attention_mask", "token_type_ids")}
    axes["last_hidden_state"] = {0: "batch", 1: "seq"}
    data = export(net, (ids, torch.ones_like(ids), torch.zeros_like(ids)),
                  ["input_ids", "attention_mask", "token_type_ids"], ["last_hidden_state"], axes)
    return net, data


def resnet_onnx(cfg):
    import torch
    net = resnet_like(**cfg)
    x = torch.zeros(1, 3, cfg["size"], cfg["size"])
    data = export(net, (x,), ["pixels"], ["logits"], {"pixels": {0: "batch"}, "logits": {0: "batch"}})
    return net, data


# ---- timing -----------------------------------------------------------------------------------

class SectionTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise SectionTimeout("section time limit reached")


class Ctx:
    """What every section needs: mode sizes, devices, torch, the rng, ember's device."""

    def __init__(self, args):
        import torch
        self.args, self.torch = args, torch
        self.dry = args.dry_run
        self.sz = SIZES["dry" if self.dry else "gpu"]
        self.tdev = "cpu" if self.dry else "cuda"
        self.cuda = self.tdev == "cuda"
        if self.dry:
            torch.set_num_threads(1)            # beside ember's pool on a small CPU: no oversubscription
        self.rng = np.random.default_rng(args.seed)
        self.edev = args.device or ("cpu" if self.dry else "cuda")
        if self.edev == "fake":
            self.edev = register_fake_cuda()
        self.ember_error = None
        try:
            import ember
            self.ember = ember
            if self.edev.startswith("cuda"):
                ember.cuda.device(self.edev)   # fails early, with the reason, when it cannot run
        except Exception as e:                 # torch rows still run; ember's say why not
            self.ember_error = f"{type(e).__name__}: {e}"

    def precision(self, p):
        """ember's precision for a row: the CPU only runs fp32."""
        return "fp32" if self.edev == "cpu" else p

    def tdtype(self, p):
        t = self.torch
        if self.dry:
            return t.float32                    # CPU half matmuls are slow and beside the point
        return {"fp32": t.float32, "fp16": t.float16, "bf16": t.bfloat16}[p]

    def randn(self, *shape, dtype=None):
        """Fresh normal data made on the torch device (fast at 1 GiB), never zeros."""
        g = self.torch.Generator(device=self.tdev).manual_seed(int(self.rng.integers(1 << 62)))
        return self.torch.randn(*shape, generator=g, device=self.tdev, dtype=dtype or self.torch.float32)

    def sync(self):
        if self.cuda:
            self.torch.cuda.synchronize()

    def free(self):
        import gc
        gc.collect()
        if self.cuda:
            self.torch.cuda.empty_cache()


def register_fake_cuda():
    """A fake device (host memory in its own pool, CPU kernels) with the CUDA backend's op list,
    so a dry run places nodes and copies as the GPU would (ops with no CUDA row fall back)."""
    from ember import _core
    name = "fake_cuda"
    if name not in _core.device_names():
        ops = re.findall(r"\{OpType::(\w+),", open(os.path.join(ROOT, "cuda/src/registry.cpp")).read())
        known = set(_core.op_names(fused=True))   # a _core older than the table lacks new ops
        _core.register_fake_device(name, sorted(set(ops) & known))
    return name


def torch_ms(ctx, fn, runs, warmup):
    """Median ms of fn() over `runs` calls after `warmup`: CUDA events per call on the GPU."""
    torch = ctx.torch
    with torch.inference_mode():
        for _ in range(warmup):
            fn()
        ctx.sync()
        if not ctx.cuda:
            times = []
            for _ in range(runs):
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
            return statistics.median(times)
        ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
              for _ in range(runs)]
        for a, b in ev:
            a.record()
            fn()
            b.record()
        torch.cuda.synchronize()
        return statistics.median(a.elapsed_time(b) for a, b in ev)


def ember_time(ctx, model, feeds, precision, runs, warmup, e2e_runs):
    """-> dict: device_ms (sum of device-node medians, copies excluded), dev_ms (whole runs on
    GPU tensors: ember_device_run_ms; GPU only), e2e_ms, copy_ms, ops, kernels, out (first run's
    outputs), fallbacks, error."""
    r = dict(device_ms=None, dev_ms=None, e2e_ms=None, copy_ms=None, ops=[], kernels=[], out=None,
             by_op=[], nodes=0, fallbacks=[], error=ctx.ember_error)
    if ctx.ember_error:
        return r
    try:
        _ember_time(ctx, model, feeds, precision, runs, warmup, e2e_runs, r)
    except Exception as ex:  # the section's torch figures still count; the note says why
        traceback.print_exc(limit=4)
        r["error"] = f"{type(ex).__name__}: {ex}"
        r["device_ms"] = r["dev_ms"] = None
    return r


def _ember_time(ctx, model, feeds, precision, runs, warmup, e2e_runs, r):
    """ember_time's measurements, into r."""
    eng = ctx.ember.Engine(model, device=ctx.edev, precision=ctx.precision(precision))
    try:
        eng.plan_info(feeds)                      # compiles the plan, fills device_fallbacks
        r["fallbacks"] = [tuple(f) for f in eng.device_fallbacks]
        if r["fallbacks"]:                        # refused: nothing run (a CPU Conv can be slow)
            return
        r["out"] = eng.run(feeds)
        prof = eng.profile(feeds, runs=runs, warmup=warmup)
        nodes = [n for n in prof.nodes if n.kernel not in COPY_KERNELS]
        r["device_ms"] = sum(n.median_ms for n in nodes)
        r["copy_ms"] = sum(n.median_ms for n in prof.nodes if n.kernel in COPY_KERNELS)
        r["ops"] = [n.op for n in nodes]
        r["kernels"] = sorted({n.kernel for n in nodes})
        # Where the device time goes: op types by their nodes' summed medians, largest first.
        r["by_op"] = [(s.op, s.count, s.ms) for s in prof.ops]
        r["nodes"] = len(prof.nodes)
        times = []
        for _ in range(e2e_runs):
            t0 = time.perf_counter()
            eng.run(feeds)
            times.append((time.perf_counter() - t0) * 1e3)
        r["e2e_ms"] = statistics.median(times)
        if ctx.cuda:
            try:
                r["dev_ms"] = ember_device_run_ms(ctx, eng, feeds, runs, warmup)
            except Exception as ex:  # the nodes' sum stands in; the note says why
                r["error"] = f"run on GPU tensors failed ({type(ex).__name__}: {ex}); ember ms = nodes ms"
    finally:
        eng.close()


def ember_device_run_ms(ctx, eng, feeds, runs, warmup):
    """Median ms of one whole Engine.run with its feeds already on the GPU (torch tensors, read
    in place through DLPack) and its outputs left there: what torch eager's events time, host
    launch work included. The device is synchronised around each run: ember's stream is its own."""
    torch = ctx.torch
    dev_feeds = {k: torch.from_numpy(np.ascontiguousarray(v)).to(ctx.tdev) for k, v in feeds.items()}
    for _ in range(warmup):
        eng.run(dev_feeds, device_outputs=True)
    times = []
    for _ in range(runs):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = eng.run(dev_feeds, device_outputs=True)
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
        del out
    return statistics.median(times)


def rel_err(got, want):
    """||got - want|| / ||want|| in float64 (NaN when got has NaNs)."""
    g, w = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.linalg.norm(g - w) / max(np.linalg.norm(w), 1e-30))


def row(section, what, unit, work, e, t_ms, t_out=None, e_key=None, peak=None, note=""):
    """One table row. work: bytes (unit GB/s) or flops (TFLOP/s) per call; peak: which measured
    peak the shares are of ('copy', 'gemm_fp32', 'gemm_fp16')."""
    scale = 1e6 if unit == "GB/s" else 1e9
    # Whole runs on GPU tensors where measured (the like of torch's timing), else the nodes' sum.
    e_ms = (e["dev_ms"] or e["device_ms"]) if e else None
    err = None
    if e and e.get("out") is not None and t_out is not None and e_key is not None:
        err = rel_err(e["out"][e_key], t_out)
    notes = [note] if note else []
    if e and e["fallbacks"]:
        notes.append("ember refused: on the CPU: " + ", ".join(f"{n} ({op})" for n, op in e["fallbacks"][:8])
                     + (f" +{len(e['fallbacks']) - 8} more" if len(e["fallbacks"]) > 8 else ""))
    if e and e["error"]:
        notes.append("ember: " + e["error"])
    return dict(section=section, what=what, unit=unit, work=work, peak=peak,
                ember_ms=e_ms, torch_ms=t_ms, ember_nodes_ms=e["device_ms"] if e else None,
                ember_e2e_ms=e["e2e_ms"] if e else None, ember_copy_ms=e["copy_ms"] if e else None,
                ratio=e_ms / t_ms if e_ms and t_ms else None,
                ember_rate=work / (e_ms * scale) if e_ms else None,
                torch_rate=work / (t_ms * scale) if t_ms else None,
                err=err, kernels=e["kernels"] if e else [], fallbacks=e["fallbacks"] if e else [],
                by_op=e["by_op"] if e else [], nodes=e["nodes"] if e else 0, note="; ".join(notes))


def np_of(t):
    return t.detach().float().cpu().numpy()


# ---- sections ---------------------------------------------------------------------------------

def sec_copy(ctx):
    n = ctx.sz["copy_elems"]
    x = ctx.randn(n)
    t = torch_ms(ctx, lambda: x.clone(), ctx.sz["big_runs"], ctx.sz["warmup"])
    return [row("copy", f"torch clone {n * 4 / GIB:.3g} GiB fp32", "GB/s", 2 * n * 4, None, t,
                peak="copy", note="read + write bytes; the GB/s peak")]


def sec_elementwise(ctx):
    torch = ctx.torch
    shape = [ctx.sz["rows"], ctx.sz["hidden"]]
    n = shape[0] * shape[1]
    x, r = ctx.randn(*shape), ctx.randn(*shape)
    w = ctx.randn(shape[1]) * 0.5 + 1
    feeds = {"x": np_of(x), "r": np_of(r)}
    big = ctx.sz["big_runs"]
    rows = []
    e = ember_time(ctx, add_model(shape), feeds, "fp32", big, ctx.sz["warmup"], ctx.sz["e2e_runs"])
    t = torch_ms(ctx, lambda: torch.add(x, r), big, ctx.sz["warmup"])
    rows.append(row("add", f"Add {shape[0]}x{shape[1]} fp32", "GB/s", 3 * n * 4, e, t,
                    np_of(x + r), "y", peak="copy"))
    w_np = np_of(w)

    def torch_rms():
        h = x + r
        return torch.nn.functional.rms_norm(h, (shape[1],), w, 1e-6), h
    e = ember_time(ctx, rms_residual_model(shape, w_np), feeds, "fp32", big, ctx.sz["warmup"],
                   ctx.sz["e2e_runs"])
    t = torch_ms(ctx, torch_rms, big, ctx.sz["warmup"])
    with torch.inference_mode():
        want = np_of(torch_rms()[0])
    rows.append(row("rmsnorm+res", f"Add + RMSNorm {shape[0]}x{shape[1]} fp32", "GB/s", 4 * n * 4, e, t,
                    want, "y", peak="copy", note="bytes: x, r read; h, y written"))
    return rows


def sec_sdpa(ctx):
    torch = ctx.torch
    b, h, s, d = ctx.sz["sdpa"]
    dt = ctx.tdtype("fp16")
    q, k, v = (ctx.randn(b, h, s, d) for _ in range(3))
    feeds = {"q": np_of(q), "kt": np_of(k.transpose(-1, -2).contiguous()), "v": np_of(v)}
    q16, k16, v16 = (y.to(dt) for y in (q, k, v))
    e = ember_time(ctx, sdpa_model(b, h, s, d), feeds, "fp16", ctx.sz["runs"], ctx.sz["warmup"],
                   ctx.sz["e2e_runs"])
    sdpa = torch.nn.functional.scaled_dot_product_attention
    t = torch_ms(ctx, lambda: sdpa(q16, k16, v16), ctx.sz["runs"], ctx.sz["warmup"])
    with torch.inference_mode():
        want = np_of(sdpa(q, k, v))              # fp32 reference
    note = "" if not e["ops"] or e["ops"] == ["Attention"] else "not fused: " + ",".join(e["ops"])
    return [row("sdpa", f"SDPA {b}x{h}x{s}x{d} {ctx.precision('fp16')}", "TFLOP/s", 4 * b * h * s * s * d,
                e, t, want, "y", peak="gemm_fp16", note=note)]


def sec_gemm(ctx):
    torch = ctx.torch
    n = ctx.sz["gemm"]
    rows = []
    for p in ("fp32", "fp16"):
        a, bm = ctx.randn(n, n), ctx.randn(n, n)
        feeds = {"a": np_of(a), "b": np_of(bm)}
        e = ember_time(ctx, gemm_model(n), feeds, p, ctx.sz["runs"], ctx.sz["warmup"], ctx.sz["e2e_runs"])
        a2, b2 = a.to(ctx.tdtype(p)), bm.to(ctx.tdtype(p))
        t = torch_ms(ctx, lambda: torch.matmul(a2, b2), ctx.sz["runs"], ctx.sz["warmup"])
        want = np_of(a.double() @ bm.double())
        rows.append(row(f"gemm_{p}", f"MatMul {n}^3 {ctx.precision(p)}", "TFLOP/s", 2 * n ** 3, e, t,
                        want, "y", peak=f"gemm_{p}",
                        note="torch fp32: TF32 off (default)" if p == "fp32" else ""))
    return rows


def sec_bert(ctx):
    torch = ctx.torch
    cfg = ctx.sz["bert"]
    net, data = bert_onnx(cfg)
    feeds = bert_feeds(ctx.rng, **cfg)
    names = ("input_ids", "attention_mask", "token_type_ids")
    targs = [torch.from_numpy(feeds[k]).to(ctx.tdev) for k in names]
    with torch.inference_mode():                 # fp32 reference, then the fp16 rival in place
        want = np_of(net.to(ctx.tdev)(*targs))
    e = ember_time(ctx, data, feeds, "fp16", ctx.sz["runs"], ctx.sz["warmup"], ctx.sz["e2e_runs"])
    tnet = net.to(ctx.tdtype("fp16"))
    t = torch_ms(ctx, lambda: tnet(*targs), ctx.sz["runs"], ctx.sz["warmup"])
    note = "Softmax left unfused" if "Softmax" in e["ops"] else ""
    return [row("bert", f"BERT-like {cfg['layers']}L h{cfg['hidden']} {cfg['batch']}x{cfg['seq']} "
                f"{ctx.precision('fp16')}", "TFLOP/s", bert_flops(**cfg), e, t, want,
                "last_hidden_state", peak="gemm_fp16", note=note)]


def sec_resnet(ctx):
    torch = ctx.torch
    cfg = ctx.sz["resnet"]
    net, data = resnet_onnx(cfg)
    x = ctx.randn(cfg["batch"], 3, cfg["size"], cfg["size"])
    flops = conv_linear_flops(net, x[:1].cpu()) * cfg["batch"]
    with torch.inference_mode():                 # fp32 reference (cuDNN may use TF32), then fp16
        want = np_of(net.to(ctx.tdev)(x))
    e = ember_time(ctx, data, {"pixels": np_of(x)}, "fp16", ctx.sz["runs"], ctx.sz["warmup"],
                   ctx.sz["e2e_runs"])
    if ctx.cuda:
        torch.backends.cudnn.benchmark = True
    tnet = net.to(ctx.tdtype("fp16"))
    x16 = x.to(ctx.tdtype("fp16"))
    t = torch_ms(ctx, lambda: tnet(x16), ctx.sz["runs"], ctx.sz["warmup"])
    return [row("resnet", f"ResNet-18-like {cfg['batch']}x3x{cfg['size']}^2 {ctx.precision('fp16')}",
                "TFLOP/s", flops, e, t, want, "logits", peak="gemm_fp16")]


SECTIONS = {"copy": sec_copy, "elementwise": sec_elementwise, "gemm": sec_gemm, "sdpa": sec_sdpa,
            "bert": sec_bert, "resnet": sec_resnet}


# ---- report -----------------------------------------------------------------------------------

def peaks_of(rows):
    """Measured peaks: torch copy GB/s, torch GEMM TFLOP/s per precision."""
    p = {}
    for r in rows:
        if r["section"] == "copy" and r["torch_rate"]:
            p["copy"] = r["torch_rate"]
        if r["section"].startswith("gemm_") and r["torch_rate"]:
            p[r["section"]] = r["torch_rate"]
    return p


def fmt(v, spec):
    """format(v, spec), or 'n/a' right-aligned to spec's width."""
    return format(v, spec) if v is not None else format("n/a", ">" + spec.split(".")[0])


def table(rows, peaks, header):
    lines = [header,
             "peaks (measured, torch): " + ", ".join(f"{k} {v:.1f} {'GB/s' if k == 'copy' else 'TFLOP/s'}"
                                                     for k, v in peaks.items()),
             "ember ms: Engine.run on GPU tensors, outputs left there (else nodes ms); nodes: the device "
             "nodes' profiled medians (CUDA events), copies excluded; e2e: Engine.run, numpy in/out",
             f"{'section':<12} {'ember ms':>9} {'torch ms':>9} {'e/t':>6} {'ember':>8} {'torch':>8} "
             f"{'unit':<7} {'e %pk':>6} {'t %pk':>6} {'nodes ms':>8} {'e2e ms':>8} {'rel err':>8}  what / note"]
    for r in rows:
        pk = peaks.get(r["peak"])
        es = r["ember_rate"] / pk if pk and r["ember_rate"] else None
        ts = r["torch_rate"] / pk if pk and r["torch_rate"] else None
        lines.append(
            f"{r['section']:<12} {fmt(r['ember_ms'], '9.3f')} {fmt(r['torch_ms'], '9.3f')} "
            f"{fmt(r['ratio'], '6.2f')} {fmt(r['ember_rate'], '8.4g')} {fmt(r['torch_rate'], '8.4g')} "
            f"{r['unit']:<7} {fmt(es and 100 * es, '6.1f')} {fmt(ts and 100 * ts, '6.1f')} "
            f"{fmt(r.get('ember_nodes_ms'), '8.3f')} {fmt(r['ember_e2e_ms'], '8.2f')} "
            f"{fmt(r['err'], '8.1e')}  {r['what']}"
            + (f" [{r['note']}]" if r["note"] else ""))
    for r in rows:  # model sections: where the nodes' device time goes
        if len(r.get("by_op", [])) > 1:
            top = ", ".join(f"{op} x{n} {ms:.3f}" for op, n, ms in r["by_op"][:8])
            lines.append(f"  {r['section']}: {r['nodes']} nodes; ms by op: {top}")
    return "\n".join(lines)


def machine(ctx):
    info = {"dry_run": ctx.dry, "ember_device": ctx.edev, "torch": ctx.torch.__version__,
            "python": sys.version.split()[0]}
    if ctx.cuda:
        info["gpu"] = ctx.torch.cuda.get_device_name(0)
    return info


def start(ctx_class, args, tool, json_name):
    """Seed and JSON defaults ($OUT/json_name), then (context, header line printed); (None,
    None) when torch sees no GPU outside --dry-run. Shared by bench_cuda and bench_quant_cuda."""
    if args.seed is None:
        args.seed = int(time.time_ns() % 2**31)
    if args.json is None and os.environ.get("OUT"):
        args.json = os.path.join(os.environ["OUT"], json_name)
    ctx = ctx_class(args)
    if not ctx.dry and not ctx.torch.cuda.is_available():
        print("torch sees no CUDA device: nothing to compare (use --dry-run on a CPU machine)")
        return None, None
    header = (f"{tool}: {'DRY RUN (CPU, tiny sizes) ' if ctx.dry else ''}ember on {ctx.edev}, torch "
              f"{ctx.torch.__version__} on {ctx.tdev}"
              + (f" ({ctx.torch.cuda.get_device_name(0)})" if ctx.cuda else "") + f", seed {args.seed}")
    print(header, flush=True)
    if ctx.ember_error:
        print(f"ember cannot use {ctx.edev}: {ctx.ember_error}", flush=True)
    return ctx, header


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="tiny sizes, ember and torch on the CPU")
    ap.add_argument("--device", help="ember's device (default cuda; cpu in a dry run); 'fake': a "
                    "fake device with the CUDA backend's op list")
    ap.add_argument("--sections", default=",".join(SECTIONS), help="comma list of " + ", ".join(SECTIONS))
    ap.add_argument("--json", help="write results here (default $OUT/bench_cuda.json when OUT is set)")
    ap.add_argument("--table", help="also write the table here")
    ap.add_argument("--time-limit", type=float, default=170, help="seconds for all sections")
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args(argv)
    ctx, header = start(Ctx, args, "bench_cuda", "bench_cuda.json")
    if ctx is None:
        return 2
    rows, failures = [], {}
    deadline = time.monotonic() + args.time_limit
    old = signal.signal(signal.SIGALRM, _alarm)
    for name in [s.strip() for s in args.sections.split(",") if s.strip()]:
        left = deadline - time.monotonic()
        if name not in SECTIONS:
            failures[name] = "unknown section"
            continue
        if left < 5:
            failures[name] = "skipped: time limit"
            print(f"-- {name}: skipped, time limit", flush=True)
            continue
        t0 = time.monotonic()
        signal.alarm(max(1, int(min(ctx.sz["section_s"], left))))
        try:
            got = SECTIONS[name](ctx)
            signal.alarm(0)
            rows += got
            print(f"-- {name}: {time.monotonic() - t0:.1f} s", flush=True)
            for r in got:
                print("   " + table([r], {}, "").splitlines()[-1], flush=True)
        except BaseException as e:              # SectionTimeout, errors: report and go on
            signal.alarm(0)
            if isinstance(e, KeyboardInterrupt):
                raise
            failures[name] = f"{type(e).__name__}: {e}"
            print(f"-- {name}: FAILED after {time.monotonic() - t0:.1f} s: {failures[name]}", flush=True)
            traceback.print_exc(limit=4)
        finally:
            ctx.free()
        write_json(args.json, ctx, rows, failures)   # after each section: a kill keeps the rest
    signal.signal(signal.SIGALRM, old)
    text = table(rows, peaks_of(rows), header)
    if failures:
        text += "\n" + "\n".join(f"{k}: {v}" for k, v in failures.items())
    print("\n" + text, flush=True)
    if args.table:
        with open(args.table, "w") as f:
            f.write(text + "\n")
    return 1 if failures else 0


def write_json(path, ctx, rows, failures):
    if not path:
        return
    with open(path, "w") as f:
        json.dump({"machine": machine(ctx), "peaks": peaks_of(rows), "rows": rows,
                   "failures": failures}, f, indent=1, default=str)


if __name__ == "__main__":
    sys.exit(main())
