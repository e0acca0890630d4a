"""Served model versions and their lifecycle.

A version is *staged* when it appears (in the repository, or by `ember serve MODEL`), *loading*
while its Engine is built in a worker thread, *serving* once loaded (and, where a validator is
set, validated), *failed* when loading or validation fails, and *retired* when it is removed,
unloaded, rolled back or pushed out by the version policy. Requests resolve a serving version
and hold it (Servable.hold) until they finish: a retired version stops taking new requests at
once and closes its engine only when the last one holding it is done — so a reload never fails
a request in flight. The production layer (validation gates, experiments) extends this one
lifecycle through ModelManager.validator and the states below.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass, field, replace

from ember.errors import EmberError
from ember.serve.config import ModelConfig

log = logging.getLogger("ember.serve")

STATES = ("staged", "loading", "validating", "serving", "failed", "retired")


class NotFound(EmberError):
    """No such model or version (HTTP 404)."""


class Unavailable(EmberError):
    """The model exists but cannot take this request now (HTTP 503 or 429 with Retry-After)."""

    def __init__(self, message, status=503, retry_after=1):
        super().__init__(message)
        self.status, self.retry_after = status, retry_after


class Servable:
    """One loaded model version: its Engine and how requests reach it (the AsyncEngine of an
    LLM, the DynamicBatcher of a graph model)."""

    def __init__(self, name: str, version: int, path: str, config: ModelConfig, metrics):
        from ember.engine import Engine
        self.name, self.version, self.path, self.config = name, version, path, config
        self.labels = (name, str(version))
        kwargs = config.engine_kwargs()
        if config.kind == "graph" and config.llm:
            raise EmberError(f"[serve] {name}: [llm] options need an LLM model")
        self.engine = Engine(path, **kwargs, **config.llm)
        self.kind = "llm" if self.engine._llm is not None else "graph"
        if config.kind not in ("auto", self.kind):
            self.engine.close()
            raise EmberError(f"[serve] {name}: config says kind = {config.kind!r}, but {path} is "
                             f"a{'n LLM' if self.kind == 'llm' else ' graph model'}")
        self.async_engine = self.batcher = None
        self.can_embed = False
        if self.kind == "llm":
            from ember.async_engine import AsyncEngine
            self.async_engine = AsyncEngine.from_engine(self.engine)
        else:
            from ember.embed import find_st_folder
            from ember.serve.batcher import DynamicBatcher
            batch_hist = metrics.batch.labels(*self.labels)
            self.batcher = DynamicBatcher(self.engine.run, self.engine.inputs, self.engine.outputs,
                                          config.batching, max_queue_size=config.max_queue_size,
                                          on_batch=lambda rows, n: batch_hist.observe(rows))
            self.can_embed = find_st_folder(path) is not None
        from ember.serve.production import build_monitor
        try:
            self.monitor = build_monitor(self)
        except BaseException:
            self.engine.close()
            raise
        self.loaded_at = time.time()
        self._holders = 0
        self._retired = False
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def hold(self):
        """Keeps this version open while a request uses it; refuses past max_queue_size."""
        with self._lock:
            if self._retired:
                raise Unavailable(f"[serve] {self.name} version {self.version} was just retired; "
                                  "retry", 503, 0)
            if self._holders >= self.config.max_queue_size:
                raise Unavailable(f"[serve] {self.name}: {self._holders} requests are queued "
                                  f"(max_queue_size {self.config.max_queue_size}); retry later",
                                  429, 1)
            self._holders += 1
        try:
            yield self
        finally:
            with self._lock:
                self._holders -= 1
                close = self._retired and self._holders == 0
            if close:
                self._close()

    @property
    def in_flight(self) -> int:
        return self._holders

    def retire(self) -> None:
        """No new requests; the engine closes once the requests holding it finish."""
        with self._lock:
            if self._retired:
                return
            self._retired = True
            close = self._holders == 0
        if close:
            self._close()

    def _close(self) -> None:
        if self.batcher is not None:
            self.batcher.shutdown()
        # Closing joins the LLM loop thread: never on the event loop's thread.
        threading.Thread(target=self.engine.close, name="ember-serve-close", daemon=True).start()

    def close_now(self) -> None:
        """At shutdown or after a failed validation: close now, on the calling thread."""
        self._retired = True
        if self.batcher is not None:
            self.batcher.shutdown()
        self.engine.close()


@dataclass
class VersionRecord:
    name: str
    version: int
    path: str
    config: ModelConfig
    fingerprint: tuple | None = None
    state: str = "staged"
    reason: str = ""
    servable: Servable | None = None
    since: float = field(default_factory=time.time)

    def to_json(self) -> dict:
        return {"name": self.name, "version": str(self.version), "state": self.state,
                "reason": self.reason, "path": self.path, "since": self.since}


class ModelManager:
    """Every model version the server knows, keyed by (name, version). The HTTP layer calls
    resolve(); the repository poller (or `ember serve MODEL`) calls sync_model() with the
    versions that should serve; load/unload/rollback are the operator's controls."""

    def __init__(self, metrics, state=None):
        self.metrics = metrics
        self.state = state                      # StateStore or None (single-model mode)
        # async (VersionRecord) -> None, raising to fail the version; runs for versions whose
        # config has a [validation] section (serve/validate.py)
        self.validator = None
        self.records: dict[tuple[str, int], VersionRecord] = {}
        self.configs: dict[str, ModelConfig] = {}
        self._load_lock = asyncio.Lock()        # one load at a time: bounded peak memory

    # ---- routing ----

    def serving(self, name: str) -> list[VersionRecord]:
        recs = [r for (n, _), r in self.records.items() if n == name and r.state == "serving"]
        return sorted(recs, key=lambda r: r.version)

    def names(self) -> list[str]:
        return sorted({n for (n, _) in self.records})

    def resolve(self, name: str, version: str | None = None) -> Servable:
        """The servable for a request: the given version, or the newest serving one."""
        if not any(n == name for (n, _) in self.records):
            raise NotFound(f"[serve] unknown model {name!r}")
        if version is not None:
            try:
                v = int(version)
            except ValueError:
                raise NotFound(f"[serve] model {name!r} has no version {version!r}") from None
            rec = self.records.get((name, v))
            if rec is None:
                raise NotFound(f"[serve] model {name!r} has no version {version!r}")
            if rec.state != "serving":
                raise Unavailable(f"[serve] {name} version {v} is {rec.state}"
                                  + (f": {rec.reason}" if rec.reason else ""),
                                  503, 2 if rec.state in ("staged", "loading") else 0)
            return rec.servable
        live = self.serving(name)
        if not live:
            states = sorted({r.state for (n, _), r in self.records.items() if n == name})
            raise Unavailable(f"[serve] model {name!r} has no serving version ({', '.join(states)})",
                              503, 2)
        return live[-1].servable

    # ---- lifecycle ----

    def _set(self, rec: VersionRecord, state: str, reason: str = "") -> None:
        old = rec.state
        rec.state, rec.reason, rec.since = state, reason, time.time()
        g = self.metrics.version_state
        g.labels(rec.name, str(rec.version), old).set(0)
        g.labels(rec.name, str(rec.version), state).set(1)
        log.info("model %s version %s: %s%s", rec.name, rec.version, state,
                 f" ({reason})" if reason else "")

    def held_back(self, name: str) -> set:
        return set(self.state.get(f"held_back/{name}", [])) if self.state else set()

    async def sync_model(self, name: str, config: ModelConfig, available: dict) -> None:
        """Brings a model to its policy: loads the versions it selects from `available`
        (version -> (path, fingerprint of its files)) that are not serving, then retires the
        rest. A new version serves before the old one retires; a version whose files or
        config changed is reloaded and swapped in. A version that fails to load is left out
        of the selection until its files or the config change, so the policy falls back to
        the versions that do load (latest = 1 with a broken newest: the one before it)."""
        async with self._load_lock:
            changed = name in self.configs and _load_relevant(self.configs[name]) != _load_relevant(config)
            self.configs[name] = config
            while True:
                want = config.version_policy.select(
                    set(available) - self.held_back(name) - self._broken(name, available, changed))
                failures = 0
                for v in want:
                    path, fingerprint = available[v]
                    rec = self.records.get((name, v))
                    if self._current(rec, path, fingerprint, changed) and rec.state == "serving":
                        continue
                    await self._load(name, v, path, fingerprint, config, replace=rec)
                    failures += self.records[(name, v)].state == "failed"
                changed = False
                if not failures:
                    break
            keep = set(want)
            if not keep and self.serving(name) and available:
                return                          # nothing could load: keep what serves
            for (n, v), rec in list(self.records.items()):
                if n == name and v not in keep and rec.state == "serving":
                    self._retire(rec, "not selected by the version policy"
                                 if v in available else "removed from the repository")
                if n == name and v not in available and rec.state in ("failed", "staged"):
                    self._set(rec, "retired", "removed from the repository")

    @staticmethod
    def _current(rec, path, fingerprint, changed) -> bool:
        return rec is not None and not changed and (rec.path, rec.fingerprint) == (path, fingerprint)

    def _broken(self, name, available, changed) -> set:
        """Versions that failed to load with the files and config they have now."""
        return {v for v, (path, fp) in available.items()
                if (rec := self.records.get((name, v))) is not None and rec.state == "failed"
                and self._current(rec, path, fp, changed)}

    async def _load(self, name, version, path, fingerprint, config, replace=None) -> None:
        rec = VersionRecord(name, version, path, config, fingerprint)
        self._set(rec, "staged")
        old = replace if replace is not None and replace.state == "serving" else None
        if old is None:
            self.records[(name, version)] = rec
        self._set(rec, "loading")
        try:
            rec.servable = await asyncio.to_thread(Servable, name, version, path, config, self.metrics)
            if self.validator is not None and config.extra.get("validation") is not None:
                self._set(rec, "validating")
                await self.validator(rec)
        except Exception as e:  # noqa: BLE001 - any failure fails this version, not the server
            if rec.servable is not None:
                rec.servable.close_now()
                rec.servable = None
            self._set(rec, "failed", str(e))
            if old is None:
                self.records[(name, version)] = rec
            return
        if old is not None:  # the same version number with new files or config: swap in place
            old.servable.retire()
            self.metrics.forget_version(name, str(version))
        self.records[(name, version)] = rec
        self._set(rec, "serving")

    def _retire(self, rec: VersionRecord, reason: str) -> None:
        self._set(rec, "retired", reason)
        if rec.servable is not None:
            rec.servable.retire()
            rec.servable = None
        self.metrics.forget_version(rec.name, str(rec.version))

    async def unload(self, name: str) -> None:
        if name not in self.names():
            raise NotFound(f"[serve] unknown model {name!r}")
        async with self._load_lock:
            for (n, _), rec in self.records.items():
                if n == name and rec.state == "serving":
                    self._retire(rec, "unloaded")
            self.configs.pop(name, None)

    async def rollback(self, name: str, available: dict) -> int:
        """Holds back the newest serving version and serves the one before it; returns the
        version now serving. Held-back versions are stored in the server's state (outside the
        model tree) and stay held until the model is explicitly loaded again."""
        live = self.serving(name)
        if not live:
            raise Unavailable(f"[serve] model {name!r} has no serving version to roll back", 409, 0)
        newest = live[-1].version
        older = [v for v in available if v < newest and v not in self.held_back(name)]
        if not older:
            raise Unavailable(f"[serve] model {name!r}: no version older than {newest} to roll "
                              "back to", 409, 0)
        if self.state is None:
            raise Unavailable("[serve] rollback needs a model repository", 409, 0)
        self.state.update(f"held_back/{name}", lambda held: sorted(set(held or []) | {newest}))
        config = self.configs.get(name) or live[-1].config
        await self.sync_model(name, config, available)
        now = self.serving(name)
        if not now or now[-1].version == newest:
            raise Unavailable(f"[serve] model {name!r}: rollback could not load an older version",
                              500, 0)
        return now[-1].version

    def clear_held_back(self, name: str) -> None:
        if self.state is not None:
            self.state.set(f"held_back/{name}", [])

    async def close(self) -> None:
        """At shutdown, after in-flight requests drained: close every engine now."""
        for rec in self.records.values():
            if rec.servable is not None:
                await asyncio.to_thread(rec.servable.close_now)
                rec.servable = None

    def update_gauges(self) -> None:
        """Refreshes the gauges read at scrape time (in-flight, KV cache)."""
        m = self.metrics
        for rec in self.records.values():
            s = rec.servable
            if rec.state != "serving" or s is None:
                continue
            m.in_flight.labels(*s.labels).set(s.in_flight)
            if s.kind == "llm":
                try:
                    st = s.engine.llm_stats()
                except EmberError:
                    continue
                m.kv_usage.labels(*s.labels).set(st["kv_usage"])
                m.llm_running.labels(*s.labels).set(st["running"])
                m.llm_waiting.labels(*s.labels).set(st["waiting"])


def _load_relevant(config: ModelConfig) -> ModelConfig:
    """The config minus what is applied without reloading a version: the [experiment] table
    (routing, owned by the production layer)."""
    return replace(config, extra={k: v for k, v in config.extra.items() if k != "experiment"})


def model_name_for(path_or_name: str) -> str:
    """The public name of a model given by `ember serve MODEL`: a known name as is, a file by
    its stem, a folder by its base name."""
    p = os.path.normpath(os.fspath(path_or_name))
    base = os.path.basename(p)
    return base.rsplit(".", 1)[0] if os.path.isfile(p) and "." in base else base
