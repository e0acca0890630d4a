"""AsyncEngine: ember's LLM engine for asyncio (custom servers, many concurrent requests).

    ae = await ember.AsyncEngine.create("smollm2-135m")     # loads in a worker thread
    c = (await ae.generate("Hello", max_tokens=16))[0]
    async for delta in ae.stream("Hello"):
        ...

It drives the same LlmEngine as ember.Engine (one C++ step loop, continuous batching). Nothing
here blocks the event loop while a request runs: the engine's pump thread hands each output of
an async request to its asyncio.Queue with loop.call_soon_threadsafe, and the text side
(detokenization, stop strings) is LlmEngine's own _TextState. Leaving a request early (the
awaiting task cancelled, Ctrl-C under asyncio.run, `break` out of `async for`, aclose(), the
stream dropped) cancels it in the runner, which frees its KV blocks before the next step.
"""
from __future__ import annotations

import asyncio
import weakref

from ember.errors import EmberError
from ember.llm.engine import Completion, LlmEngine, _event, _prompt_batch, _TextState

__all__ = ["AsyncEngine", "AsyncStream"]


def _sink(loop: asyncio.AbstractEventLoop, q: asyncio.Queue, llm_ref):
    """A request's output hook; runs on the engine's pump thread (must not block or raise)."""
    def put(out) -> None:
        if out[4]:  # finished: the engine routes nothing more to this request
            llm = llm_ref()
            if llm is not None:
                with llm._lock:
                    llm._requests.pop(out[0], None)
        try:
            loop.call_soon_threadsafe(q.put_nowait, out)
        except RuntimeError:  # the loop is closed: nobody waits for this request any more
            pass
    return put


class _AsyncRequest:
    """One submitted request whose outputs arrive on an asyncio.Queue of the running loop."""

    def __init__(self, llm: LlmEngine, prompt, max_tokens, stop, sampling: dict):
        loop = asyncio.get_running_loop()
        self._llm = llm
        self._q: asyncio.Queue = asyncio.Queue()
        self._done = False       # complete, failed or cancelled
        self.completion: Completion | None = None
        self.req = llm._submit(prompt, max_tokens, stop, sampling,
                               sink=_sink(loop, self._q, weakref.ref(llm)))
        self._state = _TextState(llm.tokenizer, self.req.stop, sampling.get("logprobs") is not None)
        self.queued_s: float | None = None   # from submit to its first scheduled step

    async def next(self) -> str | None:
        """The next non-empty text delta, or None once the request is complete (.completion)."""
        try:
            while not self._done:
                out = await self._q.get()
                if out[6] >= 0:
                    self.queued_s = out[6]
                delta, done = self._state.feed(*_event(out))
                if done:
                    if self._state.cut_short:  # a stop string ended it: stop it in the runner
                        self._llm._runner.cancel([self.req.id])
                        while not (await self._q.get())[4]:  # up to the final (abort) event
                            pass
                    self._done = True
                    self.completion = self._state.completion(len(self.req.prompt))
                if delta:
                    return delta
            return None
        except BaseException:  # cancelled (task.cancel, Ctrl-C), or the request failed
            self.cancel()
            raise

    def cancel(self) -> None:
        """Stops the request in the runner (its blocks are freed before the next step); a no-op
        once it is complete. Thread-safe and takes no Python lock (so __del__ may call it)."""
        if not self._done:
            self._done = True
            self._llm._runner.cancel([self.req.id])


class AsyncStream:
    """Async iterator of one prompt's text deltas (from AsyncEngine.stream). The request starts
    at the first iteration. Leaving early (break, aclose(), the task cancelled, the stream
    dropped) cancels it; `async with` closes it on exit. After the last delta, .completion
    holds the Completion."""

    def __init__(self, engine: "AsyncEngine", prompt, max_tokens, stop, sampling: dict):
        self._engine = engine
        self._args = (prompt, max_tokens, stop, sampling)
        self._req: _AsyncRequest | None = None
        self._closed = False

    @property
    def completion(self) -> Completion | None:
        return self._req.completion if self._req is not None else None

    def __aiter__(self) -> "AsyncStream":
        return self

    async def __anext__(self) -> str:
        if self._closed:
            raise StopAsyncIteration
        if self._req is None:
            self._closed = True  # until submitted: a refused request ends the stream
            self._req = _AsyncRequest(self._engine._live(), *self._args)
            self._closed = False
        delta = await self._req.next()
        if delta is None:
            self._closed = True
            raise StopAsyncIteration
        return delta

    def close(self) -> None:
        self._closed = True
        if self._req is not None:
            self._req.cancel()

    async def aclose(self) -> None:
        self.close()

    async def __aenter__(self) -> "AsyncStream":
        return self

    async def __aexit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        req = getattr(self, "_req", None)
        if req is not None:
            req.cancel()


