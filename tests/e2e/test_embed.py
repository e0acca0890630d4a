"""Engine.embed: all-MiniLM-L6-v2 sentence embeddings vs the sentence-transformers recipe computed
with transformers (AutoTokenizer + AutoModel on the same folder, truncation at max_seq_length 256,
mean pooling over the attention mask, L2 normalisation); batch invariance; input checks; and
embed on engines that cannot embed (GGUF decoder, graph without a sentence-transformers folder).
"""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

import ember
from ember.errors import EmberError, InputError

COSINE_MIN = 0.9999
INVARIANCE_TOL = 1e-5
LONG = ("A sentence embedding maps text to a point in a vector space where similar meanings lie "
        "close together, so search and clustering become nearest-neighbour problems. ") * 20
TEXTS = [
    "a cat",
    "a dog sat on the mat",
    "The quick brown fox jumps over the lazy dog.",
    "   leading and trailing spaces   ",
    "Numbers like 3.14159 and 2.71828 split into several word pieces.",
    "Ünïcödé, 中文 and emoji 🙂 go through WordPiece too.",
    "",
    LONG,                               # well over 256 tokens: truncated at 256, not at 128
]


@pytest.fixture(scope="module")
def eng():
    with ember.Engine("minilm-l6", threads=2) as e:
        yield e


@pytest.fixture(scope="module")
def reference(minilm_folder):
    """sentence-transformers' encode, spelled out with transformers (float32, CPU)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    tok = transformers.AutoTokenizer.from_pretrained(minilm_folder)
    model = transformers.AutoModel.from_pretrained(minilm_folder).eval()
    texts = [t.strip() for t in TEXTS]
    enc = tok(texts, padding=True, truncation="longest_first", max_length=256, return_tensors="pt")
    assert enc["attention_mask"].sum(1).max().item() == 256       # LONG is truncated at 256
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, p=2, dim=1).numpy()


def _cosines(a, b):
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_matches_sentence_transformers_recipe(eng, reference):
    got = eng.embed(TEXTS)
    assert got.dtype == np.float32 and got.shape == (len(TEXTS), 384)
    assert np.isfinite(got).all()
    cos = _cosines(got, reference)
    assert cos.min() > COSINE_MIN, f"per-row cosine {np.round(cos, 6).tolist()}"
    np.testing.assert_allclose(np.linalg.norm(got.astype(np.float64), axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(got, reference, atol=1e-4)
    # Similar sentences lie closer than unrelated ones.
    assert got[0] @ got[1] > got[0] @ got[4]


def test_batch_invariance_and_order(eng):
    batched = eng.embed(TEXTS)
    small_batches = eng.embed(TEXTS, batch_size=3)
    alone = np.stack([eng.embed([t])[0] for t in TEXTS])
    assert np.abs(alone - batched).max() < INVARIANCE_TOL
    assert np.abs(small_batches - batched).max() < INVARIANCE_TOL
    # Order is the caller's, whatever order the batches ran in.
    rev = eng.embed(TEXTS[::-1], batch_size=2)
    assert np.abs(rev[::-1] - batched).max() < INVARIANCE_TOL


def test_str_empty_and_tuple(eng):
    one = eng.embed("a dog sat on the mat")
    assert one.shape == (384,) and one.dtype == np.float32
    assert np.abs(one - eng.embed(["a dog sat on the mat"])[0]).max() < INVARIANCE_TOL
    empty = eng.embed([])
    assert empty.shape == (0, 384) and empty.dtype == np.float32
    assert eng.embed(("a cat", "a dog")).shape == (2, 384)


@pytest.mark.parametrize("bad", [None, 3, b"bytes", ["ok", 5], [["nested"]], {"a": 1},
                                 ["bad surrogate \ud800"]])
def test_bad_texts_are_input_errors(eng, bad):
    with pytest.raises(InputError, match=r"\[embed\]"):
        eng.embed(bad)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "8"])
def test_bad_batch_size(eng, bad):
    with pytest.raises(InputError, match="batch_size"):
        eng.embed(["a cat"], batch_size=bad)


def test_onnx_beside_the_folder_and_without_one(minilm_folder, minilm_bert_onnx_path, tmp_path):
    # An .onnx file inside a sentence-transformers folder embeds like the known name.
    for name in ("tokenizer.json", "tokenizer_config.json", "config.json", "modules.json",
                 "sentence_bert_config.json"):
        shutil.copy(os.path.join(minilm_folder, name), tmp_path / name)
    shutil.copytree(os.path.join(minilm_folder, "1_Pooling"), tmp_path / "1_Pooling")
    shutil.copy(minilm_bert_onnx_path, tmp_path / "model.onnx")
    with ember.Engine(str(tmp_path / "model.onnx"), threads=2) as e:
        v = e.embed(["a cat", "a dog sat on the mat"])
    with ember.Engine("minilm-l6", threads=2) as named:
        assert np.abs(v - named.embed(["a cat", "a dog sat on the mat"])).max() < INVARIANCE_TOL
    # A bare graph (no sentence-transformers files beside it) cannot embed.
    with ember.Engine(minilm_bert_onnx_path, threads=2) as bare:
        with pytest.raises(EmberError, match="sentence-transformers config"):
            bare.embed(["a cat"])


def test_closed_engine():
    e = ember.Engine("minilm-l6", threads=2)
    e.close()
    with pytest.raises(EmberError, match="closed"):
        e.embed(["a cat"])


def test_gguf_llm_cannot_embed():
    from ember import hub
    try:
        path = hub.resolve("smollm2-135m")
    except EmberError as e:
        pytest.skip(f"smollm2-135m unavailable: {e}")
    with ember.Engine(path, threads=2, max_model_len=128, kv_cache_bytes=8 << 20) as e:
        with pytest.raises(EmberError, match="decoder"):
            e.embed(["a cat"])
