"""Sentence embeddings from an encoder graph, the way sentence-transformers computes them.

An `Embedder` reads a sentence-transformers checkpoint folder (tokenizer.json; modules.json;
sentence_bert_config.json; the Pooling module's config.json) and turns texts into pooled,
optionally L2-normalised float32 vectors by running an encoder graph through a `run(feeds,
outputs)` callable (Engine.run).

What it does, following `SentenceTransformer.encode`:
  * texts are stripped (and lower-cased when sentence_bert_config says do_lower_case), tokenized
    with the folder's tokenizer, truncated to max_seq_length (sentence_bert_config.json; else
    min(max_position_embeddings, model_max_length)), never longer than the model's positions;
  * batches of `batch_size` texts, sorted by token count so each batch pads little, padded to
    its longest row; results come back in the input order;
  * pooling is computed here, in numpy, from the graph's token-level output (last_hidden_state or
    token_embeddings) over each row's real tokens only, so the padding a batch adds cannot change
    a row's numbers beyond the kernels' own rounding; modes cls / mean / max / mean_sqrt_len /
    weightedmean / lasttoken, concatenated in sentence-transformers' order when several are on;
  * then L2 normalisation (x / max(||x||, 1e-12)) when modules.json lists a Normalize module.
A graph that exposes only a pooled output (rank 2, e.g. "sentence_embedding") is used as is.

`embed(str)` returns a 1-D [dim] array; `embed(list of str)` returns [n, dim] (an empty list gives
shape (0, dim)).
"""
from __future__ import annotations

import json
import os
from typing import Callable, Sequence

import numpy as np

from ember.errors import EmberError, InputError, ModelError

__all__ = ["Embedder", "find_st_folder", "is_st_folder"]

TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
TOKEN_OUTPUTS = ("token_embeddings", "last_hidden_state")
POOLED_OUTPUTS = ("sentence_embedding", "pooler_output")
# sentence_transformers.models.Pooling: config key -> mode, in the order forward() concatenates.
POOLING_KEYS = (("pooling_mode_cls_token", "cls"), ("pooling_mode_max_tokens", "max"),
                ("pooling_mode_mean_tokens", "mean"), ("pooling_mode_mean_sqrt_len_tokens", "mean_sqrt_len"),
                ("pooling_mode_weightedmean_tokens", "weightedmean"), ("pooling_mode_lasttoken", "lasttoken"))
_KNOWN_MODULES = ("Transformer", "Pooling", "Normalize")


def is_st_folder(folder) -> bool:
    """True when `folder` holds a tokenizer.json and a sentence-transformers head description
    (modules.json, or a 1_Pooling/config.json)."""
    if not folder or not os.path.isdir(folder):
        return False
    return os.path.isfile(os.path.join(folder, "tokenizer.json")) and (
        os.path.isfile(os.path.join(folder, "modules.json"))
        or os.path.isfile(os.path.join(folder, "1_Pooling", "config.json")))


def find_st_folder(source) -> str | None:
    """The sentence-transformers folder that goes with what an Engine was created from: a known
    encoder name (its checkpoint folder), a folder, or an .onnx file (the folder it lies in)."""
    if source is None:
        return None
    source = os.fspath(source)
    if os.path.isdir(source):
        return source if is_st_folder(source) else None
    if os.path.isfile(source):          # model.onnx beside the files, or in an onnx/ subfolder
        folder = os.path.dirname(os.path.abspath(source))
        return next((f for f in (folder, os.path.dirname(folder)) if is_st_folder(f)), None)
    from ember import hub
    spec = hub.KNOWN_MODELS.get(source.strip().lower())
    if spec is None or "folder" not in spec:
        return None
    folder = hub.model_folder(source)
    return folder if is_st_folder(folder) else None


def _read_json(path, what, default=None):
    if not os.path.isfile(path):
        return default
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as e:
        raise ModelError(f"[embed] {path}: cannot read {what}: {e}") from None
    except ValueError as e:
        raise ModelError(f"[embed] {path}: {what} is not valid JSON: {e}") from None


def _sub_path(folder, sub, where):
    sub = str(sub or "")
    if os.path.isabs(sub) or ".." in sub.replace("\\", "/").split("/"):
        raise ModelError(f"[embed] {where}: module path {sub!r} leaves the folder")
    return os.path.join(folder, sub)


