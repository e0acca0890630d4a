"""The FastAPI application of `ember serve`: one Server object (models, metrics, settings) behind
the OpenAI and KServe routers.

    from ember.serve.app import ServeSettings, create_app
    app = create_app(ServeSettings(model="smollm2-135m"))          # one model
    app = create_app(ServeSettings(repository="/srv/models"))      # a watched repository
    uvicorn.run(app, host="127.0.0.1", port=8000)

Models load at startup (the app reports ready once they serve); with a repository, a poller
picks up new, changed and removed versions every poll_interval_s (see models.py for the
lifecycle and repository.py for how a version being copied in settles first).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.responses import Response

from ember.errors import EmberError
from ember.serve.config import ModelConfig
from ember.serve.llm_call import Timeout
from ember.serve.metrics import Metrics
from ember.serve.models import ModelManager, NotFound, Unavailable, model_name_for
from ember.serve.plumbing import (GuardMiddleware, OpenAIError, Tracker, endpoint_of,
                                  install_error_handlers)
from ember.serve.production import Production, request_key
from ember.serve.validate import validate_version

log = logging.getLogger("ember.serve")


@dataclass
class ServeSettings:
    model: str | None = None                 # one model (path or known name) ...
    name: str | None = None                  # ... served under this name (default: from model)
    config: ModelConfig = field(default_factory=ModelConfig)  # ... with these settings
    repository: str | None = None            # or a model repository
    state_path: str | None = None            # the server's own state (default: outside the repo)
    poll_interval_s: float = 2.0             # repository poll period; 0 = no watching
    settle_s: float = 1.0                    # a new version must be unchanged this long
    api_key: str | None = None
    max_body_bytes: int = 64 << 20
    max_elements: int = 1 << 28              # per KServe request, over all input tensors
    request_timeout_s: float = 0.0           # default for models whose config sets none


class Server:
    def __init__(self, settings: ServeSettings):
        if (settings.model is None) == (settings.repository is None):
            raise EmberError("[serve] give a model or a model repository (not both)")
        self.settings = s = settings
        self.metrics = Metrics()
        self.max_elements = s.max_elements
        state = None
        self.watcher = None
        if s.repository is not None:
            from ember.serve.repository import RepositoryWatcher, StateStore
            if not os.path.isdir(s.repository):
                raise EmberError(f"[serve] model repository {s.repository!r} is not a folder")
            state = StateStore.for_repository(s.repository, s.state_path)
            self.watcher = RepositoryWatcher(s.repository, settle_s=s.settle_s)
        self.manager = ModelManager(self.metrics, state)
        self.manager.validator = self._validate
        self.production = Production(self.metrics, state)
        self.sources: dict[str, dict] = {}      # name -> {version: (path, fingerprint)}
        self.unloaded: set[str] = set()         # explicitly unloaded: the poller leaves them
        self.started = False
        self._poller = None
        self._warned: dict[str, float] = {}

    async def _validate(self, rec) -> None:
        live = self.manager.serving(rec.name)
        await validate_version(rec, live[-1].servable if live else None)

    # ---- used by the routes ----

    def resolve(self, name: str, version: str | None = None):
        return self.manager.resolve(name, version)

    def resolve_request(self, request: Request, name: str, version: str | None = None,
                        user: str | None = None):
        """The servable for one HTTP request: an explicit version, else the variant its model's
        experiment assigns (sticky by the configured key), else the newest serving version.
        The request is remembered for POST /v2/feedback, and its response says who served it."""
        assignment = None
        servable = None
        if version is None and name in self.production.experiments:
            exp = self.production.experiments[name]
            assignment, target = self.production.route(
                name, request_key(request, exp.config.key, user))
            try:
                servable = self.manager.resolve(target.get("model", name),
                                                str(target["version"]) if "version" in target else None)
            except EmberError as e:  # the variant is not serving: default routing, not counted
                self._warn_once(f"{name}/{assignment.variant}",
                                f"experiment {assignment.experiment}: variant {assignment.variant} "
                                f"is unavailable ({e}); its requests go to the default version")
                assignment = None
        if servable is None:
            servable = self.manager.resolve(name, version)
        if assignment is not None:
            assignment.version = servable.version
        request.state.assignment = assignment
        rid = getattr(request.state, "request_id", None)
        if rid:
            self.production.remember(rid, assignment, servable)
        hdrs = [(b"x-ember-model", servable.name.encode()),
                (b"x-ember-version", str(servable.version).encode())]
        if assignment is not None:
            hdrs.append((b"x-ember-variant", assignment.variant.encode()))
        request.state.response_headers = hdrs
        return servable

    def _warn_once(self, key: str, message: str, every_s: float = 60.0) -> None:
        """A warning per key at most every every_s seconds (some arise on every request)."""
        now = time.monotonic()
        if now - self._warned.get(key, -every_s) >= every_s:
            self._warned[key] = now
            log.warning("%s", message)

    def llm_servable(self, name: str, request: Request | None = None, user: str | None = None):
        servable = self.resolve_request(request, name, None, user) if request is not None \
            else self.resolve(name)
        if servable.kind != "llm":
            raise OpenAIError(400, f"model {name!r} is not a text-generation model (LLM); "
                                   "use /v2/models/{name}/infer or /v1/embeddings", param="model")
        return servable

    def deadline(self, servable) -> float | None:
        t = servable.config.request_timeout_s or self.settings.request_timeout_s
        return time.monotonic() + t if t else None

    async def with_deadline(self, servable, awaitable):
        t = servable.config.request_timeout_s or self.settings.request_timeout_s
        if not t:
            return await awaitable
        try:
            return await asyncio.wait_for(awaitable, t)
        except asyncio.TimeoutError:
            raise Timeout(f"[serve] the request ran past its timeout of {t:g} s") from None

    def track(self, request: Request, servable, endpoint: str | None = None) -> Tracker:
        assignment = getattr(request.state, "assignment", None)
        on_done = (lambda status: self.production.finished(assignment, status)) if assignment else None
        t = Tracker(self.metrics, servable.labels, endpoint or endpoint_of(request), on_done)
        request.state.track = t
        return t

    def not_ready(self) -> str | None:
        """None when every model serves; else what is missing."""
        if not self.started:
            return "models are loading"
        missing = [n for n in self.manager.names()
                   if n not in self.unloaded and not self.manager.serving(n)]
        return f"no serving version: {', '.join(missing)}" if missing else None

    # ---- lifecycle ----

    async def start(self) -> None:
        s = self.settings
        if s.model is not None:
            name = s.name or model_name_for(s.model)
            self.sources[name] = {1: (s.model, None)}
            await self.manager.sync_model(name, s.config, self.sources[name])
            self._configure(name, s.config)
            rec = self.manager.records[(name, 1)]
            if rec.state != "serving":
                raise EmberError(f"[serve] {s.model}: {rec.reason}")
        else:
            await self.poll_once()
        if s.poll_interval_s > 0:
            self._poller = asyncio.create_task(self._poll_forever())
        self.started = True

    async def poll_once(self) -> None:
        try:
            changes = await asyncio.to_thread(self.watcher.poll)
        except EmberError as e:  # the repository vanished: keep serving what is loaded
            log.error("%s", e)
            return
        for name in changes.removed:
            self.sources.pop(name, None)
            if name in self.manager.names():
                await self.manager.sync_model(name, self.manager.configs.get(name, ModelConfig()), {})
        for name, model in changes.ready.items():
            for v, why in model.invalid.items():
                log.warning("model %s version %s is invalid: %s", name, v, why)
            if model.config_error:
                log.error("model %s: %s (keeping what serves)", name, model.config_error)
                continue
            self.sources[name] = {v: (src.path, src.fingerprint) for v, src in model.versions.items()}
            if name not in self.unloaded:
                await self.manager.sync_model(name, model.config, self.sources[name])
                self._configure(name, model.config)

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.poll_interval_s)
            try:
                if self.watcher is not None:
                    await self.poll_once()
                await asyncio.to_thread(self.production.save)
            except Exception:  # noqa: BLE001 - one bad poll must not stop the watching
                log.exception("repository poll failed")

    async def load(self, name: str) -> None:
        if name not in self.sources:
            raise NotFound(f"[serve] unknown model {name!r}")
        self.unloaded.discard(name)
        self.manager.clear_held_back(name)
        config = self.manager.configs.get(name) or self.settings.config
        if self.watcher is not None:
            from ember.serve.repository import scan_repository
            model = (await asyncio.to_thread(scan_repository, self.settings.repository)).get(name)
            if model is None:
                raise NotFound(f"[serve] model {name!r} is no longer in the repository")
            if model.config_error:
                raise Unavailable(f"[serve] {name}: {model.config_error}", 400, 0)
            config = model.config
            self.sources[name] = {v: (s.path, s.fingerprint) for v, s in model.versions.items()}
        await self.manager.sync_model(name, config, self.sources[name])
        self._configure(name, config)

    def _configure(self, name: str, config) -> None:
        try:
            self.production.configure(name, config)
        except EmberError as e:  # a bad [experiment] table: the model serves without it
            log.error("model %s: %s (serving without the experiment)", name, e)

    async def unload(self, name: str) -> None:
        await self.manager.unload(name)
        self.unloaded.add(name)

    async def rollback(self, name: str) -> int:
        return await self.manager.rollback(name, self.sources.get(name, {}))

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        self.production.save(force=True)
        await self.manager.close()


def create_app(settings: ServeSettings) -> FastAPI:
    from ember.serve import kserve_api, openai_api, production_api
    server = Server(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        await server.start()
        log.info("ember serve: ready (%s)", ", ".join(server.manager.names()) or "no models")
        try:
            yield
        finally:
            await server.close()

    app = FastAPI(title="ember", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.server = server
    install_error_handlers(app)
    app.include_router(openai_api.router)
    app.include_router(kserve_api.router)
    app.include_router(production_api.router)

    @app.get("/metrics")
    async def metrics():
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
        server.manager.update_gauges()
        server.production.update_gauges()
        return Response(generate_latest(server.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    app.add_middleware(GuardMiddleware, api_key=settings.api_key,
                       max_body_bytes=settings.max_body_bytes)
    return app
