"""OpenAI-compatible routes: /v1/completions, /v1/chat/completions (SSE streaming), /v1/models,
/v1/embeddings. Request bodies are checked by pydantic (errors name the field); sampling maps
onto the engine's options one to one; `top_k`, `min_p`, `repetition_penalty`, `ignore_eos` and
`stop_token_ids` are accepted as extensions (as vLLM does)."""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Literal, Union

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from ember.serve.llm_call import LlmCall, Timeout
from ember.serve.plumbing import OpenAIError, until_disconnect

router = APIRouter()


class StreamOptions(BaseModel):
    include_usage: bool = False


class _Sampling(BaseModel):
    model_config = ConfigDict(extra="allow")   # clients send fields ember ignores (user, ...)
    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1, le=1, description="only n = 1 is supported")
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: Union[str, list[str], None] = None
    seed: int | None = Field(None, ge=0, lt=2**64)
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    frequency_penalty: float = Field(0.0, ge=-2, le=2)
    # extensions
    top_k: int = Field(0, ge=0)
    min_p: float = Field(0.0, ge=0, le=1)
    repetition_penalty: float = Field(1.0, gt=0)
    ignore_eos: bool = False
    stop_token_ids: list[int] | None = None

    def options(self, logprobs: int | None) -> dict:
        opts = dict(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k,
                    min_p=self.min_p, repetition_penalty=self.repetition_penalty,
                    presence_penalty=self.presence_penalty,
                    frequency_penalty=self.frequency_penalty, seed=self.seed,
                    ignore_eos=self.ignore_eos, stop_token_ids=self.stop_token_ids)
        if logprobs is not None:
            opts["logprobs"] = logprobs
        return opts


class CompletionRequest(_Sampling):
    prompt: Union[str, list[str], list[int], list[list[int]]]
    max_tokens: int | None = Field(16, ge=1)
    logprobs: int | None = Field(None, ge=0, le=20)
    echo: Literal[False] = False
    best_of: Literal[1, None] = None
    suffix: None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: Union[str, list[dict], None] = None


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    input: Union[str, list[str]]
    encoding_format: Literal["float", "base64"] = "float"


def _user(body) -> str | None:
    user = getattr(body, "user", None)
    return user if isinstance(user, str) and user else None


def _observe(srv, request, servable, completions, t0: float) -> None:
    """Feeds a finished generation to the model version's drift monitor, if it has one."""
    mon = servable.monitor
    if mon is None:
        return
    rows = []
    for c in completions:
        lps = [x for x in (c.logprobs or []) if x is not None]
        rows.append(mon.features_llm(c.usage["prompt_tokens"], c.usage["completion_tokens"],
                                     sum(lps) / len(lps) if lps else None))
    srv.production.observe(servable, getattr(request.state, "request_id", None), rows,
                           time.perf_counter() - t0)


def _text_of(content) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    parts = []
    for i, part in enumerate(content):
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise OpenAIError(400, f"messages[].content[{i}]: only text parts are supported",
                              param="messages")
        parts.append(part["text"])
    return "".join(parts)


# ---- completions ----

@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request):
    srv = request.app.state.server
    servable = srv.llm_servable(body.model, request, _user(body))
    prompts = body.prompt
    if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
        prompts = [prompts]
    if not prompts:
        raise OpenAIError(400, "prompt: must not be empty", param="prompt")
    tok = servable.engine.tokenizer
    ids = [tok.encode(p) if isinstance(p, str) else list(p) for p in prompts]
    fmt = _CompletionFormat(body.model, tok, body.logprobs)
    return await _respond(srv, request, servable, "completions", body, ids, body.max_tokens,
                          body.options(body.logprobs), fmt)


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatRequest, request: Request):
    srv = request.app.state.server
    servable = srv.llm_servable(body.model, request, _user(body))
    messages = [dict(m.model_dump(exclude_none=True), content=_text_of(m.content))
                for m in body.messages]
    ids = servable.engine._llm.apply_chat_template(messages)
    want = body.top_logprobs or 0 if body.logprobs else None
    fmt = _ChatFormat(body.model, servable.engine.tokenizer, want is not None)
    return await _respond(srv, request, servable, "chat", body, [ids],
                          body.max_completion_tokens or body.max_tokens, body.options(want), fmt)


