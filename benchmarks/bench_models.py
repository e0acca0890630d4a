"""Whole models, ember vs onnxruntime (CPU EP, defaults but threads), same threads, interleaved.

    PYTHONPATH=python python benchmarks/bench_models.py --threads 2 [--json out.json] [--plot out.png]

- all-MiniLM-L6-v2 (`minilm-l6`, fp32) at batch 1 x seq 128 (latency) and 32 x 128 (throughput);
- a ResNet-18-style CNN (random weights; basic blocks 2-2-2-2, widths 64-512, BN folded by the
  exporter) at batch 1 x 3 x 224 x 224, exported from torch (torch.onnx.export, dynamo=False,
  opset 17) into a temp dir.

--bf16 adds ember with precision="bf16" to the MiniLM cases (a third engine in the same
interleaved rounds; bf16 matmuls and attention on AVX512_BF16 with fp32 accumulation) and prints
its time against onnxruntime fp32 and ember fp32, and the cosine of its sentence embeddings to
ember fp32's on real sentences. Ratios: of medians, and per round (the engines' blocks of one
round ran back to back, so load from other jobs falls on both: steadier on a shared machine).

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


SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A fast brown fox leaps over a sleepy dog.",
    "Paris is the capital of France; Berlin is the capital of Germany.",
    "Numbers like 3.14159 and 2.71828 split into several word pieces.",
    "Sentence embeddings map text to points where similar meanings lie close together.",
    "The trains ran on time and the weather was mild.",
    "Hello!",
    "Unbelievably, the tokenizer handles uncommon words by splitting them into pieces.",
]


def bf16_embedding_cosine(path, threads, seq=128):
    """Min over SENTENCES of the cosine between ember bf16 and fp32 sentence embeddings (the
    model's sentence_embedding output, else mean-pooled last_hidden_state), at [8, seq]."""
    import numpy as np
    import tokenizers

    from ember import Engine, hub
    tok = tokenizers.Tokenizer.from_file(os.path.join(hub.model_folder("minilm-l6"), "tokenizer.json"))
    tok.enable_truncation(max_length=seq)
    tok.enable_padding(length=seq, pad_id=0, pad_token="[PAD]")
    enc = tok.encode_batch(SENTENCES)
    feeds = {"input_ids": np.array([e.ids for e in enc], np.int64),
             "attention_mask": np.array([e.attention_mask for e in enc], np.int64),
             "token_type_ids": np.array([e.type_ids for e in enc], np.int64)}
    embs = []
    for precision in ("fp32", "bf16"):
        with Engine(path, threads=threads, precision=precision) as eng:
            out = eng.run(feeds)
        if "sentence_embedding" in out:
            embs.append(out["sentence_embedding"].astype(np.float64))
        else:
            m = feeds["attention_mask"][..., None].astype(np.float64)
            embs.append((out["last_hidden_state"] * m).sum(1) / m.sum(1))
    a, b = embs
    return float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min())


def ratio(row, rival):
    """ember bf16's median time over `rival`'s in this row."""
    st = row["engines"]
    return st["ember bf16"]["median_s"] / st[rival]["median_s"]


def paired(row, rival):
    """ember bf16 / `rival` per round (blocks run back to back): p10-p90 of the ratio."""
    from ember import bench
    pr = bench.paired_ratio(row["round_medians"]["ember bf16"], row["round_medians"][rival])
    row.setdefault("bf16_paired", {})[rival] = pr
    return f"{pr['p10']:.2f}-{pr['p90']:.2f}x (med {pr['median']:.2f})"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="smoke mode (CI)")
    p.add_argument("--rounds", type=int, default=None, help="rounds per case (default 10; 4 at 32x128)")
    p.add_argument("--pause-ms", type=float, default=50.0)
    p.add_argument("--rss", action="store_true", help="measure peak RSS in --quick mode too")
    p.add_argument("--no-rss", action="store_true", help="skip the peak RSS children")
    p.add_argument("--only", choices=["minilm", "resnet"], help="run one model only")
    p.add_argument("--bf16", action="store_true",
                   help="also ember precision='bf16' on MiniLM: time and embedding cosine vs fp32")
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
            cases.append((f"minilm-l6 {b}x{s}", path, feeds, b, "seq", rounds, args.bf16))
    if args.only in (None, "resnet"):
        path = os.path.join(tmp.name, "resnet.onnx")
        print("[models] exporting the ResNet-style CNN from torch ...", file=sys.stderr, flush=True)
        size = export_resnet(path, args.quick)
        img = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
        name = "resnet-tiny" if args.quick else "resnet18-style"
        cases.append((f"{name} 1x3x{size}x{size}", path, {"image": img}, 1, "img",
                      2 if args.quick else 10, False))

    rows = []
    for label, path, feeds, items, unit, rounds, bf16 in cases:
        print(f"[models] {label} ...", file=sys.stderr, flush=True)
        runners = [bench.ember_runner(path, args.threads), bench.ort_runner(path, args.threads)]
        if bf16:
            runners.append(bench.ember_runner(path, args.threads, label="ember bf16",
                                              precision="bf16"))
        try:
            row = bench.run_case(runners, feeds, warmup=warmup, rounds=args.rounds or rounds,
                                 pause_s=(5 if args.quick else args.pause_ms) / 1e3,
                                 rss_model=path if rss else None, threads=args.threads)
        finally:
            for r in runners:
                r.close()
        row.update(case=label, items=items, unit=unit,
                   items_per_s={k: items / st["median_s"] for k, st in row["engines"].items()})
        if bf16:
            row["bf16_cosine"] = bf16_embedding_cosine(path, args.threads)
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
    bf16_rows = [r for r in rows if "bf16_cosine" in r]
    if bf16_rows:
        from ember import _core
        print(f"\nember precision='bf16' (cpu isa {_core.cpu_isa()}; fp32 where it lacks "
              "avx512bf16); cosine: sentence embeddings of real text vs ember fp32")
        bench.print_table(
            ["case", "ember bf16 median ±", "bf16/ORT fp32", "paired p10-p90", "bf16/ember fp32",
             "paired p10-p90", "min cosine", "bf16 items/s"],
            [[r["case"], bench.fmt_stat(r["engines"]["ember bf16"]),
              f"{ratio(r, 'onnxruntime'):.2f}x", paired(r, "onnxruntime"),
              f"{ratio(r, 'ember'):.2f}x", paired(r, "ember"),
              f"{r['bf16_cosine']:.6f}", f"{r['items_per_s']['ember bf16']:.1f} {r['unit']}/s"]
             for r in bf16_rows])
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
