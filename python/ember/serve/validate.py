"""The validation step of a version's lifecycle: with a [validation] section in the model's
config.toml, a loaded version runs a check before it serves, and fails (the old version keeps
serving) if the check fails.

    [validation]
    feeds = "validation.npz"   # graph models: inputs to run (in the version folder, else the
                               # model folder); default: sampled inputs (symbolic dims = 1)
    prompt = "Hello"           # LLMs: a prompt to generate from
    max_tokens = 4
    data = "reference.npz"     # the gate: compare with the serving version on this data
    min_cosine = 0.99          # ... within these limits (ember.rollout.ValidationLimits)

A graph version passes the smoke check when it runs and every float output is finite; an LLM
version when it generates max_tokens tokens with finite logprobs. With `data`, the candidate is
then compared with the newest serving version (ember.rollout.compare_models: output agreement,
accuracy with labels, latency, memory) and is promoted only if every limit holds; the report
is the failed version's reason.
"""
from __future__ import annotations

import asyncio
import math
import os

import numpy as np

from ember.errors import EmberError, ModelError

_SMOKE_KEYS = {"feeds", "prompt", "max_tokens", "data"}


class ValidationFailed(EmberError):
    """A loaded version did not pass its [validation] check."""


async def validate_version(rec, baseline=None) -> None:
    """ModelManager.validator: runs the checks of rec.config's [validation] section, if any;
    baseline: the Servable serving now (None for a model's first version)."""
    spec = rec.config.extra.get("validation")
    if spec is None:
        return
    if not isinstance(spec, dict):
        raise ModelError(f"[serve] {rec.name}: [validation] must be a table")
    limits = sorted(set(spec) - _SMOKE_KEYS)
    if limits and "data" not in spec:
        raise ModelError(f"[serve] {rec.name}: [validation] {', '.join(limits)} compare with the "
                         "serving version on `data`, which is not set")
    await asyncio.to_thread(_check, rec, spec)
    if "data" in spec:
        await asyncio.to_thread(_gate, rec, spec, baseline)


def _gate(rec, spec: dict, baseline) -> None:
    from ember.rollout import ValidationLimits, compare_models, load_data
    limits = ValidationLimits.from_dict({k: v for k, v in spec.items() if k not in _SMOKE_KEYS},
                                        where=f"{rec.name}: [validation]")
    data = load_data(_beside(rec, spec["data"]))
    labels = None
    if isinstance(data, dict) and "__labels__" in data:
        data = dict(data)
        labels = data.pop("__labels__")
    report = compare_models(rec.servable.engine, baseline.engine if baseline else None, data,
                            limits, labels=labels, runs=3)
    if not report.passed:
        raise ValidationFailed(f"[validate] {rec.name} version {rec.version} failed against "
                               f"version {baseline.version if baseline else '-'}: "
                               + "; ".join(report.failures))


def _check(rec, spec: dict) -> None:
    s = rec.servable
    if s.kind == "llm":
        n = int(spec.get("max_tokens", 4))
        c = s.engine.generate(str(spec.get("prompt", "Hello")), max_tokens=n, ignore_eos=True,
                              logprobs=0)[0]
        if len(c.token_ids) != n or not all(math.isfinite(x) for x in c.logprobs or []):
            raise ValidationFailed(f"[validate] {rec.name} version {rec.version}: generated "
                                   f"{len(c.token_ids)} of {n} tokens, logprobs {c.logprobs}")
        return
    feeds = _feeds(rec, spec.get("feeds"))
    outs = s.engine.run(feeds)
    for name, arr in outs.items():
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise ValidationFailed(f"[validate] {rec.name} version {rec.version}: output "
                                   f"'{name}' has non-finite values")


def _feeds(rec, file) -> dict:
    eng = rec.servable.engine
    if file is None:
        rng = np.random.default_rng(0)
        feeds = {}
        for t in eng.inputs:
            shape = [d if isinstance(d, int) else 1 for d in (t.shape or [])]
            dt = np.dtype(t.dtype if t.dtype != "bfloat16" else "float32")
            feeds[t.name] = (rng.standard_normal(shape).astype(dt) if dt.kind == "f"
                             else np.zeros(shape, dt))
        return feeds
    path = _beside(rec, file)
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise ModelError(f"[validate] {path}: {e}") from None


def _beside(rec, file: str) -> str:
    """A file named in the config: in the version folder, else the model folder."""
    version_dir = os.path.dirname(rec.path) if os.path.isfile(rec.path) else rec.path
    for d in (version_dir, os.path.dirname(version_dir)):
        path = os.path.join(d, file)
        if os.path.isfile(path):
            return path
    raise ModelError(f"[validate] {rec.name}: {file!r} not found beside the version or the model")
