"""Shared fixtures: a per-test random generator with a printed seed, and a one-node model builder
(`make_model`).

Every run draws fresh random data. The session seed comes from EMBER_TEST_SEED when set, else
from the clock and pid; each test's generator is seeded from (session seed, test id), so
`EMBER_TEST_SEED=<seed> pytest <that test>` replays the failing data exactly.
"""
from __future__ import annotations

import os
import time
import zlib

import numpy as np
import pytest

SEED = int(os.environ.get("EMBER_TEST_SEED") or (time.time_ns() ^ (os.getpid() << 16)) % 2**32)


def pytest_report_header(config):
    return f"ember test seed: {SEED} (replay with EMBER_TEST_SEED={SEED})"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        report.sections.append(("ember seed", f"EMBER_TEST_SEED={SEED} pytest '{item.nodeid}'"))


def rng_for(nodeid: str) -> np.random.Generator:
    """The generator a test with this id gets (also usable outside fixtures)."""
    return np.random.default_rng([SEED, zlib.crc32(nodeid.encode())])


@pytest.fixture
def rng(request) -> np.random.Generator:
    """Fresh random data each run, reproducible per test from the printed seed."""
    return rng_for(request.node.nodeid)


@pytest.fixture(scope="session")
def seed() -> int:
    return SEED


def build_model(op, inputs, outputs, attrs=None, opset=18, initializers=None, infer_types=True):
    """A one-node onnx.ModelProto.

    inputs: graph inputs as (name, numpy dtype, shape) or names of `initializers`; "" for an
      absent optional input. outputs: output names ("" for an unused optional output).
    initializers: {name: np.ndarray}. Output types come from ONNX shape inference when it can
    infer them (exporters write them), else the outputs are left untyped.
    """
    from onnx import helper, numpy_helper

    initializers = initializers or {}
    node_inputs, graph_inputs = [], []
    for spec in inputs:
        if isinstance(spec, str):
            node_inputs.append(spec)
            continue
        name, dtype, shape = spec
        node_inputs.append(name)
        graph_inputs.append(helper.make_tensor_value_info(
            name, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), list(shape)))
    node = helper.make_node(op, node_inputs, list(outputs), name=f"{op.lower()}_0", **(attrs or {}))
    graph = helper.make_graph(
        [node], f"{op.lower()}_test", graph_inputs,
        [helper.make_empty_tensor_value_info(o) for o in outputs if o],
        initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in initializers.items()])
    return finish_model(graph, opset, infer_types)


def finish_model(graph, opset=18, infer_types=True):
    """onnx graph -> ModelProto at `opset`, with inferred output types where ONNX can infer them."""
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="ember-tests")
    if infer_types:
        try:
            inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        except Exception:  # noqa: BLE001 - untyped outputs are legal ONNX too
            return model
        g = inferred.graph
        known = {vi.name: vi for vi in list(g.value_info) + list(g.output)}
        for out in model.graph.output:
            vi = known.get(out.name)
            if vi is not None and vi.type.tensor_type.elem_type:
                out.CopyFrom(vi)
    return model


@pytest.fixture(scope="session")
def finish_model_fn():
    """finish_model as a fixture (multi-node graphs): finish_model_fn(graph, opset)."""
    return finish_model


@pytest.fixture(scope="session")
def make_model():
    """build_model as a fixture: make_model(op, inputs, outputs, attrs, opset, initializers)."""
    return build_model



def write_tiny_llm_gguf(path, seed=0):
    """A 2-layer LLaMA GGUF with random weights: a Q8_0 token embedding tied to the output (so
    Q8Gather and the Q8MatMul head), Q4_0 / Q4_1 projections (Q4MatMul), F32 norms, grouped-query
    heads (4 over 2, head_dim 16), and a byte-level vocabulary of 300 tokens (256 bytes, <s>,
    </s>, fillers, one merge). For tests that cannot fetch SmolLM2 (the GPU machine has no index)."""
    import gguf
    from ember.llm.tokenizer import _BYTE_CHAR

    rng = np.random.default_rng(seed)
    qt = gguf.GGMLQuantizationType
    hidden, ffn, heads, kv_heads, layers, vocab = 64, 128, 4, 2, 2, 300
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(layers)
    w.add_context_length(512)
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

    def quantized(name, rows, cols, kind, scale=0.2):
        data = (rng.standard_normal((rows, cols)) * scale).astype(np.float32)
        w.add_tensor(name, gguf.quants.quantize(data, kind), raw_dtype=kind)

    def norm(name):
        w.add_tensor(name, (1.0 + 0.1 * rng.standard_normal(hidden)).astype(np.float32))

    quantized("token_embd.weight", vocab, hidden, qt.Q8_0, 1.0)
    kv = kv_heads * hidden // heads
    for i in range(layers):
        p = f"blk.{i}"
        norm(f"{p}.attn_norm.weight")
        quantized(f"{p}.attn_q.weight", hidden, hidden, qt.Q4_0)
        quantized(f"{p}.attn_k.weight", kv, hidden, qt.Q4_1)
        quantized(f"{p}.attn_v.weight", kv, hidden, qt.Q4_1)
        quantized(f"{p}.attn_output.weight", hidden, hidden, qt.Q4_0)
        norm(f"{p}.ffn_norm.weight")
        quantized(f"{p}.ffn_gate.weight", ffn, hidden, qt.Q4_1)
        quantized(f"{p}.ffn_up.weight", ffn, hidden, qt.Q4_0)
        quantized(f"{p}.ffn_down.weight", hidden, ffn, qt.Q4_1)
    norm("output_norm.weight")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return str(path)


@pytest.fixture(scope="session")
def tiny_llm_gguf(tmp_path_factory):
    """write_tiny_llm_gguf's file, once a session (needs the gguf and tokenizers packages)."""
    pytest.importorskip("gguf")
    pytest.importorskip("tokenizers")
    return write_tiny_llm_gguf(tmp_path_factory.mktemp("tiny_llm") / "tiny.gguf")
