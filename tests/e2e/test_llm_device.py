"""A GGUF LLM on a second device, without a GPU: fake devices (ember/device.h: their own memory
pool, the CPU's kernels, every cross-side read checked) place the step graph as a GPU engine
would. The KV caches are bound in host memory, so PagedAttention, which writes them in place,
must stay on the CPU (runtime/plan.cpp, stateful_on_device) even on a device that has a kernel
for it: on the device it would write a copy, and every later token would be wrong."""
from __future__ import annotations

import os
import re

import pytest

import ember
from ember import _core

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EVERY_OP = "fake-llm-every-op"
CUDA_OPS = "fake-llm-cuda-ops"  # exactly the CUDA backend's op list (cuda/src/registry.cpp)
PROMPTS = ["The capital of France is", "1, 2, 3,", "def fib(n):"]


def register():
    known = set(_core.op_names(fused=True))
    if EVERY_OP not in _core.device_names():
        _core.register_fake_device(EVERY_OP, sorted(known))
    if CUDA_OPS not in _core.device_names():
        with open(os.path.join(ROOT, "cuda/src/registry.cpp")) as f:
            ops = set(re.findall(r"\{OpType::(\w+),", f.read()))
        _core.register_fake_device(CUDA_OPS, sorted(ops & known))


@pytest.fixture(scope="module")
def gguf_path():
    from ember import hub
    return hub.resolve("smollm2-135m")


@pytest.fixture(scope="module")
def cpu_tokens(gguf_path):
    with ember.Engine(gguf_path, threads=2, max_model_len=256) as e:
        return [o.token_ids for o in e.generate(PROMPTS, max_tokens=24)]


@pytest.mark.parametrize("device", [EVERY_OP, CUDA_OPS])
def test_greedy_tokens_equal_the_cpu_engine(gguf_path, cpu_tokens, device):
    """The fake devices run the CPU's kernels, so a correct placement gives the CPU's tokens
    exactly, over 24 steps of a 3-sequence batch that read back what earlier steps cached."""
    register()
    with ember.Engine(gguf_path, device=device, threads=2, max_model_len=256) as e:
        got = [o.token_ids for o in e.generate(PROMPTS, max_tokens=24)]
        fallbacks = e.device_fallbacks
    assert got == cpu_tokens
    ops = {op for _, op in fallbacks}
    assert "PagedAttention" in ops  # its caches are on the host, wherever a kernel exists
    n_layers = sum(1 for _, op in fallbacks if op == "PagedAttention")
    assert n_layers == 30
    if device == EVERY_OP:
        assert ops == {"PagedAttention"}
    else:
        assert "Q4MatMul" not in ops and "RMSNormalization" not in ops and "Rope" not in ops


def test_stream_and_score_run_on_the_device(gguf_path, cpu_tokens):
    register()
    with ember.Engine(gguf_path, device=CUDA_OPS, threads=2, max_model_len=256) as e:
        text = "".join(e.stream(PROMPTS[0], max_tokens=24))
        assert text == e.tokenizer.decode(cpu_tokens[0])
        score = e.score(PROMPTS[0] + text)
    with ember.Engine(gguf_path, threads=2, max_model_len=256) as cpu:
        want = cpu.score(PROMPTS[0] + text)
    assert score["perplexity"] == pytest.approx(want["perplexity"], rel=1e-6)
