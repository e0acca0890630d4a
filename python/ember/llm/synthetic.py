"""Random-weight LLaMA GGUF files of a given shape: for tests and benchmarks where no model can
be downloaded (the GPU check machine has no package index). Needs the `gguf` package.

    from ember.llm.synthetic import write_random_llama_gguf, PRESETS
    write_random_llama_gguf("m.gguf", **PRESETS["smollm2-135m"])

The file: a Q8_0 token embedding tied to the output (Q8Gather and the Q8MatMul head), Q4_0 /
Q4_1 projections (Q4MatMul), F32 norms, and a byte-level vocabulary (256 bytes, <s>, </s>, one
merge "a b", fillers up to `vocab`)."""
from __future__ import annotations

import numpy as np

# Shapes of real models (random weights): the tiny test model, SmolLM2-135M, a 1B LLaMA.
PRESETS = {
    "tiny": dict(hidden=64, ffn=128, heads=4, kv_heads=2, layers=2, vocab=300),
    "smollm2-135m": dict(hidden=576, ffn=1536, heads=9, kv_heads=3, layers=30, vocab=49152),
    "llama-1b": dict(hidden=2048, ffn=8192, heads=32, kv_heads=8, layers=16, vocab=32000),
}


def write_random_llama_gguf(path, hidden=64, ffn=128, heads=4, kv_heads=2, layers=2, vocab=300,
                            context=2048, seed=0) -> str:
    import gguf
    from ember.llm.tokenizer import _BYTE_CHAR

    if vocab < 260 or hidden % heads or hidden % 32 or ffn % 32:
        raise ValueError("vocab >= 260; hidden a multiple of heads and of 32; ffn a multiple of 32")
    rng = np.random.default_rng(seed)
    qt = gguf.GGMLQuantizationType
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(layers)
    w.add_context_length(context)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_tokenizer_model("gpt2")
    # One merge ("a b" -> "ab", the last id): a byte-level BPE needs at least one.
    w.add_token_list([_BYTE_CHAR[b] for b in range(256)] + ["<s>", "</s>"] +
                     [f"<extra_{i}>" for i in range(258, vocab - 1)] + ["ab"])
    w.add_token_types([1] * 256 + [3] * (vocab - 257) + [1])
    w.add_token_merges(["a b"])
    w.add_bos_token_id(256)
    w.add_eos_token_id(257)

    def quantized(name, rows, cols, kind, scale):
        data = (rng.standard_normal((rows, cols), dtype=np.float32) * scale).astype(np.float32)
        w.add_tensor(name, gguf.quants.quantize(data, kind), raw_dtype=kind)

    def norm(name):
        w.add_tensor(name, (1.0 + 0.1 * rng.standard_normal(hidden)).astype(np.float32))

    # Scales that keep activations O(1) through the layers (random, so no meaning beyond that).
    sh, sf = 1.0 / np.sqrt(hidden), 1.0 / np.sqrt(ffn)
    quantized("token_embd.weight", vocab, hidden, qt.Q8_0, 0.1)  # logits ~ N(0, 0.01 hidden)
    kv = kv_heads * (hidden // heads)
    for i in range(layers):
        p = f"blk.{i}"
        norm(f"{p}.attn_norm.weight")
        quantized(f"{p}.attn_q.weight", hidden, hidden, qt.Q4_0, 2 * sh)
        quantized(f"{p}.attn_k.weight", kv, hidden, qt.Q4_1, 2 * sh)
        quantized(f"{p}.attn_v.weight", kv, hidden, qt.Q4_1, sh)
        quantized(f"{p}.attn_output.weight", hidden, hidden, qt.Q4_0, sh)
        norm(f"{p}.ffn_norm.weight")
        quantized(f"{p}.ffn_gate.weight", ffn, hidden, qt.Q4_1, sh)
        quantized(f"{p}.ffn_up.weight", ffn, hidden, qt.Q4_0, sh)
        quantized(f"{p}.ffn_down.weight", hidden, ffn, qt.Q4_1, sf)
    norm("output_norm.weight")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return str(path)
