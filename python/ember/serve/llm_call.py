"""One LLM generation as the server runs it: submitted to the servable's continuous-batching
engine, read chunk by chunk (text delta + the tokens it covers), timed into the metrics (TTFT,
inter-token gaps, tokens in and out), bounded by the request's deadline, and cancelled in the
runner (its KV blocks freed before the next step) when the client goes away or time runs out.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from ember.async_engine import _AsyncRequest
from ember.errors import EmberError


class Timeout(EmberError):
    """The request ran past its deadline (HTTP 504)."""


@dataclass
class Chunk:
    text: str
    tokens: list          # token ids this chunk covers
    logprobs: list        # their logprobs (when asked)
    tops: list            # their top alternatives [(id, logprob)] (when asked)


class LlmCall:
    def __init__(self, servable, metrics, prompt_ids: list, max_tokens: int, stop, sampling: dict,
                 deadline: float | None):
        self.servable, self.deadline = servable, deadline
        labels = servable.labels
        self._ttft = metrics.ttft.labels(*labels)
        self._queue = metrics.queue.labels(*labels)
        self._itl = metrics.itl.labels(*labels)
        self._out_tokens = metrics.generation_tokens.labels(*labels)
        self._t0 = time.perf_counter()
        self._last = None
        self._seen = 0
        llm = servable.engine._llm
        self._req = _AsyncRequest(llm, prompt_ids, max_tokens, stop, sampling)
        self.prompt_tokens = len(self._req.req.prompt)
        metrics.prompt_tokens.labels(*labels).inc(self.prompt_tokens)

    async def next(self) -> Chunk | None:
        """The next chunk of text (with its tokens), or None once complete (.completion)."""
        try:
            remaining = None if self.deadline is None else self.deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise asyncio.TimeoutError
            delta = await asyncio.wait_for(self._req.next(), remaining)
        except asyncio.TimeoutError:
            self.cancel()
            raise Timeout("[serve] the request ran past its timeout") from None
        except BaseException:
            self.cancel()
            raise
        st = self._req._state
        new = len(st.tokens) - self._seen
        if new:
            now = time.perf_counter()
            if self._last is None:
                self._ttft.observe(now - self._t0)
                if self._req.queued_s is not None:
                    self._queue.observe(self._req.queued_s)
            else:
                self._itl.observe((now - self._last) / new)
            self._last = now
            self._out_tokens.inc(new)
        lo, self._seen = self._seen, len(st.tokens)
        if delta is None and not new:
            return None
        return Chunk(delta or "", st.tokens[lo:], st.logprobs[lo:], st.tops[lo:])

    @property
    def completion(self):
        return self._req.completion

    def cancel(self) -> None:
        self._req.cancel()

    async def run(self):
        """Runs to the end -> (Completion, all chunks)."""
        chunks = []
        while (c := await self.next()) is not None:
            chunks.append(c)
        return self._req.completion, chunks