class AsyncEngine:
    """An LLM engine for asyncio: await generate / chat / score, async for stream.

    AsyncEngine(model, **engine_kwargs) builds an ember.Engine (same arguments; it must be a
    decoder LLM) on the calling thread; `await AsyncEngine.create(...)` builds it in a worker
    thread so the event loop keeps running. Requests from any number of tasks (and from any
    event loop) batch together in the engine's step loop; results match Engine.generate
    token for token (batch invariance). close() (or `async with`) frees the engine; requests
    still running then fail with EmberError.
    """

    def __init__(self, model, **engine_kwargs):
        from ember.engine import Engine
        engine = Engine(model, **engine_kwargs)
        if engine._llm is None:
            engine.close()
            raise EmberError("[engine] AsyncEngine needs a decoder LLM (a .gguf model or a Hugging "
                             "Face LLM folder); use ember.Engine for ONNX graphs")
        self._engine = engine

    @classmethod
    def from_engine(cls, engine) -> "AsyncEngine":
        """Wraps an ember.Engine that runs an LLM (it then belongs to the AsyncEngine)."""
        if getattr(engine, "_llm", None) is None:
            raise EmberError("[engine] AsyncEngine needs a decoder LLM engine")
        self = cls.__new__(cls)
        self._engine = engine
        return self

    @classmethod
    async def create(cls, model, **engine_kwargs) -> "AsyncEngine":
        """Builds the engine in a worker thread (loading and compiling take seconds)."""
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(None, lambda: cls(model, **engine_kwargs))
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            # The load cannot be interrupted: close what it builds once it is done.
            fut.add_done_callback(lambda f: f.cancelled() or f.exception() or f.result().close())
            raise

    # ---- plumbing ----

    def _live(self) -> LlmEngine:
        llm = getattr(self._engine, "_llm", None) if self._engine is not None else None
        if llm is None:
            raise EmberError("[engine] this engine is closed")
        return llm

    @property
    def engine(self):
        """The underlying ember.Engine (its blocking methods share the same step loop)."""
        if self._engine is None:
            raise EmberError("[engine] this engine is closed")
        return self._engine

    @property
    def tokenizer(self):
        return self._live().tokenizer

    def llm_stats(self) -> dict:
        return self._live().stats()

    # ---- API ----

    async def generate(self, prompts, max_tokens: int = 128, temperature: float = 0.0,
                       top_p: float = 1.0, top_k: int = 0, seed: int | None = None, stop=None,
                       **sampling) -> list[Completion]:
        """As Engine.generate: str | list[str] | list[int] | list[list[int]] -> list[Completion].
        Cancelling the awaiting task cancels every prompt of the call."""
        llm = self._live()
        batch = _prompt_batch(prompts)
        opts = dict(sampling, temperature=temperature, top_p=top_p, top_k=top_k, seed=seed)
        reqs: list[_AsyncRequest] = []
        try:
            for p in batch:
                reqs.append(_AsyncRequest(llm, p, max_tokens, stop, opts))
            for r in reqs:
                while await r.next() is not None:
                    pass
            return [r.completion for r in reqs]
        finally:
            for r in reqs:  # a no-op for those that completed
                r.cancel()

    def stream(self, prompt, max_tokens: int = 128, stop=None, **sampling) -> AsyncStream:
        """`async for delta in ae.stream(prompt, ...)`: text deltas of one prompt."""
        return AsyncStream(self, prompt, max_tokens, stop, sampling)

    async def chat(self, messages, max_tokens: int = 128, **sampling) -> Completion:
        """Applies the model's chat template (sandboxed jinja2) and generates -> Completion."""
        ids = self._live().apply_chat_template(messages)
        return (await self.generate(ids, max_tokens=max_tokens, **sampling))[0]

    async def score(self, texts):
        """As Engine.score (teacher-forced logprobs, perplexity), run in a worker thread."""
        return await asyncio.to_thread(self._live().score, texts)

    # ---- lifetime ----

    def close(self) -> None:
        """Frees the engine now; requests still running fail with EmberError. Blocks for at
        most about one step: `await aclose()` (or `async with`) does it off the event loop."""
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.close()

    async def aclose(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            await asyncio.to_thread(engine.close)

    def __enter__(self) -> "AsyncEngine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    async def __aenter__(self) -> "AsyncEngine":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<ember.AsyncEngine {'closed' if self._engine is None else 'cpu'}>"