async def _respond(srv, request, servable, endpoint, body, prompt_ids, max_tokens, opts, fmt):
    room = servable.engine._llm.settings.max_model_len
    for i, p in enumerate(prompt_ids):
        if len(p) >= room:
            raise OpenAIError(400, f"prompt {i} has {len(p)} tokens; the model's context "
                                   f"(max_model_len) is {room}", param="prompt")
    hold = servable.hold()
    hold.__enter__()
    try:
        calls = [LlmCall(servable, srv.metrics, p, max_tokens or room - len(p), body.stop, opts,
                         srv.deadline(servable)) for p in prompt_ids]
    except BaseException as e:
        hold.__exit__(type(e), e, None)
        raise
    track = srv.track(request, servable, endpoint)
    t0 = time.perf_counter()
    observe = lambda comps: _observe(srv, request, servable, comps, t0)  # noqa: E731
    if body.stream:
        usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(_sse(calls, fmt, usage, hold, track, observe),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    try:
        results = await until_disconnect(request, asyncio.gather(*(c.run() for c in calls)))
        track.done(200)
        observe([c for c, _ in results])
    except BaseException as e:
        for c in calls:
            c.cancel()
        track.failed(e)
        raise
    finally:
        hold.__exit__(None, None, None)
    return JSONResponse(fmt.full(results))


async def _sse(calls, fmt, include_usage, hold, track, observe):
    """Chunks of every prompt as they come (interleaved by index), then usage, then [DONE]."""
    q: asyncio.Queue = asyncio.Queue()

    async def pump(i, call):
        try:
            while (c := await call.next()) is not None:
                await q.put((i, c))
            await q.put((i, None))
        except BaseException as e:  # noqa: BLE001 - reported in-stream below
            await q.put((i, e))

    tasks = [asyncio.create_task(pump(i, c)) for i, c in enumerate(calls)]
    status = 200
    try:
        yield _event(fmt.first_chunk(len(calls)))
        left = len(calls)
        while left:
            i, item = await q.get()
            if isinstance(item, BaseException):
                status = 504 if isinstance(item, Timeout) else 500
                track.failed(item)
                yield _event({"error": {"message": str(item), "type": type(item).__name__,
                                        "code": status}})
                return
            if item is None:
                left -= 1
                yield _event(fmt.last_chunk(i, calls[i].completion))
            elif item.text or item.tokens:
                yield _event(fmt.chunk(i, item))
        if include_usage:
            yield _event(fmt.usage_chunk([c.completion for c in calls]))
        yield "data: [DONE]\n\n"
        track.done(status)
        observe([c.completion for c in calls])
    except BaseException as e:  # the client went away (cancelled): stop generating
        track.failed(e, status=499)
        raise
    finally:
        for t in tasks:
            t.cancel()
        for c in calls:
            c.cancel()
        hold.__exit__(None, None, None)


def _event(obj) -> str:
    return f"data: {json.dumps(obj, separators=(',', ':'))}\n\n"


def _usage(completions) -> dict:
    p = sum(c.usage["prompt_tokens"] for c in completions)
    n = sum(c.usage["completion_tokens"] for c in completions)
    return {"prompt_tokens": p, "completion_tokens": n, "total_tokens": p + n}


def _finish(reason: str) -> str:
    return "length" if reason == "length" else "stop"


class _Format:
    object_full = object_chunk = ""

    def __init__(self, model, tokenizer, logprobs):
        self.model, self.tok, self.logprobs = model, tokenizer, logprobs
        self.id = f"{self.prefix}-{uuid.uuid4().hex}"
        self.created = int(time.time())

    def _envelope(self, obj: str, choices, **extra) -> dict:
        return dict(id=self.id, object=obj, created=self.created, model=self.model,
                    choices=choices, **extra)

    def _token(self, tid) -> str:
        return self.tok.token_bytes(tid).decode("utf-8", "replace") if tid < self.tok.vocab_size else ""

    def usage_chunk(self, completions) -> dict:
        return self._envelope(self.object_chunk, [], usage=_usage(completions))


class _CompletionFormat(_Format):
    prefix, object_full, object_chunk = "cmpl", "text_completion", "text_completion"

    def _lp(self, tokens, logprobs, tops, offset=0):
        if self.logprobs is None:
            return None
        texts = [self._token(t) for t in tokens]
        offsets, pos = [], offset
        for t in texts:
            offsets.append(pos)
            pos += len(t)
        return {"tokens": texts, "token_logprobs": list(logprobs),
                "top_logprobs": [{self._token(a): lp for a, lp in top} for top in tops],
                "text_offset": offsets}

    def first_chunk(self, n):
        return self._envelope(self.object_chunk, [dict(index=i, text="", logprobs=None,
                                                       finish_reason=None) for i in range(n)])

    def chunk(self, i, c):
        return self._envelope(self.object_chunk, [dict(index=i, text=c.text, finish_reason=None,
                                                       logprobs=self._lp(c.tokens, c.logprobs, c.tops))])

    def last_chunk(self, i, comp):
        return self._envelope(self.object_chunk, [dict(index=i, text="", logprobs=None,
                                                       finish_reason=_finish(comp.finish_reason))])

    def full(self, results):
        choices = [dict(index=i, text=comp.text, finish_reason=_finish(comp.finish_reason),
                        logprobs=self._lp(comp.token_ids, comp.logprobs or [], comp.top_logprobs or []))
                   for i, (comp, _) in enumerate(results)]
        return self._envelope(self.object_full, choices, usage=_usage([c for c, _ in results]))


class _ChatFormat(_Format):
    prefix, object_full, object_chunk = "chatcmpl", "chat.completion", "chat.completion.chunk"

    def _lp(self, tokens, logprobs, tops):
        if not self.logprobs:
            return None

        def entry(t, lp):
            s = self._token(t)
            return {"token": s, "logprob": lp, "bytes": list(s.encode())}
        return {"content": [dict(entry(t, lp), top_logprobs=[entry(a, b) for a, b in top])
                            for t, lp, top in zip(tokens, logprobs, tops)]}

    def first_chunk(self, n):
        return self._envelope(self.object_chunk, [dict(index=0, delta={"role": "assistant", "content": ""},
                                                       logprobs=None, finish_reason=None)])

    def chunk(self, i, c):
        return self._envelope(self.object_chunk, [dict(index=i, delta={"content": c.text},
                                                       logprobs=self._lp(c.tokens, c.logprobs, c.tops),
                                                       finish_reason=None)])

    def last_chunk(self, i, comp):
        return self._envelope(self.object_chunk, [dict(index=i, delta={}, logprobs=None,
                                                       finish_reason=_finish(comp.finish_reason))])

    def full(self, results):
        comp, _ = results[0]
        choice = dict(index=0, message={"role": "assistant", "content": comp.text},
                      finish_reason=_finish(comp.finish_reason),
                      logprobs=self._lp(comp.token_ids, comp.logprobs or [], comp.top_logprobs or []))
        return self._envelope(self.object_full, [choice], usage=_usage([comp]))


# ---- models, embeddings ----

@router.get("/v1/models")
async def list_models(request: Request):
    srv = request.app.state.server
    data = []
    for name in srv.manager.names():
        live = srv.manager.serving(name)
        if live:
            rec = live[-1]
            data.append({"id": name, "object": "model", "created": int(rec.since),
                         "owned_by": "ember", "version": str(rec.version),
                         "kind": rec.servable.kind})
    return {"object": "list", "data": data}


@router.post("/v1/embeddings")
async def embeddings(body: EmbeddingRequest, request: Request):
    import base64

    import numpy as np
    srv = request.app.state.server
    servable = srv.resolve_request(request, body.model, None, _user(body))
    if servable.kind != "graph" or not servable.can_embed:
        raise OpenAIError(400, f"model {body.model!r} is not a sentence encoder", param="model")
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not texts or any(not t for t in texts):
        raise OpenAIError(400, "input: every text must be a non-empty string", param="input")
    track = srv.track(request, servable, "embeddings")
    with servable.hold():
        try:
            vecs = await until_disconnect(request, asyncio.to_thread(servable.engine.embed, texts))
        except BaseException as e:
            track.failed(e)
            raise
    n_tokens = servable.engine._embedder.token_count(texts)
    srv.metrics.prompt_tokens.labels(*servable.labels).inc(n_tokens)
    track.done(200)
    data = []
    for i, v in enumerate(np.asarray(vecs, np.float32).reshape(len(texts), -1)):
        emb = base64.b64encode(v.tobytes()).decode() if body.encoding_format == "base64" else v.tolist()
        data.append({"object": "embedding", "index": i, "embedding": emb})
    return {"object": "list", "data": data, "model": body.model,
            "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens}}
