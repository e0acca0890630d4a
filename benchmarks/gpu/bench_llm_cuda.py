"""LLM prefill and decode on one GPU: ember.Engine(gguf, device="cuda") against ember on the CPU,
on random-weight GGUFs with real models' shapes (ember.llm.synthetic: SmolLM2-135M, a 1B LLaMA).
No rival runs on the device machine (no llama.cpp CUDA build, no vLLM), so the CPU engine on all
its cores is the baseline; correctness is the teacher-forced logprobs against it.

    PYTHONPATH=python python benchmarks/gpu/bench_llm_cuda.py [--presets smollm2-135m,llama-1b]
    PYTHONPATH=python python benchmarks/gpu/bench_llm_cuda.py --dry-run   # tiny, on a fake device

Per preset and engine: load s; prefill tok/s (one 512-token prompt, max_tokens=1, wall time of
generate); decode tok/s at batch 1 and 16 (32-token prompts, 64 new tokens each, ignore_eos:
new tokens / wall time of generate, the short prefill included); decode tok/s at a long context
("dec long": 32 new tokens after a 1024-token prompt, the time of the same-length prompt with
one token taken off); then the largest |logprob difference| over a 256-token text, GPU vs CPU.
A GPU row with any node on the CPU is refused.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def measure(ember, path, device, prompt_len, new_tokens, batches, long_len):
    """One engine's figures: dict of load_s, prefill, decode_b{B} (tok/s), fallbacks. Every
    engine gets the same prompts (a fixed seed)."""
    rng = np.random.default_rng(0)
    row = {"device": device}
    opts = dict(max_model_len=max(prompt_len, long_len, 256) + new_tokens + 64,
                max_num_seqs=max(batches))
    eng, row["load_s"] = timed(lambda: ember.Engine(path, device=device, **opts))
    with eng:
        vocab = 256  # byte tokens: every preset has them
        eng.generate([[1, 2, 3]], max_tokens=2)  # plans, kernels, caches warmed
        prompt = rng.integers(0, vocab, prompt_len).tolist()
        eng.generate([prompt[::-1]], max_tokens=1)  # the prompt's step shapes planned (no cache hit)
        _, dt = timed(lambda: eng.generate([prompt], max_tokens=1))
        row["prefill"] = prompt_len / dt
        for b in batches:
            prompts = [rng.integers(0, vocab, 32).tolist() for _ in range(b)]
            eng.generate([p[::-1] for p in prompts], max_tokens=2, ignore_eos=True)  # shapes planned
            out, dt = timed(lambda: eng.generate(prompts, max_tokens=new_tokens, ignore_eos=True))
            row[f"decode_b{b}"] = sum(len(o.token_ids) for o in out) / dt
        # Decode at a long context: two prompts of long_len (no prefix shared), one token from
        # the first, 1 + L from the second; the difference is L decode steps.
        first, second = (rng.integers(0, vocab, long_len).tolist() for _ in range(2))
        eng.generate([first[::-1]], max_tokens=2, ignore_eos=True)  # shapes planned
        _, t_one = timed(lambda: eng.generate([first], max_tokens=1))
        steps = 32
        _, t_more = timed(lambda: eng.generate([second], max_tokens=1 + steps, ignore_eos=True))
        row["decode_long"] = steps / max(t_more - t_one, 1e-9)
        text = " ".join(["the quick brown fox jumps over the lazy dog"] * 5)  # ~230 tokens
        row["logprobs"] = eng.score(text)["logprobs"][1:]
        row["fallbacks"] = list(eng.device_fallbacks)
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="the tiny preset on a fake device, no GPU")
    ap.add_argument("--presets", default="smollm2-135m,llama-1b")
    ap.add_argument("--device", default=None, help="ember's device (default cuda; fake_cuda dry)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--table", default=None)
    ap.add_argument("--time-limit", type=float, default=300)
    args = ap.parse_args(argv)
    import ember
    from ember.llm.synthetic import PRESETS, write_random_llama_gguf

    device = args.device or "cuda"
    presets, prompt_len, new_tokens, batches = args.presets.split(","), 512, 64, [1, 16]
    long_len = 1024
    if args.dry_run:
        import bench_cuda
        device = args.device or bench_cuda.register_fake_cuda()
        presets, prompt_len, new_tokens, batches, long_len = ["tiny"], 64, 8, [1, 4], 160
    if args.json is None and os.environ.get("OUT"):
        args.json = os.path.join(os.environ["OUT"], "bench_llm.json")
    deadline = time.monotonic() + args.time_limit
    rows, failures = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in presets:
            if time.monotonic() > deadline:
                failures[name] = "skipped: time limit"
                continue
            path, write_s = timed(lambda: write_random_llama_gguf(os.path.join(tmp, f"{name}.gguf"),
                                                                  **PRESETS[name]))
            for dev in (device, "cpu"):
                try:
                    r = measure(ember, path, dev, prompt_len, new_tokens, batches, long_len)
                except Exception as e:  # one engine's failure keeps the other's row
                    failures[f"{name} {dev}"] = f"{type(e).__name__}: {e}"
                    continue
                r.update(preset=name, write_s=write_s)
                rows.append(r)
            os.remove(path)
            print(f"-- {name} done", flush=True)
    text = table(rows, batches, device, failures)
    print(text, flush=True)
    if args.table:
        with open(args.table, "w") as f:
            f.write(text + "\n")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "failures": failures}, f, indent=1, default=str)
    return 1 if failures or any(r["fallbacks"] for r in rows) else 0


def table(rows, batches, device, failures):
    lines = [f"bench_llm_cuda: ember on {device} vs ember on the CPU; tok/s (higher is better); "
             "max|dlp|: largest logprob difference from the CPU over a 256-token text",
             f"{'preset':<14} {'device':<12} {'load s':>7} {'prefill':>9} " +
             " ".join(f"{'decode b' + str(b):>10}" for b in batches) +
             f" {'dec long':>9} {'max|dlp|':>9}  note"]
    cpu = {r["preset"]: r for r in rows if r["device"] == "cpu"}
    for r in rows:
        ref = cpu.get(r["preset"])
        dlp = None
        if ref is not None and r is not ref and len(ref["logprobs"]) == len(r["logprobs"]):
            dlp = float(np.max(np.abs(np.array(r["logprobs"]) - np.array(ref["logprobs"]))))
        note = ""
        if r["fallbacks"]:
            note = "REFUSED: on the CPU: " + ", ".join(f"{a} ({b})" for a, b in r["fallbacks"][:4])
        elif ref is not None and r is not ref:
            note = "x CPU: " + ", ".join(f"{r[k] / ref[k]:.1f}" for k in
                                         ["prefill"] + [f"decode_b{b}" for b in batches] +
                                         ["decode_long"])
        figures = " ".join(f"{r[f'decode_b{b}']:>10.1f}" for b in batches)
        figures += f" {r['decode_long']:>9.1f}"
        lines.append(f"{r['preset']:<14} {r['device']:<12} {r['load_s']:>7.2f} {r['prefill']:>9.1f} "
                     f"{figures} {dlp if dlp is not None else float('nan'):>9.4f}  {note}")
    lines += [f"{k}: {v}" for k, v in failures.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
