"""Quantized inference, side by side: ember int8/int4 against ember fp32 and onnxruntime.

    PYTHONPATH=python python benchmarks/bench_quant.py --threads 2 [--quick] [--json out.json]

1. all-MiniLM-L6-v2, batch 1 x seq 128 (a real sentence padded with its mask): ember fp32,
   ember int8 (Engine(quantize="int8"): per-token W8A8), onnxruntime fp32 and onnxruntime's
   default dynamic int8 (quantize_dynamic) of the same file, interleaved (ember.bench.compare);
   "ember int8 all" quantizes every MatMul as quantize_dynamic does (ember's default rules keep
   the first and last layers float). Accuracy: cosine of the sentence embeddings with ember
   fp32 over 16 real sentences, for ember int8 (both), ember int4 and onnxruntime int8.
2. INT8 GEMM M=N=K=2048 (a one-MatMul model quantized whole): GOPS = 2 M N K / median, against
   ember fp32 on the same model and the AVX2 int16 peak (2 cores x 2 vpmaddwd/cycle x 16 MACs x
   2 ops x GHz, the same arithmetic as bench_gemm.py's fp32 peak with twice the MACs).
3. INT4 GEMV (M = 1): a chain of R MatMulNBits layers N = K = 4096 (group 128) whose weights
   together are over 4x the L3 cache, so every run streams them from memory; GB/s = bytes of
   codes + scales read per run / median, against the same-run streaming-read bandwidth of
   2 threads (torch.sum over a 1 GiB float32 array; numpy's single-threaded sum without torch).
4. A ResNet-18-style CNN (benchmarks/bench_models.py), batch 1 x 224, quantized by
   onnxruntime.quantization.quantize_static (QDQ, per-channel, 8 random calibration images):
   ember and onnxruntime on the same QDQ file, and both on the float file; top-1 agreement of
   ember's int8 with the float model over 16 random images (a sanity check only: with random
   weights most images share one class; tests/e2e/test_quantize_models.py measures accuracy).
Each section prints a table; --json writes every figure.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Quantization trades a little accuracy for a lot of speed.",
    "ember runs ONNX graphs and language models in one engine.",
    "Il pleut depuis ce matin sur toute la Bretagne.",
    "def add(a, b):\n    return a + b",
    "Stock markets fell sharply after the announcement on Tuesday.",
    "A recipe for lemon cake: flour, sugar, eggs, butter and two lemons.",
    "The mitochondria is the powerhouse of the cell.",
    "Please reset my password, I cannot log in since yesterday!!!",
    "東京は日本の首都です。",
    "Transformers use attention to mix information across tokens.",
    "He scored twice in the second half to win the cup final.",
    "SELECT name, count(*) FROM users GROUP BY name ORDER BY 2 DESC;",
    "The patient reported mild headaches and occasional dizziness.",
    "Solar panels convert sunlight directly into electricity.",
    "What time does the last train to Edinburgh leave tonight?",
]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="smoke mode: small shapes, 2 rounds")
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--sections", default="minilm,gemm,gemv,cnn", help="comma list of sections to run")
    p.add_argument("--json", metavar="OUT.json")
    p.add_argument("--peak-gops", type=float, default=None,
                   help="this machine's measured int8 peak for --threads (GOPS), e.g. from "
                        "ember_tests -tc='i8 VNNI benchmark*' --no-skip; default: nominal at "
                        "the listed clock")
    return p.parse_args(argv)


def cosine_rows(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    num = (a * b).sum(-1)
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return num / np.maximum(den, 1e-30)


def minilm_feeds(tokenizer, texts, length):
    tok = tokenizer.__class__.from_str(tokenizer.to_str())
    tok.enable_truncation(max_length=length)
    tok.enable_padding(length=length, pad_id=0, pad_token="[PAD]")
    enc = tok.encode_batch(list(texts))
    return {"input_ids": np.array([e.ids for e in enc], np.int64),
            "attention_mask": np.array([e.attention_mask for e in enc], np.int64),
            "token_type_ids": np.array([e.type_ids for e in enc], np.int64)}


def feeds_for(runner_inputs, feeds):
    names = {t.name for t in runner_inputs} if runner_inputs else feeds.keys()
    return {k: v for k, v in feeds.items() if k in names}


def section_minilm(args, out):
    import tokenizers
    from onnxruntime.quantization import quantize_dynamic

    import ember
    from ember import bench, hub

    path = hub.resolve("minilm-l6")
    tokenizer = tokenizers.Tokenizer.from_file(os.path.join(hub.model_folder("minilm-l6"), "tokenizer.json"))
    tmp = tempfile.mkdtemp(prefix="ember_bench_quant_")
    ort_q = os.path.join(tmp, "minilm_ort_int8.onnx")
    quantize_dynamic(path, ort_q)
    engines = {
        "ember fp32": ember.Engine(path, threads=args.threads),
        "ember int8": ember.Engine(path, threads=args.threads, quantize="int8"),
        # Like for like: quantize_dynamic quantizes every MatMul, ember's default keeps the
        # first (layer-0 Q/K/V) and last (layer-5 FFN down) float.
        "ember int8 all": ember.Engine(path, threads=args.threads, quantize=whole_model_config("int8")),
        "ember int4": ember.Engine(path, threads=args.threads, quantize="int4"),
    }
    ort = {"onnxruntime fp32": bench.ort_runner(path, args.threads, "onnxruntime fp32"),
           "onnxruntime int8": bench.ort_runner(ort_q, args.threads, "onnxruntime int8")}
    # accuracy on real sentences
    feeds16 = minilm_feeds(tokenizer, SENTENCES, 128)
    want = engines["ember fp32"].run(feeds16)["sentence_embedding"]
    acc = {}
    for label, eng in list(engines.items())[1:]:
        acc[label] = cosine_rows(eng.run(feeds16)["sentence_embedding"], want)
    ort_names = {o for o in ort["onnxruntime int8"](feeds16)}
    key = "sentence_embedding" if "sentence_embedding" in ort_names else sorted(ort_names)[0]
    acc["onnxruntime int8"] = cosine_rows(ort["onnxruntime int8"](feeds16)[key], want)
    print("\nMiniLM embedding cosine vs ember fp32 (16 real sentences, seq 128)")
    for label, c in acc.items():
        print(f"  {label:18s} mean {c.mean():.5f}  min {c.min():.5f}")
    # latency, batch 1 x 128
    feeds1 = minilm_feeds(tokenizer, SENTENCES[1:2], 128)
    runners = {label: eng.run for label, eng in engines.items() if label != "ember int4"}
    runners.update(ort)
    res = bench.compare(runners, feeds1, warmup=3, rounds=2 if args.quick else args.rounds)
    med = {k: v["median_s"] for k, v in res["engines"].items()}
    print(f"\nMiniLM 1x128 latency, {args.threads} threads (median ms; ratio to ember int8)")
    for label, t in med.items():
        print(f"  {label:18s} {t * 1e3:8.2f} ms  {t / med['ember int8']:.2f}x")
    for label in ("ember int8", "ember int8 all"):
        print(f"  {label} / onnxruntime int8 = {med[label] / med['onnxruntime int8']:.3f} "
              f"(target <= 0.8); / ember fp32 = {med[label] / med['ember fp32']:.3f} "
              f"(target <= 0.6)")
    out["minilm"] = {"median_ms": {k: v * 1e3 for k, v in med.items()},
                     "cosine": {k: {"mean": float(c.mean()), "min": float(c.min())} for k, c in acc.items()}}


def matmul_model(m_dim, k, n, seed=0):
    from onnx import TensorProto as T, helper as oh, numpy_helper as nh
    rng = np.random.default_rng(seed)
    w = nh.from_array(rng.standard_normal((k, n)).astype(np.float32), "W")
    g = oh.make_graph([oh.make_node("MatMul", ["x", "W"], ["y"], name="mm")], "mm",
                      [oh.make_tensor_value_info("x", T.FLOAT, [m_dim, k])],
                      [oh.make_tensor_value_info("y", T.FLOAT, [m_dim, n])], [w])
    return oh.make_model(g, opset_imports=[oh.make_opsetid("", 17)]).SerializeToString()


def whole_model_config(scheme, **kw):
    from ember.quantize import QuantConfig
    return QuantConfig(scheme=scheme, quantize_first_last=True, min_weight_elements=0, **kw)


def section_gemm(args, out):
    import ember
    from ember import bench

    size = 512 if args.quick else 2048
    model = matmul_model(size, size, size)
    x = np.random.default_rng(1).standard_normal((size, size)).astype(np.float32)
    runners = {"ember int8": ember.Engine(model, threads=args.threads, quantize=whole_model_config("int8")),
               "ember fp32": ember.Engine(model, threads=args.threads)}
    ops = [op for _, op in runners["ember int8"]._session.nodes()]
    assert ops == ["QMatMul"], ops
    calls = {k: e.run for k, e in runners.items()}
    try:
        # torch's int8 x int8 -> int32 GEMM on codes made ahead (no activation quantization).
        import torch
        torch.set_num_threads(args.threads)
        gen = torch.Generator().manual_seed(0)
        ta = torch.randint(-127, 128, (size, size), dtype=torch.int8, generator=gen)
        tb = torch.randint(-128, 128, (size, size), dtype=torch.int8, generator=gen)
        torch._int_mm(ta, tb)
        calls["torch _int_mm"] = lambda feeds: torch._int_mm(ta, tb)
    except Exception as e:  # no torch, or no CPU _int_mm in this build
        print(f"  (torch._int_mm skipped: {e})")
    res = bench.compare(calls, {"x": x}, warmup=2, rounds=2 if args.quick else args.rounds)
    from bench_gemm import cpu_mhz  # same directory: the script's own path is on sys.path
    mhz = cpu_mhz()
    # Nominal peaks at the listed clock (boost clocks run higher: ember_tests -tc='i8 VNNI
    # bench*' --no-skip measures the VNNI one). AVX2: 2 vpmaddwd/cycle x 16 MACs; AVX-512
    # VNNI: 2 vpdpbusd/cycle x 64 MACs (Zen 5 and Intel's two 512-bit FMA ports).
    from ember import _core
    isa = _core.cpu_isa()
    vnni = isa in ("avx512", "avx512bf16")
    macs = 2 * 64 if vnni else 2 * 16
    peak_name = "AVX-512 VNNI" if vnni else "AVX2 int16"
    peak = args.threads * macs * 2 * mhz / 1e3 if mhz else None  # GOPS
    kind = "nominal"
    if args.peak_gops:
        peak, kind = args.peak_gops, "measured"
    print(f"\nINT8 GEMM {size}^3, {args.threads} threads, ember ISA {isa} "
          f"(median; GOPS = 2MNK / t)")
    rows = {}
    for label, st in res["engines"].items():
        gops = 2 * size ** 3 / st["median_s"] / 1e9
        rows[label] = gops
        share = f"  {gops / peak:.0%} of the {kind} {peak_name} peak {peak:.0f}" \
            if peak and ("int8" in label or "_int_mm" in label) else ""
        print(f"  {label:13s} {st['median_s'] * 1e3:8.2f} ms  {gops:7.1f} GOPS{share}")
    out["gemm"] = {"size": size, "gops": rows, "peak_gops": peak, "peak": f"{kind} {peak_name}"}


def nbits_chain(layers, k, group, seed=0):
    """R MatMulNBits layers [1, K] -> [1, K] (symmetric, group-wise), written by ember.quantize."""
    from onnx import TensorProto as T, helper as oh, numpy_helper as nh

    from ember.quantize import quantize_model
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    for i in range(layers):
        inits.append(nh.from_array((rng.standard_normal((k, k)) / np.sqrt(k)).astype(np.float32), f"W{i}"))
        nodes.append(oh.make_node("MatMul", [f"h{i}", f"W{i}"], [f"h{i + 1}"], name=f"mm{i}"))
    g = oh.make_graph(nodes, "chain", [oh.make_tensor_value_info("h0", T.FLOAT, [1, k])],
                      [oh.make_tensor_value_info(f"h{layers}", T.FLOAT, [1, k])], inits)
    m = oh.make_model(g, opset_imports=[oh.make_opsetid("", 21)])
    q = quantize_model(m, whole_model_config("int4", group_size=group))
    nbytes = sum(nh.to_array(t).nbytes for t in q.graph.initializer)
    return q.SerializeToString(), nbytes


def section_gemv(args, out):
    import ember
    from ember import bench

    k, group = (1024, 128) if args.quick else (4096, 128)
    layers = 2 if args.quick else 16  # 16 x 8.4 MiB = 134 MiB of int4 weights: > 4x L3 (32 MiB)
    data, nbytes = nbits_chain(layers, k, group)
    eng = ember.Engine(data, threads=args.threads)
    ops = [op for _, op in eng._session.nodes()]
    assert set(ops) == {"Q4MatMul"}, ops
    x = {"h0": np.random.default_rng(2).standard_normal((1, k)).astype(np.float32)}
    res = bench.compare({"ember int4": eng.run}, x, warmup=2, rounds=2 if args.quick else args.rounds)
    t = res["engines"]["ember int4"]["median_s"]
    gbs = nbytes / t / 1e9
    from bandwidth import stream_read_gbs  # same directory: on sys.path
    bw, how = stream_read_gbs(args.threads)
    fp32_bytes = layers * k * k * 4
    print(f"\nINT4 GEMV, {layers} layers of {k}x{k} group {group}: {nbytes / 2**20:.1f} MiB of weights "
          f"({nbytes / fp32_bytes:.3f}x fp32)")
    print(f"  {t * 1e3:.2f} ms per run -> {gbs:.1f} GB/s; streaming read ({how}) {bw:.1f} GB/s; "
          f"{gbs / bw:.0%} of it (target >= 70%)")
    out["gemv"] = {"layers": layers, "k": k, "group": group, "weight_bytes": nbytes,
                   "bytes_vs_fp32": nbytes / fp32_bytes, "median_ms": t * 1e3, "gbs": gbs,
                   "stream_read_gbs": bw, "stream_read": how}


def section_cnn(args, out):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    import ember
    from ember import bench
    from bench_models import export_resnet

    tmp = tempfile.mkdtemp(prefix="ember_bench_cnn_")
    fp32, qdq = os.path.join(tmp, "resnet.onnx"), os.path.join(tmp, "resnet_qdq.onnx")
    size = export_resnet(fp32, args.quick)
    rng = np.random.default_rng(0)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter([{"image": rng.standard_normal((1, 3, size, size)).astype(np.float32)}
                               for _ in range(8)])

        def get_next(self):
            return next(self.feeds, None)

    quantize_static(fp32, qdq, Reader(), quant_format=QuantFormat.QDQ, per_channel=True)
    e8 = ember.Engine(qdq, threads=args.threads)
    e32 = ember.Engine(fp32, threads=args.threads)
    ops = collections.Counter(op for _, op in e8._session.nodes())
    x16 = rng.standard_normal((16, 3, size, size)).astype(np.float32)
    agree = float(np.mean(e8.run({"image": x16})["logits"].argmax(-1) ==
                          e32.run({"image": x16})["logits"].argmax(-1)))
    runners = {"ember int8": e8.run, "ember fp32": e32.run,
               "onnxruntime int8": bench.ort_runner(qdq, args.threads), "onnxruntime fp32": bench.ort_runner(fp32, args.threads)}
    res = bench.compare(runners, {"image": x16[:1]}, warmup=2, rounds=2 if args.quick else args.rounds)
    med = {k: v["median_s"] for k, v in res["engines"].items()}
    print(f"\nResNet-18-style 1x3x{size}x{size}, QDQ by onnxruntime.quantize_static, {args.threads} threads")
    print(f"  ember ops after passes: {dict(ops)}; fallbacks: {e8.quant_fallbacks}")
    for label, t in med.items():
        print(f"  {label:18s} {t * 1e3:8.2f} ms")
    print(f"  ember int8 / onnxruntime int8 = {med['ember int8'] / med['onnxruntime int8']:.3f}; "
          f"ember int8 / ember fp32 = {med['ember int8'] / med['ember fp32']:.3f}; "
          f"top-1 agreement with fp32 {agree:.0%} (random weights and images: a sanity check, "
          f"not an accuracy figure)")
    out["cnn"] = {"size": size, "median_ms": {k: v * 1e3 for k, v in med.items()}, "top1_agreement": agree,
                  "ops": dict(ops)}


def main(argv=None):
    args = parse_args(argv)
    from ember import bench
    out = {"machine": bench.machine_info(args.threads)}
    sections = {"minilm": section_minilm, "gemm": section_gemm, "gemv": section_gemv, "cnn": section_cnn}
    for name in args.sections.split(","):
        sections[name.strip()](args, out)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