def _st_head(folder):
    """-> (pooling modes, normalize, pooling config path or None) from modules.json."""
    modules_path = os.path.join(folder, "modules.json")
    modules = _read_json(modules_path, "modules list")
    if modules is None:             # no modules.json: Transformer + 1_Pooling, no Normalize
        pool_dir, normalize = os.path.join(folder, "1_Pooling"), False
    else:
        if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
            raise ModelError(f"[embed] {modules_path}: expected a list of module objects")
        pool_dir, normalize = None, False
        for m in modules:
            kind = str(m.get("type", "")).rsplit(".", 1)[-1]
            if kind not in _KNOWN_MODULES:
                raise ModelError(f"[embed] {modules_path}: module {m.get('type')!r} is not "
                                 f"supported (only {', '.join(_KNOWN_MODULES)})")
            if kind == "Pooling":
                pool_dir = _sub_path(folder, m.get("path"), modules_path)
            elif kind == "Normalize":
                normalize = True
        if pool_dir is None:
            raise ModelError(f"[embed] {modules_path}: no Pooling module")
    cfg_path = os.path.join(pool_dir, "config.json")
    cfg = _read_json(cfg_path, "pooling config")
    if cfg is None:
        return ["mean"], normalize, None        # sentence-transformers' default pooling
    if not isinstance(cfg, dict):
        raise ModelError(f"[embed] {cfg_path}: pooling config is not a JSON object")
    modes = [mode for key, mode in POOLING_KEYS if cfg.get(key)]
    if not modes:
        raise ModelError(f"[embed] {cfg_path}: no pooling mode is switched on")
    return modes, normalize, cfg_path


def _max_seq_length(folder, tokenizer_json):
    sbert = _read_json(os.path.join(folder, "sentence_bert_config.json"), "sentence_bert_config")
    cfg = _read_json(os.path.join(folder, "config.json"), "config") or {}
    tok_cfg = _read_json(os.path.join(folder, "tokenizer_config.json"), "tokenizer config") or {}
    positive = lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0
    max_pos = cfg.get("max_position_embeddings") if isinstance(cfg, dict) else None
    length = sbert.get("max_seq_length") if isinstance(sbert, dict) else None
    if not positive(length):
        candidates = [v for v in (max_pos, tok_cfg.get("model_max_length")
                                  if isinstance(tok_cfg, dict) else None) if positive(v)]
        trunc = tokenizer_json.get("truncation") if isinstance(tokenizer_json, dict) else None
        if not candidates and isinstance(trunc, dict) and positive(trunc.get("max_length")):
            candidates = [trunc["max_length"]]
        length = min(candidates) if candidates else 512
    if positive(max_pos):
        length = min(length, max_pos)
    lower = bool(sbert.get("do_lower_case")) if isinstance(sbert, dict) else False
    return length, lower


