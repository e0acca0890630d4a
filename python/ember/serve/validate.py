"""The validation step of a version's lifecycle: with a [validation] section in the model's
config.toml, a loaded version runs a check before it serves, and fails (the old version keeps
serving) if the check fails.

    [validation]
    feeds = "validation.npz"   # graph models: inputs to run (in the version folder, else the
                               # model folder); default: sampled inputs (symbolic dims = 1)
    prompt = "Hello"           # LLMs: a prompt to generate from
    max_tokens = 4

A graph version passes when it runs and every float output is finite; an LLM version when it
generates max_tokens tokens with finite logprobs. The production layer adds comparisons against
the serving version (output agreement, metric deltas) on top of this step.
"""
from __future__ import annotations

import asyncio
import math
import os

import numpy as np

from ember.errors import EmberError, ModelError

_KEYS = {"feeds", "prompt", "max_tokens"}


class ValidationFailed(EmberError):
    """A loaded version did not pass its [validation] check."""


async def validate_version(rec) -> None:
    """ModelManager.validator: runs the check of rec.config's [validation] section, if any."""
    spec = rec.config.extra.get("validation")
    if spec is None:
        return
    if not isinstance(spec, dict) or set(spec) - _KEYS:
        raise ModelError(f"[serve] {rec.name}: [validation] takes {', '.join(sorted(_KEYS))}")
    await asyncio.to_thread(_check, rec, spec)


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
    version_dir = os.path.dirname(rec.path) if os.path.isfile(rec.path) else rec.path
    for d in (version_dir, os.path.dirname(version_dir)):
        path = os.path.join(d, file)
        if os.path.isfile(path):
            try:
                with np.load(path, allow_pickle=False) as z:
                    return {k: z[k] for k in z.files}
            except (OSError, ValueError) as e:
                raise ModelError(f"[validate] {path}: {e}") from None
    raise ModelError(f"[validate] {rec.name}: validation feeds {file!r} not found beside the "
                     "version or the model")
