"""A GGUF LLM on the GPU (ember.Engine(gguf, device="cuda")): the synthetic 2-layer LLaMA of
tests/conftest.py (tiny_llm_gguf: Q8_0 embedding and head, Q4_0 / Q4_1 projections,
grouped-query heads), whose step graph runs wholly on CUDA kernels: Q8Gather, Q4MatMul,
RMSNorm, Rope, PagedAttention over KV caches in device memory, SwiGLU, Q8MatMul.

Against the CPU engine: teacher-forced logprobs (score runs the step graph with KV caches of
its own in device memory, so the GPU's PagedAttention runs) within the fp16 rounding Q4MatMul
gives its activations, and with deterministic=True a sequence's tokens do not depend on the batch it
runs in. On the GPU alone: decode past 512 keys (PagedAttention's spread parts) against score()
of the same tokens (its tensor-core prefill). tests/e2e/test_llm_device.py runs the same model on a fake device without a GPU."""
import numpy as np
import pytest

import ember

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not ember.cuda.is_available(), reason="no CUDA device")]

PROMPTS = ["hello world", "a b c d e f", "The quick brown fox"]
TEXTS = ["hello world, this is a test of the tiny model", "abababab 12345 xyz"]


def close(got, want):
    """Teacher-forced logprobs of one text: the random model's are large (|lp| up to ~30), and
    Q4MatMul rounds its activations to fp16 on the GPU (the CPU keeps ~int16 precision)."""
    g, w = np.array(got["logprobs"][1:]), np.array(want["logprobs"][1:])
    np.testing.assert_allclose(g, w, rtol=0.02, atol=0.05)
    assert abs(np.log(got["perplexity"]) - np.log(want["perplexity"])) < 0.05


@pytest.mark.parametrize("kv_dtype", ["f16", "f32"])
def test_logprobs_match_the_cpu(tiny_llm_gguf, kv_dtype):
    opts = dict(threads=2, max_model_len=256, kv_dtype=kv_dtype)
    with ember.Engine(tiny_llm_gguf, **opts) as cpu:
        want = cpu.score(TEXTS)
    with ember.Engine(tiny_llm_gguf, device="cuda", **opts) as gpu:
        got = gpu.score(TEXTS)
        out = gpu.generate(PROMPTS, max_tokens=16)
        assert gpu.device_fallbacks == []
    for g, w in zip(got, want):
        assert g["token_ids"] == w["token_ids"]
        close(g, w)
    assert all(len(o.token_ids) == 16 and all(0 <= t < 300 for t in o.token_ids) for o in out)


def test_deterministic_tokens_do_not_depend_on_the_batch(tiny_llm_gguf):
    with ember.Engine(tiny_llm_gguf, device="cuda", deterministic=True, threads=2, max_model_len=256) as e:
        batch = [o.token_ids for o in e.generate(PROMPTS, max_tokens=24)]
        alone = [e.generate(p, max_tokens=24)[0].token_ids for p in PROMPTS]
        again = [o.token_ids for o in e.generate(PROMPTS, max_tokens=24)]
    assert batch == alone == again


def test_long_context_decode_crosses_attention_chunks(tiny_llm_gguf):
    """A prompt past PagedAttention's 128-key chunks and many 16-slot cache blocks."""
    text = " ".join(["abc"] * 120)
    with ember.Engine(tiny_llm_gguf, threads=2, max_model_len=512) as cpu:
        want = cpu.score(text)
    with ember.Engine(tiny_llm_gguf, device="cuda", threads=2, max_model_len=512) as gpu:
        got = gpu.score(text)
        assert gpu.device_fallbacks == []
    assert len(got["token_ids"]) > 300
    close(got, want)


def test_decode_past_512_keys_agrees_with_scoring(tiny_llm_gguf):
    """Greedy decode after a 600-token prompt: at batch 1 PagedAttention spreads each context over
    512-key parts, merged by the last block to finish; score() of the same tokens runs them as
    prefill chunks on tensor cores. The generated tokens' logprobs agree within fp16 rounding."""
    prompt = [(7 * i) % 250 + 3 for i in range(600)]  # byte tokens of the tiny vocabulary
    with ember.Engine(tiny_llm_gguf, device="cuda", threads=2, max_model_len=1024) as gpu:
        out = gpu.generate(prompt, max_tokens=16, logprobs=0, ignore_eos=True)[0]
        scored = gpu.score([prompt + out.token_ids])[0]
        assert gpu.device_fallbacks == []
    assert len(out.token_ids) == 16
    np.testing.assert_allclose(np.array(out.logprobs, dtype=float),
                               np.array(scored["logprobs"][len(prompt):]), rtol=0.02, atol=0.05)
