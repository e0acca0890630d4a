"""benchmarks/bench_serve.py without a server or a model: arguments, statistics, verdicts, the
table, Prometheus text and the KServe binary body."""

import argparse
import importlib.util
import json
import os

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def bs():
    path = os.path.join(ROOT, "benchmarks", "bench_serve.py")
    spec = importlib.util.spec_from_file_location("bench_serve", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_arguments(bs):
    a = bs.parse_args([])
    assert a.parts == list(bs.PARTS) and a.rounds == bs.FULL["rounds"]
    assert a.requests == bs.FULL["requests"] and a.max_tokens == 128 and a.streams == 32
    q = bs.parse_args(["--quick"])
    assert q.quick and q.rounds == bs.QUICK["rounds"] and q.max_tokens == bs.QUICK["max_tokens"]
    q = bs.parse_args(["--quick", "--rounds", "7", "--parts", "throughput,overhead"])
    assert q.rounds == 7 and q.parts == ["overhead", "throughput"]     # canonical order
    for bad in (["--parts", "nope"], ["--parts", ","], ["--rounds", "0"], ["--seq", "1"],
                ["--warmup", "-1"]):
        with pytest.raises(SystemExit):
            bs.parse_args(bad)
    with pytest.raises(argparse.ArgumentTypeError):
        bs.parse_parts("kserve,bogus")


def test_statistics_and_verdicts(bs):
    st = bs.latency_summary([[0.001, 0.003, 0.002], [0.004, 0.005]])
    assert st["median"] == pytest.approx(3.0) and st["n"] == 5
    assert st["round_min"] == pytest.approx(2.0) and st["round_max"] == pytest.approx(4.5)
    assert bs.latency_summary([]) is None and bs.summary([]) is None
    assert bs.summary([3, 1, 2])["median"] == 2.0
    assert bs.compare("overhead", 10.0, 11.5) == (1.5, "+1.50 ms")
    assert bs.verdict("overhead", 1.5) == "met" and bs.verdict("kserve", 2.5) == "MISSED"
    v, text = bs.compare("throughput", 200.0, 190.0)
    assert v == pytest.approx(0.95) and text == "0.950x" and bs.verdict("throughput", v) == "met"
    assert bs.verdict("throughput", 0.8) == "MISSED" and bs.verdict("throughput", None) == "-"
    assert bs.compare("kserve", None, 1.0) == (None, "-")


def test_rows_and_table(bs):
    lat = lambda ms: {"median": ms, "round_min": ms, "round_max": ms, "n": 4}
    results = {"overhead": {"inprocess": lat(10.0), "server": lat(13.0)},
               "throughput": {"inprocess": bs.summary([100, 110]), "server": bs.summary([99])}}
    rows = bs.build_rows(results, dict(seq=16, streams=32, max_tokens=128))
    assert [r[-1] for r in rows] == ["MISSED", "met"] and rows[0][3] == "+3.00 ms"
    assert rows[1][0].startswith("32 streams x 128 tokens") and results["throughput"]["verdict"] == "met"
    table = bs.format_table(rows).splitlines()
    assert len(table) == 4 and "target" in table[0]


def test_metric_value(bs):
    text = "\n".join([
        "# HELP ember_generation_tokens_total Tokens generated",
        "# TYPE ember_generation_tokens_total counter",
        'ember_generation_tokens_total{model="smollm2",version="1"} 96.0',
        'ember_generation_tokens_total{model="smollm2",version="2"} 4.0',
        'ember_generation_tokens_total{model="other",version="1"} 1000.0',
        'ember_generation_tokens_created{model="smollm2",version="1"} 1.7e9',
        'ember_prompt_tokens_total{model="smollm2",version="1"} 7.0',
    ])
    assert bs.metric_value(text, "ember_generation_tokens_total", model="smollm2") == 100.0
    assert bs.metric_value(text, "ember_generation_tokens_total") == 1100.0
    assert bs.metric_value(text, "ember_generation_tokens_total", model="none") == 0.0


def test_prompts_distinct(bs):
    p = bs.Prompts(0)
    a, b = p.take(32), p.take(32)
    firsts = {s.split()[0] for s in a + b}
    assert len(firsts) == 64 and bs.Prompts(0).take(32) == a


def test_kserve_binary_body(bs):
    feeds = bs.minilm_feeds(16, np)
    assert feeds["input_ids"].shape == (1, 16) and feeds["input_ids"][0, 0] == 101
    assert feeds["input_ids"][0, -1] == 102 and feeds["attention_mask"].sum() == 16
    body, n = bs.kserve_binary_body(feeds)
    head = json.loads(body[:n])
    assert head["parameters"] == {"binary_data_output": True}
    assert [i["name"] for i in head["inputs"]] == ["input_ids", "attention_mask", "token_type_ids"]
    assert len(body) == n + 3 * 16 * 8
    ids = np.frombuffer(body[n:n + 128], np.int64).reshape(1, 16)
    np.testing.assert_array_equal(ids, feeds["input_ids"])
