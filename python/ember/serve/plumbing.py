"""What every route shares: errors as JSON (OpenAI's shape under /v1, KServe's under /v2), the
request tracker that feeds the metrics, the body-size limit and bearer auth (one pure ASGI
middleware: it must not buffer streamed responses), and cancel-on-disconnect."""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from ember.errors import EmberError, InputError, ModelError

log = logging.getLogger("ember.serve")


class OpenAIError(EmberError):
    def __init__(self, status: int, message: str, param: str | None = None):
        super().__init__(message)
        self.status, self.param = status, param


class ClientGone(EmberError):
    """The client disconnected before the response was ready."""


def status_of(exc: BaseException) -> tuple[int, dict]:
    """HTTP status and extra headers for an exception raised while serving."""
    from ember.serve.batcher import QueueFull
    from ember.serve.llm_call import Timeout
    from ember.serve.models import NotFound, Unavailable
    if isinstance(exc, OpenAIError):
        return exc.status, {}
    if isinstance(exc, NotFound):
        return 404, {}
    if isinstance(exc, Unavailable):
        return exc.status, ({"Retry-After": str(exc.retry_after)} if exc.status in (429, 503) else {})
    if isinstance(exc, QueueFull):
        return 429, {"Retry-After": "1"}
    if isinstance(exc, Timeout):
        return 504, {}
    if isinstance(exc, ClientGone):
        return 499, {}
    if isinstance(exc, (InputError, ModelError)):  # ModelError here: e.g. a chat template that
        return 400, {}                             # refuses these messages
    return 500, {}


def error_body(path: str, status: int, message: str, param: str | None = None,
               kind: str | None = None) -> dict:
    if path.startswith("/v1"):
        kind = kind or ("invalid_request_error" if status < 500 else "server_error")
        return {"error": {"message": message, "type": kind, "param": param, "code": status}}
    return {"error": message}


_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none", "function-after",
              "literal", "union"}


def _field(loc) -> str:
    # pydantic names the union member it tried ("prompt.list[int]"): the field is what counts.
    parts = [str(p) for p in loc if p != "body"]
    parts = [p for p in parts if p.split("[")[0].lower() not in _TYPE_TAGS]
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return out or "body"


def install_error_handlers(app) -> None:
    async def on_validation(request: Request, exc: RequestValidationError):
        errs = exc.errors()
        first = errs[0] if errs else {"loc": (), "msg": "invalid request"}
        field = _field(first.get("loc", ()))
        fields = {_field(e.get("loc", ())) for e in errs}
        if len(fields) == 1 and len(errs) > 1:  # every member of a union refused it
            msg = f"{field}: has the wrong type or value ({first.get('msg')}, ...)"
        else:
            msg = f"{field}: {first.get('msg')}"
            if len(errs) > 1:
                msg += f" (and {len(errs) - 1} more)"
        _record_failure(request, 400, exc)
        return JSONResponse(error_body(request.url.path, 400, msg, param=field), status_code=400)

    async def on_error(request: Request, exc: Exception):
        status, headers = status_of(exc)
        if status >= 500:
            log.exception("request %s failed", request.url.path, exc_info=exc)
        _record_failure(request, status, exc)
        return JSONResponse(error_body(request.url.path, status, str(exc),
                                       param=getattr(exc, "param", None)),
                            status_code=status, headers=headers)

    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(EmberError, on_error)
    app.add_exception_handler(Exception, on_error)


def _record_failure(request: Request, status: int, exc: BaseException) -> None:
    track = getattr(request.state, "track", None)
    if track is not None:
        track.failed(exc, status=status)
        return
    srv = getattr(request.app.state, "server", None)
    if srv is not None:  # failed before a model was resolved: no model labels (bounded series)
        Tracker(srv.metrics, ("", ""), endpoint_of(request)).failed(exc, status=status)


def endpoint_of(request: Request) -> str:
    route = request.scope.get("route")
    return getattr(route, "name", None) or "other"


class Tracker:
    """Counts one request once: status, error type and latency by model/version/endpoint."""

    def __init__(self, metrics, labels: tuple, endpoint: str, on_done=None):
        self.m, self.labels, self.endpoint = metrics, labels, endpoint
        self.on_done = on_done              # (status) -> None, e.g. an experiment's counts
        self.t0 = time.perf_counter()
        self.finished = False

    def done(self, status: int) -> None:
        if self.finished:
            return
        self.finished = True
        self.m.requests.labels(*self.labels, self.endpoint, str(status)).inc()
        self.m.latency.labels(*self.labels, self.endpoint).observe(time.perf_counter() - self.t0)
        if self.on_done is not None:
            self.on_done(status)

    def failed(self, exc: BaseException, status: int | None = None) -> None:
        if self.finished:
            return
        if status is None:
            status = 499 if isinstance(exc, asyncio.CancelledError) else status_of(exc)[0]
        self.m.errors.labels(*self.labels, self.endpoint, type(exc).__name__).inc()
        self.done(status)


async def until_disconnect(request: Request, awaitable):
    """Awaits `awaitable`, cancelling it if the client disconnects first (ClientGone)."""
    task = asyncio.ensure_future(awaitable)

    async def watch():
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(watch())
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if task in done:
        return task.result()
    task.cancel()
    raise ClientGone("[serve] the client disconnected")


class GuardMiddleware:
    """Bearer auth (when an API key is set; health probes stay open) and the body-size limit
    (Content-Length checked up front, streamed bodies counted as they arrive)."""

    def __init__(self, app, api_key: str | None, max_body_bytes: int):
        self.app, self.key, self.limit = app, api_key, max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        headers = dict(scope.get("headers") or [])
        # Every request has an id (the client's X-Request-Id, else a new one): responses carry
        # it, and POST /v2/feedback ties outcomes to it.
        rid = headers.get(b"x-request-id", b"").decode("latin-1")[:128] or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        extra_headers = [(b"x-request-id", rid.encode("latin-1"))]
        if self.key and not (path.startswith("/v2/health") or path == "/health"):
            got = headers.get(b"authorization", b"").decode("latin-1")
            if not hmac.compare_digest(got.encode(), f"Bearer {self.key}".encode()):
                return await _reply(send, path, 401, "missing or wrong API key (Authorization: "
                                    "Bearer KEY)", {"WWW-Authenticate": "Bearer"})
        length = headers.get(b"content-length")
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                return await _reply(send, path, 400, "bad Content-Length header")
            if n > self.limit:
                return await _reply(send, path, 413, f"request body of {n} bytes exceeds the "
                                    f"limit of {self.limit} bytes")
        seen = 0
        too_big = False

        async def limited_receive():
            nonlocal seen, too_big
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    too_big = True
                    raise _BodyTooLarge()
            return msg

        replied = False

        async def guarded_send(msg):
            # Once the body overflowed, whatever the app answers (FastAPI turns a failed body
            # read into a 400) is replaced by one 413.
            nonlocal replied
            if too_big:
                if not replied:
                    replied = True
                    await _reply(send, path, 413, f"request body exceeds the limit of "
                                 f"{self.limit} bytes")
                return
            if msg["type"] == "http.response.start":
                msg = dict(msg, headers=[*msg.get("headers", []), *extra_headers,
                                         *scope["state"].get("response_headers", [])])
            await send(msg)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not too_big:
                raise
            if not replied:
                replied = True
                await _reply(send, path, 413, f"request body exceeds the limit of {self.limit} bytes")


class _BodyTooLarge(Exception):
    pass


async def _reply(send, path: str, status: int, message: str, headers: dict | None = None) -> None:
    body = json.dumps(error_body(path, status, message)).encode()
    hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    hdrs += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": body})
