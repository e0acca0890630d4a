"""A GGUF LLM on a second device, without a GPU: fake devices (ember/device.h: their own memory
pool, the CPU's kernels, every cross-side read checked) place the step graph as a GPU engine
would. Where the device runs PagedAttention, the runner keeps the KV caches in its memory and
binds them there (llm/runner.cpp); where it does not, the caches stay on the host and so does
PagedAttention, which writes them in place (runtime/plan.cpp, stateful_on_device): run on the
device against host caches it would write a copy, and every later token would be wrong."""
from __future__ import annotations

import os
import re

import pytest

import ember
from ember import _core

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EVERY_OP = "fake-llm-every-op"
CUDA_OPS = "fake-llm-cuda-ops"    # exactly the CUDA backend's op list (cuda/src/registry.cpp)
NO_PAGED = "fake-llm-no-paged"    # the same without PagedAttention
PROMPTS = ["The capital of France is", "1, 2, 3,", "def fib(n):"]


def register():
    known = set(_core.op_names(fused=True))
    with open(os.path.join(ROOT, "cuda/src/registry.cpp")) as f:
        cuda = set(re.findall(r"\{OpType::(\w+),", f.read())) & known
    for name, ops in ((EVERY_OP, known), (CUDA_OPS, cuda), (NO_PAGED, cuda - {"PagedAttention"})):
        if name not in _core.device_names():
            _core.register_fake_device(name, sorted(ops))


@pytest.fixture(scope="module")
def gguf_path():
    from ember import hub
    return hub.resolve("smollm2-135m")


@pytest.fixture(scope="module")
def cpu_tokens(gguf_path):
    with ember.Engine(gguf_path, threads=2, max_model_len=256) as e:
        return [o.token_ids for o in e.generate(PROMPTS, max_tokens=24)]


@pytest.mark.parametrize("device", [EVERY_OP, CUDA_OPS, NO_PAGED])
def test_greedy_tokens_equal_the_cpu_engine(gguf_path, cpu_tokens, device):
    """The fake devices run the CPU's kernels, so a correct placement gives the CPU's tokens
    exactly, over 24 steps of a 3-sequence batch that read back what earlier steps cached."""
    register()
    with ember.Engine(gguf_path, device=device, threads=2, max_model_len=256) as e:
        got = [o.token_ids for o in e.generate(PROMPTS, max_tokens=24)]
        before = _core.fake_device_stats(device)
        again = [o.token_ids for o in e.generate(PROMPTS, max_tokens=24)]
        after = _core.fake_device_stats(device)
        fallbacks = e.device_fallbacks
    assert got == cpu_tokens and again == cpu_tokens
    # With the caches on the device no step uploads them: only token ids, metadata and the
    # embedding rows cross (without PagedAttention there, each layer's attention output does).
    if device != NO_PAGED:
        assert after["bytes_to_device"] - before["bytes_to_device"] < (1 << 20)
    ops = [op for _, op in fallbacks]
    if device == EVERY_OP:
        assert ops == []
    elif device == CUDA_OPS:
        assert ops == []  # the whole step graph has CUDA kernels
    else:
        assert ops.count("PagedAttention") == 30  # every layer's, with its host caches


def test_stream_and_score_run_on_the_device(gguf_path, cpu_tokens):
    register()
    with ember.Engine(gguf_path, device=CUDA_OPS, threads=2, max_model_len=256) as e:
        text = "".join(e.stream(PROMPTS[0], max_tokens=24))
        assert text == e.tokenizer.decode(cpu_tokens[0])
        score = e.score(PROMPTS[0] + text)  # its own caches, also in device memory
        assert e.device_fallbacks == []
    with ember.Engine(gguf_path, threads=2, max_model_len=256) as cpu:
        want = cpu.score(PROMPTS[0] + text)
    assert score["logprobs"] == want["logprobs"]


@pytest.mark.parametrize("kv_dtype", ["f16", "f32"])
def test_tiny_gguf_equals_the_cpu_on_a_device(tiny_llm_gguf, kv_dtype):
    """The synthetic model the GPU check runs (tests/cuda/test_cuda_llm.py): every op of its step
    graph has a CUDA kernel, and on the fake device its tokens are the CPU's."""
    register()
    opts = dict(threads=2, max_model_len=256, kv_dtype=kv_dtype)
    with ember.Engine(tiny_llm_gguf, **opts) as cpu:
        want = [o.token_ids for o in cpu.generate(PROMPTS, max_tokens=20)]
    with ember.Engine(tiny_llm_gguf, device=CUDA_OPS, **opts) as e:
        got = [o.token_ids for o in e.generate(PROMPTS, max_tokens=20)]
        assert e.device_fallbacks == []
    assert got == want
