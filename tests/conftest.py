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



@pytest.fixture(scope="session")
def tiny_llm_gguf(tmp_path_factory):
    """A 2-layer LLaMA GGUF with random weights (ember.llm.synthetic, preset "tiny": Q8_0
    embedding and head, Q4_0 / Q4_1 projections, grouped-query heads, a 300-token byte-level
    vocabulary), once a session: for tests that cannot fetch SmolLM2 (the GPU machine has no
    index). Needs the gguf and tokenizers packages."""
    pytest.importorskip("gguf")
    pytest.importorskip("tokenizers")
    from ember.llm.synthetic import PRESETS, write_random_llama_gguf
    return write_random_llama_gguf(tmp_path_factory.mktemp("tiny_llm") / "tiny.gguf", **PRESETS["tiny"])
