"""Gated rollout on a real model: MiniLM against itself passes with cosine 1.0; a copy with one
large initializer (the word embeddings) scaled by 1.5 fails on cosine; the same through
`ember validate`'s code path with a JSON report. The LLM half: SmolLM2 against itself."""
from __future__ import annotations

import json

import numpy as np
import pytest

import ember
from ember import cli_validate
from ember.rollout import ValidationLimits, compare_models
from ember_e2e import tokenize

TEXTS = ["A man is playing a guitar on stage.", "The new movie is awesome.",
         "Stocks fell sharply after the announcement.", "How do I bake sourdough bread?",
         "The cat sleeps on the warm windowsill.", "Quantum computers use qubits.",
         "It rained all weekend in Seattle.", "She scored the winning goal in overtime."] * 2


@pytest.fixture(scope="module")
def minilm():
    with ember.Engine("minilm-l6") as eng:
        yield eng


@pytest.fixture(scope="module")
def feeds(minilm_tokenizer):
    ids, mask, types = tokenize(minilm_tokenizer, TEXTS, 32)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


@pytest.fixture(scope="module")
def perturbed_path(tmp_path_factory):
    import onnx
    from onnx import numpy_helper

    from ember import hub
    model = onnx.load(hub.resolve("minilm-l6"))
    big = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    assert int(np.prod(big.dims)) > 1_000_000, big.name
    big.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(big) * np.float32(1.5), big.name))
    path = tmp_path_factory.mktemp("validate") / "perturbed.onnx"
    onnx.save(model, str(path))
    return path


def test_minilm_against_itself_passes(minilm, feeds):
    r = compare_models(minilm, minilm, feeds, ValidationLimits(batch_size=8), runs=3)
    assert r.passed, r.text()
    rows = {row["metric"]: row for row in r.rows}
    for out in ("last_hidden_state", "sentence_embedding"):
        assert rows[f"{out} cosine (min)"]["value"] == pytest.approx(1.0, abs=1e-6)
        assert rows[f"{out} max abs diff"]["value"] == 0.0
    mem = rows["memory MiB"]
    assert 80 < mem["candidate"] == mem["baseline"] < 200, mem   # ~86 MiB of fp32 weights
    assert rows["latency ms (16 rows)"]["candidate"] > 0


def test_minilm_perturbed_fails_on_cosine(minilm, feeds, perturbed_path, tmp_path):
    with ember.Engine(str(perturbed_path)) as cand:
        r = compare_models(cand, minilm, feeds, runs=0)
    # per-token states move most (~0.93); the pooled, normalised embedding less (~0.99)
    assert any(f.startswith("min_cosine: last_hidden_state cosine (min)") for f in r.failures), \
        r.text()
    row = next(row for row in r.rows if row["metric"] == "last_hidden_state cosine (min)")
    assert 0.5 < row["value"] < 0.98

    np.savez(tmp_path / "data.npz", **feeds)                 # the command, same verdict
    code = cli_validate.main([str(perturbed_path), "--baseline", "minilm-l6", "--data",
                              str(tmp_path / "data.npz"), "--runs", "1", "--json",
                              str(tmp_path / "r.json")])
    report = json.loads((tmp_path / "r.json").read_text())
    assert code == 1 and not report["passed"]
    assert any(f.startswith("min_cosine:") for f in report["failures"])


def test_llm_against_itself_passes():
    with ember.Engine("smollm2-135m") as a, ember.Engine("smollm2-135m") as b:
        r = compare_models(b, a, TEXTS[:4], ValidationLimits(max_latency_ratio=None), runs=1)
    assert r.passed, r.text()
    rows = {row["metric"]: row for row in r.rows}
    assert rows["perplexity"]["value"] == pytest.approx(1.0, abs=1e-6)
    assert 1 < rows["perplexity"]["candidate"] < 1000
    assert rows["greedy token agreement (16 tokens)"]["value"] == 1.0
