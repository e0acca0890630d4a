"""Models written in torch, exported to ONNX with dynamic axes, run on ember vs onnxruntime.

- a GPT-2-style decoder (random weights): token + position embeddings, two pre-LN causal
  blocks whose mask is built from the runtime sequence length (tril + masked_fill in one block,
  a triu'd -inf matrix added in the other), GELU tanh-approximate in one block and erf in the
  other, final LayerNorm, LM head tied to the token embedding;
- an MLP (Linear, LayerNorm, ReLU, Linear, Sigmoid) with a dynamic batch;
- transformers' GPT2LMHeadModel with a tiny random config.
"""
from __future__ import annotations

import numpy as np
import pytest

from ember_e2e import (VOCAB, ExportedEngine, export_for_ember, gpt2_factory, max_abs_err,
                       mlp_factory, ort_run, ort_session, tiny_gpt_export)

TOL = 1e-4
DECODER_SHAPES = [(1, 1), (1, 7), (3, 33), (2, 128)]


@pytest.fixture(scope="module")
def decoder(export_dir):
    path, exporter, missing = tiny_gpt_export(export_dir)
    eng = ExportedEngine(path, exporter, missing, "tiny-gpt")
    yield eng, ort_session(path), exporter
    eng.close()


@pytest.fixture(scope="module")
def hf_gpt2(export_dir):
    import torch

    ids = torch.randint(0, 1000, (2, 9), generator=torch.Generator().manual_seed(0))
    dyn = {"input_ids": {0: "batch", 1: "seq"}, "logits": {0: "batch", 1: "seq"}}
    path, exporter, missing = export_for_ember(export_dir, "hf-gpt2-tiny", gpt2_factory, (ids,),
                                               ["input_ids"], ["logits"], dyn)
    eng = ExportedEngine(path, exporter, missing, "hf-gpt2-tiny")
    yield eng, ort_session(path), exporter
    eng.close()


def _check_logits(eng, sess, rng, batch, seq, vocab, what):
    ids = rng.integers(0, vocab, (batch, seq)).astype(np.int64)
    want = ort_run(sess, {"input_ids": ids})["logits"]
    got = eng.get().run({"input_ids": ids})["logits"]
    err = max_abs_err(got, want)
    print(f"{what} {batch}x{seq}: max abs err {err:.3g} (|logits| max {np.abs(want).max():.3g})")
    assert err < TOL
    return got


@pytest.mark.slow
@pytest.mark.parametrize("batch,seq", DECODER_SHAPES, ids=[f"{b}x{s}" for b, s in DECODER_SHAPES])
def test_decoder_matches_onnxruntime(decoder, rng, batch, seq):
    eng, sess, exporter = decoder
    _check_logits(eng, sess, rng, batch, seq, VOCAB, f"tiny-gpt ({exporter})")


@pytest.mark.slow
def test_decoder_is_causal(decoder, rng):
    """Changing a later token must not change earlier logits (the in-graph mask works)."""
    eng = decoder[0].get()
    ids = rng.integers(0, VOCAB, (1, 12)).astype(np.int64)
    a = eng.run({"input_ids": ids})["logits"]
    ids2 = ids.copy()
    ids2[0, 8:] = (ids2[0, 8:] + 1) % VOCAB
    b = eng.run({"input_ids": ids2})["logits"]
    np.testing.assert_allclose(a[:, :8], b[:, :8], rtol=0, atol=1e-6)
    assert not np.allclose(a[:, 8:], b[:, 8:])


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 5, 64])
def test_mlp_matches_onnxruntime(export_dir, rng, batch):
    import torch

    x = torch.randn(4, 32, generator=torch.Generator().manual_seed(0))
    path, exporter, missing = export_for_ember(
        export_dir, "mlp", mlp_factory, (x,), ["x"], ["y"], {"x": {0: "batch"}, "y": {0: "batch"}})
    feeds = {"x": rng.standard_normal((batch, 32)).astype(np.float32) * 2}
    want = ort_run(ort_session(path), feeds)["y"]
    eng = ExportedEngine(path, exporter, missing, "mlp")
    try:
        got = eng.get().run(feeds)["y"]
    finally:
        eng.close()
    err = max_abs_err(got, want)
    print(f"mlp ({exporter}) batch {batch}: max abs err {err:.3g}")
    assert err < TOL


@pytest.mark.slow
@pytest.mark.parametrize("batch,seq", [(1, 1), (1, 7), (3, 33)], ids=["1x1", "1x7", "3x33"])
def test_hf_gpt2_tiny_matches_onnxruntime(hf_gpt2, rng, batch, seq):
    eng, sess, exporter = hf_gpt2
    _check_logits(eng, sess, rng, batch, seq, 1000, f"hf-gpt2-tiny ({exporter})")
