"""A/B of LLM decode speed between CPU ISA paths (EMBER_CPU_ISA), interleaved in one run.

    PYTHONPATH=python python benchmarks/ab_llm_isa.py [--isas avx2,avx512] [--rounds 8]
        [--model smollm2-135m] [--threads 2] [--concurrency 16] [--prompt 64] [--gen 64]

One worker process per ISA loads the model once; the driver then asks them in turn for one
measurement each round, so load from other processes on a shared machine hits every path alike.
A measurement is bench_llm.py's: decode-only tok/s by difference, t(gen tokens) - t(1 token) on
fresh distinct prompts, for `concurrency` requests at once and for one request (128 tokens).
Prints per ISA the median and [min-max] over the rounds, and the ratio of medians to the first.
"""
import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time


def worker(args):
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))
    import ember

    eng = ember.Engine(args.model, threads=args.threads, max_model_len=1024,
                       max_num_seqs=max(16, args.concurrency))
    rng = random.Random(os.getpid())
    prompt = lambda n: [rng.randrange(1000, 40000) for _ in range(n)]

    def timed(prompts, n):
        t0 = time.perf_counter()
        eng.generate(prompts, max_tokens=n, ignore_eos=True)
        return time.perf_counter() - t0

    timed([prompt(args.prompt) for _ in range(args.concurrency)], 2)  # warm-up: compiles plans
    timed(prompt(4), 2)
    for line in sys.stdin:
        c = args.concurrency
        t1 = timed([prompt(args.prompt) for _ in range(c)], 1)
        tn = timed([prompt(args.prompt) for _ in range(c)], args.gen)
        b1 = timed(prompt(4), 1)
        bn = timed(prompt(4), 128)
        print(json.dumps({"conc": c * (args.gen - 1) / (tn - t1), "single": 127 / (bn - b1)}),
              flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--isas", default="avx2,avx512")
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--prompt", type=int, default=64)
    p.add_argument("--gen", type=int, default=64)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    isas = args.isas.split(",")
    argv = [sys.executable, __file__, "--worker", "--model", args.model, "--threads",
            str(args.threads), "--concurrency", str(args.concurrency), "--prompt",
            str(args.prompt), "--gen", str(args.gen)]
    procs = {}
    for isa in isas:  # started one after the other: loading is not what is measured
        procs[isa] = subprocess.Popen(argv, env=dict(os.environ, EMBER_CPU_ISA=isa),
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    res = {isa: {"conc": [], "single": []} for isa in isas}
    for r in range(args.rounds):
        for isa in (isas if r % 2 == 0 else isas[::-1]):
            w = procs[isa]
            w.stdin.write("go\n")
            w.stdin.flush()
            m = json.loads(w.stdout.readline())
            for k, v in m.items():
                res[isa][k].append(v)
        print(f"round {r + 1}: " + ", ".join(
            f"{isa} {res[isa]['conc'][-1]:.0f} / {res[isa]['single'][-1]:.0f}" for isa in isas),
            flush=True)
    for w in procs.values():
        w.stdin.close()
        w.wait()
    base = {k: statistics.median(res[isas[0]][k]) for k in ("conc", "single")}
    for k, label in (("conc", f"{args.concurrency} concurrent, decode-only tok/s"),
                     ("single", "batch 1, decode-only tok/s (128 tokens)")):
        print(label)
        for isa in isas:
            v = res[isa][k]
            med = statistics.median(v)
            print(f"  {isa:8s} {med:7.1f} [{min(v):.1f}-{max(v):.1f}]  x{med / base[k]:.2f}")


if __name__ == "__main__":
    main()
