"""Whole models on the GPU against the CPU engine: the BERT-like encoder and the ResNet-18-style
CNN that benchmarks/gpu/bench_cuda.py times (same torch modules, exported with the TorchScript
exporter, random weights), at small sizes. fp32 is tight (cuBLASLt's plain FP32, no TF32: only
summation order differs); fp16 / bf16 (tensor-core matmuls and attention, fp32 tensors) are
judged by relative L2 error. Every node must run on the device, but the ops listed below whose
CUDA kernels are not in every build yet.
"""
import importlib.util
import os

import numpy as np
import pytest

import ember

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not ember.cuda.is_available(), reason="no CUDA device"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]  # TorchScript exporter

torch = pytest.importorskip("torch")

# ||device - cpu|| / ||cpu||: fp16 rounds matmul and attention inputs to 11 bits, bf16 to 8.
REL_L2 = {"fp16": 1e-2, "bf16": 5e-2}

BERT = dict(vocab=100, layers=2, hidden=64, heads=4, ffn=128)
RESNET = dict(size=32, widths=(8, 16, 16, 32))


def _bench():
    path = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "gpu", "bench_cuda.py")
    spec = importlib.util.spec_from_file_location("bench_cuda", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return _bench()


@pytest.fixture(scope="module")
def bert_onnx(bench):
    return bench.bert_onnx(BERT)[1]


@pytest.fixture(scope="module")
def resnet_onnx(bench):
    return bench.resnet_onnx(RESNET)[1]


def rel_l2(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return np.linalg.norm(got - want) / np.linalg.norm(want)


def check(got, want, precision):
    assert got.shape == want.shape and got.dtype == want.dtype == np.float32
    assert np.isfinite(got).all()
    if precision == "fp32":
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    else:
        err = rel_l2(got, want)
        assert err < REL_L2[precision], f"{precision}: relative L2 error {err:.2e}"


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_bert_like_encoder(bench, bert_onnx, rng, precision):
    dev = ember.Engine(bert_onnx, device="cuda", precision=precision)
    cpu = ember.Engine(bert_onnx)
    for batch, seq in ((2, 16), (3, 7)):          # a second plan: odd sequence, padded rows
        feeds = bench.bert_feeds(rng, batch=batch, seq=seq, **BERT)
        ops = [n[1] for n in dev.plan_info(feeds)["nodes"] if n[2] != "folded"]
        assert ops.count("Attention") == BERT["layers"] and "Softmax" not in ops, ops
        got = dev.run(feeds)["last_hidden_state"]
        assert dev.device_fallbacks == []
        check(got, cpu.run(feeds)["last_hidden_state"], precision)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_resnet_like_cnn(resnet_onnx, rng, precision):
    dev = ember.Engine(resnet_onnx, device="cuda", precision=precision)
    cpu = ember.Engine(resnet_onnx)
    for batch in (2, 1):
        x = rng.standard_normal((batch, 3, RESNET["size"], RESNET["size"])).astype(np.float32)
        got = dev.run({"pixels": x})["logits"]
        assert dev.device_fallbacks == []
        check(got, cpu.run({"pixels": x})["logits"], precision)
