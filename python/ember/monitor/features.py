"""Feature rows from one run of a model: what the monitor compares, one dict per batch row.

Inputs (batch on axis 0):
  numeric [batch] -> "name"; numeric [batch, F], F <= MAX_COLUMNS, whose declared dim 1 is a
  number (or unknown, for float tensors) -> "name:col{j}"; other numeric tensors (ids
  [batch, seq], images, embeddings, wide tables) -> summaries of the flattened row
  "name:mean|std|min|max|l2" plus `projections` random unit projections "name:proj{k}"
  (seeded by the tensor name and k, so stable across restarts and row lengths);
  string tensors -> categorical "name" / "name:col{j}" (first MAX_COLUMNS columns);
  bool tensors -> categorical when at most MAX_COLUMNS per row, else numeric summaries.
Outputs: [batch, C] float with C >= 2 -> class scores: probabilities (as given when every value
  is in [0, 1], renormalised where a row sum is off by more than 1e-3; else softmax), then
  "name:confidence" (max), "name:entropy" (nats), "name:class" (argmax, categorical) and
  "name:p{k}" for C <= MAX_CLASS_PROBS; [batch] or [batch, 1] float -> "name:score";
  [batch] / [batch, 1] integer or string -> categorical "name:class" (labels); others as inputs.
LLM: "prompt_tokens", "completion_tokens", "mean_logprob" (when given). Both: "latency_s".
"""
from __future__ import annotations

import zlib
import zipfile
from collections import OrderedDict

import numpy as np

from ember.errors import ModelError

MAX_COLUMNS = 64
MAX_CLASS_PROBS = 16
_SUMMARIES = ("mean", "std", "min", "max", "l2")


def _is_text(a: np.ndarray) -> bool:
    return a.dtype.kind in "USO"


def _is_float(a: np.ndarray) -> bool:
    return a.dtype.kind == "f"


class Projector:
    """Fixed random unit directions per tensor name; the direction for a row of length D is the
    first D values of a stream seeded by (crc32(name), k), normalised, so a row of another
    length reuses the same prefix."""

    def __init__(self, count: int, cache: int = 16):
        self.count, self.cache_size = count, cache
        self._cache: OrderedDict = OrderedDict()

    def matrix(self, name: str, dim: int) -> np.ndarray:
        key = (name, dim)
        m = self._cache.get(key)
        if m is None:
            seed = zlib.crc32(name.encode())
            m = np.stack([np.random.default_rng([seed, k]).standard_normal(dim)
                          for k in range(self.count)])                      # [count, dim]
            m /= np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)
            self._cache[key] = m
            while len(self._cache) > self.cache_size:   # images: a few MB per entry
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return m


def summaries(name: str, a: np.ndarray, proj: Projector) -> dict[str, np.ndarray]:
    """Per-row summaries and projections of a numeric tensor -> {feature: [batch] values}."""
    x = a.reshape(a.shape[0], -1).astype(np.float64)
    cols = {}
    if x.shape[1] == 0:
        return cols
    cols[f"{name}:mean"] = x.mean(axis=1)
    cols[f"{name}:std"] = x.std(axis=1)
    cols[f"{name}:min"] = x.min(axis=1)
    cols[f"{name}:max"] = x.max(axis=1)
    cols[f"{name}:l2"] = np.linalg.norm(x, axis=1)
    if proj.count:
        p = x @ proj.matrix(name, x.shape[1]).T                              # [batch, count]
        for k in range(proj.count):
            cols[f"{name}:proj{k}"] = p[:, k]
    return cols


