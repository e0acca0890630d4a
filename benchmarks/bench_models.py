"""Whole models, ember vs onnxruntime (CPU EP, defaults but threads), same threads, interleaved.

    PYTHONPATH=python python benchmarks/bench_models.py --threads 2 [--json out.json] [--plot out.png]

- all-MiniLM-L6-v2 (`minilm-l6`, fp32) at batch 1 x seq 128 (latency) and 32 x 128 (throughput);
- a ResNet-18-style CNN (random weights; basic blocks 2-2-2-2, widths 64-512, BN folded by the
  exporter) at batch 1 x 3 x 224 x 224, exported from torch (torch.onnx.export, dynamo=False,
  opset 17) into a temp dir.

Feeds are sampled as `ember bench` samples them (token ids in [0, 2)). Prints median ± spread,
items per second (sequences or images), ember / onnxruntime time, max |diff|, and each engine's
peak RSS from a fresh process. --quick (CI smoke): small shapes and a small CNN, 2 rounds, no
RSS unless --rss.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile


def resnet_like(widths=(64, 128, 256, 512), blocks=(2, 2, 2, 2), classes=1000):
    """ResNet-18's layout (stem conv 7x7/2 + max pool, basic blocks, global pool, fc)."""
    import torch
    from torch import nn

    class Basic(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.b1 = nn.BatchNorm2d(cout)
            self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.b2 = nn.BatchNorm2d(cout)
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            y = torch.relu(self.b1(self.c1(x)))
            y = self.b2(self.c2(y))
            return torch.relu(y + (x if self.down is None else self.down(x)))

    layers, cin = [], widths[0]
    for i, (w, n) in enumerate(zip(widths, blocks)):
        for j in range(n):
            layers.append(Basic(cin, w, 2 if (j == 0 and i > 0) else 1))
            cin = w
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, widths[0], 7, 2, 3, bias=False), nn.BatchNorm2d(widths[0]),
                        nn.ReLU(), nn.MaxPool2d(3, 2, 1), *layers, nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(cin, classes))
    for m in net.modules():                    # non-trivial BN statistics, as a trained net has
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return net.eval()


def export_resnet(path, quick):
    import warnings

    import torch
    net = resnet_like((16, 32), (1, 1), 10) if quick else resnet_like()
    size = 32 if quick else 224
    x = torch.randn(1, 3, size, size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)   # dynamo=False is on purpose
        torch.onnx.export(net, (x,), path, input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
                          opset_version=17, dynamo=False)
    return size


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="smoke mode (CI)")
    p.add_argument("--rounds", type=int, default=None, help="rounds per case (default 10; 4 at 32x128)")
    p.add_argument("--pause-ms", type=float, default=50.0)
    p.add_argument("--rss", action="store_true", help="measure peak RSS in --quick mode too")
    p.add_argument("--no-rss", action="store_true", help="skip the peak RSS children")
    p.add_argument("--only", choices=["minilm", "resnet"], help="run one model only")
    p.add_argument("--json", metavar="OUT.json")
    p.add_argument("--plot", metavar="OUT.png", help="bar chart of medians (needs matplotlib)")
    args = p.parse_args(argv)

    import numpy as np

    from ember import bench, hub

    if args.plot:
        bench.require_matplotlib()
    rss = not args.no_rss and (args.rss or not args.quick)
    warmup = 1 if args.quick else 3
    # (label, model path, feeds, items per run, item name, rounds)
    cases = []
    tmp = tempfile.TemporaryDirectory(prefix="ember-bench-models-")
    if args.only in (None, "minilm"):
        path = hub.resolve("minilm-l6")
        shapes = [(1, 16, 2), (4, 16, 2)] if args.quick else [(1, 128, 10), (32, 128, 4)]
        for b, s, rounds in shapes:
            ids = np.random.default_rng(0).integers(0, 2, size=(b, s)).astype(np.int64)
            feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids),
                     "token_type_ids": np.zeros_like(ids)}
            cases.append((f"minilm-l6 {b}x{s}", path, feeds, b, "seq", rounds))
    if args.only in (None, "resnet"):
        path = os.path.join(tmp.name, "resnet.onnx")
        print("[models] exporting the ResNet-style CNN from torch ...", file=sys.stderr, flush=True)
        size = export_resnet(path, args.quick)
        img = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
        name = "resnet-tiny" if args.quick else "resnet18-style"
        cases.append((f"{name} 1x3x{size}x{size}", path, {"image": img}, 1, "img", 2 if args.quick else 10))

    rows = []
    for label, path, feeds, items, unit, rounds in cases:
        print(f"[models] {label} ...", file=sys.stderr, flush=True)
        runners = [bench.ember_runner(path, args.threads), bench.ort_runner(path, args.threads)]
        try:
            row = bench.run_case(runners, feeds, warmup=warmup, rounds=args.rounds or rounds,
                                 pause_s=(5 if args.quick else args.pause_ms) / 1e3,
                                 rss_model=path if rss else None, threads=args.threads)
        finally:
            for r in runners:
                r.close()
        row.update(case=label, items=items, unit=unit,
                   items_per_s={k: items / st["median_s"] for k, st in row["engines"].items()})
        rows.append(row)
    tmp.cleanup()

    headers = ["case", "ember median ±", "onnxruntime median ±", "ember/ORT", "ember items/s",
               "ORT items/s", "max |diff|"] + (["RSS ember MiB", "RSS ORT MiB"] if rss else [])
    table = []
    for r in rows:
        ips = r["items_per_s"]
        table.append([r["case"], bench.fmt_stat(r["engines"]["ember"]),
                      bench.fmt_stat(r["engines"]["onnxruntime"]), f"{r['ratio']:.2f}x",
                      f"{ips['ember']:.1f} {r['unit']}/s", f"{ips['onnxruntime']:.1f} {r['unit']}/s",
                      f"{r['max_abs_diff']:.1e}"]
                     + ([f"{r['rss'][k]['peak_mib']:.0f}" for k in ("ember", "onnxruntime")] if rss else []))
    print(f"threads {args.threads}; median ±: median per run, ± half the p10-p90 range; "
          "ember/ORT: time ratio (< 1: ember faster)")
    bench.print_table(headers, table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": args.threads, "quick": args.quick,
                       "machine": bench.machine_info(args.threads), "results": rows}, f, indent=1)
        print(f"wrote {args.json}")
    if args.plot:
        bench.plot_results(rows, args.plot, title=f"ember vs onnxruntime, {args.threads} threads")
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