class Embedder:
    """Tokenizer + pooling head of a sentence-transformers folder, over an encoder graph.

    inputs/outputs: the graph's TensorInfo lists (Engine.inputs / Engine.outputs).
    """

    def __init__(self, folder, inputs: Sequence, outputs: Sequence):
        from ember.llm.tokenizer import Tokenizer

        self.folder = os.fspath(folder)
        tok_path = os.path.join(self.folder, "tokenizer.json")
        tok = Tokenizer.from_file(tok_path)          # ModelError naming the file if it is bad
        # Our own copy: padding/truncation are stateful settings on the Rust object.
        self._tok = tok.hf.__class__.from_str(tok.hf.to_str())
        tok_json = _read_json(tok_path, "tokenizer")
        self.max_seq_length, self.lower_case = _max_seq_length(self.folder, tok_json)
        self._tok.no_padding()
        self._tok.enable_truncation(max_length=self.max_seq_length)
        pad = (tok_json.get("padding") or {}) if isinstance(tok_json, dict) else {}
        pad_id = pad.get("pad_id") if isinstance(pad, dict) else None
        if not isinstance(pad_id, int):
            pad_id = self._tok.token_to_id("[PAD]") or 0
        self.pad_id = int(pad_id)
        self.pooling, self.normalize, _ = _st_head(self.folder)

        # Graph inputs: a subset of input_ids / attention_mask / token_type_ids, integer typed.
        self._inputs = {}
        for t in inputs:
            if t.name not in TEXT_INPUTS:
                raise EmberError(f"[embed] the graph's input '{t.name}' is not one of "
                                 f"{', '.join(TEXT_INPUTS)}: embed cannot feed it")
            if t.dtype not in ("int64", "int32"):
                raise EmberError(f"[embed] the graph's input '{t.name}' is {t.dtype}; token inputs "
                                 "must be int64 or int32")
            self._inputs[t.name] = np.dtype(t.dtype)
        if "input_ids" not in self._inputs:
            raise EmberError("[embed] the graph has no 'input_ids' input")

        # Graph output: token-level (pooled here) preferred, else an already pooled one.
        by_name = {t.name: t for t in outputs}
        rank = lambda t: len(t.shape) if t.shape is not None else None
        token = [by_name[n] for n in TOKEN_OUTPUTS if n in by_name and rank(by_name[n]) in (3, None)]
        token += [t for t in outputs if rank(t) == 3 and t.dtype == "float32" and t not in token]
        pooled = [by_name[n] for n in POOLED_OUTPUTS if n in by_name and rank(by_name[n]) in (2, None)]
        if token:
            self.output, self.token_level = token[0].name, True
            hidden = token[0].shape[-1] if token[0].shape else None
            self._dim = hidden * len(self.pooling) if isinstance(hidden, int) else None
        elif pooled:
            self.output, self.token_level = pooled[0].name, False
            hidden = pooled[0].shape[-1] if pooled[0].shape else None
            self._dim = hidden if isinstance(hidden, int) else None
        else:
            raise EmberError("[embed] the graph has no token-level output (last_hidden_state, "
                             "[batch, seq, hidden]) nor a pooled one (sentence_embedding)")

    def __repr__(self):
        return (f"<ember.Embedder {self.folder} pooling={'+'.join(self.pooling)} "
                f"normalize={self.normalize} max_seq_length={self.max_seq_length}>")

    # ---- the API ----

    def dim(self, run: Callable) -> int:
        """Length of one embedding (runs the graph once when its shape does not say)."""
        if self._dim is None:
            self._dim = int(self._embed_batch(run, [[self._tok.token_to_id("[CLS]") or 0]]).shape[1])
        return self._dim

    def token_count(self, texts) -> int:
        """Tokens the encoder sees for these texts (after truncation): for usage figures."""
        prepared = [t.strip().lower() if self.lower_case else t.strip() for t in texts]
        return sum(len(e.ids) for e in self._tok.encode_batch(prepared))

    def embed(self, run: Callable, texts, batch_size: int = 32) -> np.ndarray:
        """run: Engine.run. texts: str -> float32 [dim]; list of str -> float32 [n, dim]."""
        single = isinstance(texts, str)
        if single:
            texts = [texts]
        elif isinstance(texts, (list, tuple)):
            texts = list(texts)
        else:
            raise InputError(f"[embed] texts must be a str or a list of str, not "
                             f"{type(texts).__name__}")
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise InputError(f"[embed] texts[{i}] is {type(t).__name__}, not str")
            try:
                t.encode("utf-8")
            except UnicodeEncodeError as e:
                raise InputError(f"[embed] texts[{i}] is not valid Unicode: {e.reason} at "
                                 f"character {e.start}") from None
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"[embed] batch_size must be a positive int, not {batch_size!r}")
        if not texts:
            return np.zeros((0, self.dim(run)), np.float32)

        prepared = [t.strip() for t in texts]
        if self.lower_case:
            prepared = [t.lower() for t in prepared]
        ids = [e.ids for e in self._tok.encode_batch(prepared, add_special_tokens=True)]
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))     # longest first, stable
        out = None
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            vecs = self._embed_batch(run, [ids[i] for i in rows])
            if out is None:
                out = np.empty((len(texts), vecs.shape[1]), np.float32)
            out[rows] = vecs
        return out[0] if single else out

    # ---- internals ----

    def _embed_batch(self, run, rows: list[list[int]]) -> np.ndarray:
        n, seq = len(rows), max(max(len(r) for r in rows), 1)
        lengths = np.array([len(r) for r in rows], np.int64)
        ids = np.full((n, seq), self.pad_id, np.int64)
        mask = np.zeros((n, seq), np.int64)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = r
            mask[i, :len(r)] = 1
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        feeds = {k: v.astype(self._inputs[k], copy=False) for k, v in feeds.items() if k in self._inputs}
        got = np.asarray(run(feeds, outputs=[self.output])[self.output])
        if self.token_level:
            if got.ndim != 3 or got.shape[:2] != (n, seq):
                raise EmberError(f"[embed] output '{self.output}' has shape {list(got.shape)}, "
                                 f"expected [{n}, {seq}, hidden]")
            vecs = self._pool(got, lengths)
        else:
            if got.ndim != 2 or got.shape[0] != n:
                raise EmberError(f"[embed] output '{self.output}' has shape {list(got.shape)}, "
                                 f"expected [{n}, dim]")
            vecs = got.astype(np.float64)
        if self.normalize:
            norms = np.linalg.norm(vecs, axis=1, keepdims=True)
            vecs = vecs / np.maximum(norms, 1e-12)
        return vecs.astype(np.float32)

    def _pool(self, hidden: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Pools each row over its real tokens only (never reading padding), in float64."""
        n, _, h = hidden.shape
        out = np.empty((n, h * len(self.pooling)), np.float64)
        for i in range(n):
            k = int(lengths[i])
            tokens = hidden[i, :k].astype(np.float64)
            parts = []
            for mode in self.pooling:
                if k == 0:
                    parts.append(np.zeros(h))
                elif mode == "cls":
                    parts.append(tokens[0])
                elif mode == "max":
                    parts.append(tokens.max(axis=0))
                elif mode == "mean":
                    parts.append(tokens.sum(axis=0) / k)
                elif mode == "mean_sqrt_len":
                    parts.append(tokens.sum(axis=0) / np.sqrt(k))
                elif mode == "weightedmean":
                    w = np.arange(1, k + 1, dtype=np.float64)
                    parts.append((tokens * w[:, None]).sum(axis=0) / w.sum())
                else:  # lasttoken
                    parts.append(tokens[k - 1])
            out[i] = np.concatenate(parts)
        return out
