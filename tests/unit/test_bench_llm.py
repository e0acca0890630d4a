"""benchmarks/bench_llm.py without running a model: arguments, llama-bench JSON, the table."""

import importlib.util
import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def bl():
    spec = importlib.util.spec_from_file_location("bench_llm", os.path.join(ROOT, "benchmarks", "bench_llm.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def llama_entry(n_prompt, n_gen, samples):
    return {"build_commit": "abc1234", "build_number": 1, "cpu_info": "cpu", "backends": "CPU",
            "model_type": "llama ?B Q4_1", "model_size": 96600000, "n_threads": 2,
            "n_prompt": n_prompt, "n_gen": n_gen, "n_depth": 0, "type_k": "f16", "type_v": "f16",
            "avg_ns": 1, "stddev_ns": 0, "avg_ts": sum(samples) / len(samples), "stddev_ts": 1.0,
            "samples_ns": [1] * len(samples), "samples_ts": samples}


def test_arguments(bl):
    a = bl.parse_args([])
    assert a.threads == 2 and a.runs == 3 and a.sections == list(bl.SECTIONS)
    assert (a.gen, a.prompt, a.concurrency, a.conc_prompt, a.conc_gen, a.mem_ctx) == (128, 512, 16, 64, 64, 1024)
    a = bl.parse_args(["--sections", "memory,decode", "--threads", "4", "--runs", "1", "--json", "x.json"])
    assert a.sections == ["decode", "memory"] and a.threads == 4 and a.runs == 1 and a.json == "x.json"
    for bad in (["--sections", "decode,bogus"], ["--runs", "0"], ["--gen", "1"], ["--mem-ctx", "7"]):
        with pytest.raises(SystemExit):
            bl.parse_args(bad)


def test_llama_bench_json(bl):
    text = "some log line\n" + json.dumps([llama_entry(512, 0, [900.0, 1000.0, 950.0]),
                                          llama_entry(0, 128, [100.0, 90.0, 110.0]),
                                          llama_entry(512, 512, [200.0])])
    p = bl.parse_llama_bench_json(text)
    assert p[("pp", 512)]["median"] == 950.0 and p[("pp", 512)]["min"] == 900.0
    assert p[("tg", 128)]["median"] == 100.0 and p[("tg", 128)]["max"] == 110.0
    assert p[("pg", (512, 512))]["runs"] == 1
    assert p["_info"]["n_threads"] == 2
    with pytest.raises(ValueError):
        bl.parse_llama_bench_json("no json here")


def test_table(bl):
    s = bl.summary
    results = {"ember": {"decode_tps": s([150.0, 140.0, 160.0]), "decode_e2e_tps": s([120.0]),
                         "prefill_tps": s([1500.0]), "concurrent_tps": s([350.0]),
                         "concurrent_decode_tps": s([450.0]), "peak_rss_mb": 240.0,
                         "import_rss_mb": 60.0},
               "llama_cpp": {"llama_tg": s([100.0]), "llama_pp": s([1000.0]), "llama_rss_mb": 200.0}}
    rows = bl.build_rows(results, dict(gen=128, prompt=512, conc=16, ctx=1024))
    by = {r[0].strip(): r for r in rows}
    assert by["decode tok/s (batch 1, tg128, decode only)"][1:4] == ("150.0 [140.0-160.0]", "100.0", "1.50x")
    assert by["decode tok/s (batch 1, tg128, decode only)"][4].endswith("goal")
    assert by["prefill tok/s (pp512)"][3:] == ("1.50x", ">= 2x  MISS")
    assert by["16 concurrent, tok/s incl. prefill"][3] == "3.50x"
    assert by["16 concurrent, decode-only tok/s"][4] == ">= 4x  ok"
    assert by["peak RSS MB (ctx 1024)"][1:4] == ("240", "200", "1.20x") and by["peak RSS MB (ctx 1024)"][4].endswith("ok")
    table = bl.format_table(rows)
    assert table.splitlines()[0].split() == ["metric", "ember", "llama.cpp", "ratio", "target"]
    assert len(table.splitlines()) == len(rows) + 2
    # No rival: dashes, no verdicts.
    rows = bl.build_rows({"ember": results["ember"], "llama_cpp": {}}, dict(gen=128, prompt=512, conc=16, ctx=1024))
    assert all(r[2] == "-" and r[3] == "-" for r in rows)


def test_bandwidth_bound(bl):
    a = bl.parse_args([])
    b = bl.bandwidth_bounds(10.0, 100_000_000, 23040, a)
    assert b["decode_bound_tps"] == pytest.approx(10e9 / (100e6 + 23040 * 68))
    assert b["concurrent_bound_tps"] > b["decode_bound_tps"]


def test_llama_bench_missing(bl, tmp_path):
    assert bl.find_llama_bench("none")[0] is None
    path, note = bl.find_llama_bench(str(tmp_path / "nope"))
    assert path is None and "not found" in note


FAKE_LLAMA_BENCH = r'''#!/usr/bin/env python3
import json, sys
a = sys.argv[1:]
opt = lambda k, d: a[a.index(k) + 1] if k in a else d
p, n, pg, r = int(opt("-p", 512)), int(opt("-n", 128)), opt("-pg", None), int(opt("-r", 5))
ballast = bytearray(64 << 20)           # touched: ~64 MB of resident memory
for i in range(0, len(ballast), 4096):
    ballast[i] = 1
tests = ([(p, 0)] if p else []) + ([(0, n)] if n else []) + ([tuple(map(int, pg.split(",")))] if pg else [])
print(json.dumps([{"n_prompt": tp, "n_gen": tg, "n_depth": 0, "n_threads": int(opt("-t", 4)),
                   "avg_ts": 100.0, "stddev_ts": 0.0, "samples_ts": [100.0 + i for i in range(r)]}
                  for tp, tg in tests]))
'''


def test_llama_bench_subprocess_and_rss(bl, tmp_path):
    """The llama.cpp path against a stand-in binary that prints llama-bench's JSON."""
    fake = tmp_path / "llama-bench"
    fake.write_text(FAKE_LLAMA_BENCH)
    fake.chmod(0o755)
    assert bl.find_llama_bench(str(fake)) == (str(fake), None)
    parsed, rss, cmd = bl.llama_speed(str(fake), "m.gguf", 2, 3, 512, 128)
    assert cmd[:6] == [str(fake), "-m", "m.gguf", "-t", "2", "-p"] and "-o" in cmd
    assert parsed[("pp", 512)]["median"] == 101.0 and parsed[("tg", 128)]["runs"] == 3
    rss, cmd = bl.llama_rss(str(fake), "m.gguf", 2, 1024)
    assert "-pg" in cmd and cmd[cmd.index("-pg") + 1] == "512,512"
    assert 64 < rss < 400        # the child's own peak (ballast + interpreter), not this process's