def _columns(name: str, a: np.ndarray, declared) -> dict[str, np.ndarray] | None:
    """Per-column features of a tabular [batch, F] tensor, else None."""
    if a.ndim == 1:
        return {name: a}
    if a.ndim != 2 or a.shape[1] > MAX_COLUMNS:
        return None
    # ids [batch, seq] are 2-D too: a symbolic second dim marks a sequence, a fixed one columns;
    # unknown: float tables are columns, integer ones likely ids.
    dim = declared[1] if declared is not None and len(declared) == 2 else None
    if isinstance(dim, str) or (dim is None and not _is_float(a)):
        return None
    return {f"{name}:col{j}": a[:, j] for j in range(a.shape[1])}


def input_features(name: str, a: np.ndarray, declared, proj: Projector) -> dict[str, np.ndarray]:
    if _is_text(a) or (a.dtype == np.bool_ and a[0].size <= MAX_COLUMNS):
        flat = a.reshape(a.shape[0], -1)
        if flat.shape[1] == 1:
            return {name: flat[:, 0].astype(str)}
        return {f"{name}:col{j}": flat[:, j].astype(str)
                for j in range(min(flat.shape[1], MAX_COLUMNS))}
    cols = None if a.dtype == np.bool_ else _columns(name, a, declared)
    return cols if cols is not None else summaries(name, a, proj)


def probabilities(s: np.ndarray) -> np.ndarray:
    """[batch, C] scores -> probabilities (see the module docstring for the rule)."""
    s = s.astype(np.float64)
    if np.all((s >= 0) & (s <= 1)):
        total = s.sum(axis=1, keepdims=True)
        off = np.abs(total - 1) > 1e-3
        return np.where(off, s / np.maximum(total, 1e-12), s)
    z = np.exp(s - s.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def output_features(name: str, a: np.ndarray, declared, proj: Projector) -> dict[str, np.ndarray]:
    if a.ndim == 2 and a.shape[1] >= 2 and _is_float(a):
        p = probabilities(a)
        cols = {f"{name}:confidence": p.max(axis=1),
                f"{name}:entropy": -np.sum(p * np.log(np.maximum(p, 1e-300)), axis=1),
                f"{name}:class": p.argmax(axis=1).astype(str)}
        if p.shape[1] <= MAX_CLASS_PROBS:
            cols.update({f"{name}:p{k}": p[:, k] for k in range(p.shape[1])})
        return cols
    if a.ndim in (1, 2) and a[0].size == 1:
        v = a.reshape(-1)
        if _is_float(a):
            return {f"{name}:score": v}
        if a.dtype.kind in "iuUSOb":
            return {f"{name}:class": v.astype(str)}
    return input_features(name, a, declared, proj)


def rows_from_columns(cols: dict[str, np.ndarray], batch: int) -> list[dict]:
    """{feature: [batch] values} -> one dict per row, numpy scalars as Python ones."""
    rows = [{} for _ in range(batch)]
    for key, v in cols.items():
        items = v.tolist()
        for row, item in zip(rows, items):
            row[key] = item
    return rows


def load_reference(path: str) -> dict[str, np.ndarray]:
    """Reference feeds from an .npz (input name -> array, batch on axis 0)."""
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ModelError(f"[monitor] {path}: cannot read reference feeds: {e}") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise ModelError(f"[monitor] {path}: not an .npz archive (np.savez writes one)")
    try:
        with z:
            feeds = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ModelError(f"[monitor] {path}: cannot read reference feeds: {e}") from None
    if not feeds:
        raise ModelError(f"[monitor] {path}: no arrays in the reference file")
    sizes = {k: (v.shape[0] if v.ndim else None) for k, v in feeds.items()}
    scalar = [k for k, n in sizes.items() if n is None]
    if scalar:
        raise ModelError(f"[monitor] {path}: {', '.join(scalar)} have no batch axis (axis 0)")
    if len(set(sizes.values())) != 1:
        raise ModelError(f"[monitor] {path}: arrays disagree on the batch size (axis 0): "
                         + ", ".join(f"{k}={n}" for k, n in sizes.items()))
    if next(iter(sizes.values())) == 0:
        raise ModelError(f"[monitor] {path}: the reference arrays have no rows")
    return feeds
