"""Dynamic batching of one graph model's requests (Triton-style): concurrent requests are merged
into one Engine.run of up to max_batch_size rows, or of what has arrived max_queue_delay_ms after
the oldest waiting request. Batches run one at a time on a worker thread the batcher owns; the
next batch gathers while one runs.

A batch is built around the oldest waiting request (so none starves), then takes the later
requests compatible with it in arrival order: same input names, dtypes and shapes beyond axis 0,
same requested outputs. With [batching.padding] the padded axis may differ: inputs are padded to
the batch's longest (the mask input with 0) and outputs carrying that axis are sliced back.
If a merged run fails, each of its requests reruns alone, so a bad request fails only itself.
"""
from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Mapping, Sequence

import numpy as np

from ember.errors import EmberError, InputError, ModelError
from ember.serve.config import BatchingConfig, PaddingConfig

__all__ = ["DynamicBatcher", "QueueFull"]

log = logging.getLogger("ember.serve")


class QueueFull(EmberError):
    """max_queue_size requests are already waiting or running (HTTP 429)."""


class _Request:
    __slots__ = ("feeds", "outputs", "rows", "length", "key", "future", "arrived", "started")

    def __init__(self, feeds, outputs, rows, length, key, future):
        self.feeds, self.outputs, self.rows, self.length = feeds, outputs, rows, length
        self.key, self.future = key, future
        self.arrived = time.monotonic()
        self.started: float | None = None     # set when its batch leaves the queue


def _dim(shape, axis):
    return shape[axis] if shape is not None and len(shape) > axis else None


def _padding_plan(padding: PaddingConfig | None, inputs, outputs) -> tuple[frozenset, frozenset]:
    """(inputs padded along padding.axis, outputs sliced back along it); ModelError for names
    the model does not have, so a config typo fails at load, not on the first merged batch."""
    if padding is None:
        return frozenset(), frozenset()
    ins, outs = {t.name: t for t in inputs}, {t.name for t in outputs}
    unknown = [n for n in (padding.mask_input, *padding.values) if n not in ins]
    if unknown:
        raise ModelError(f"[batching] padding names {', '.join(unknown)}: not inputs of the model "
                         f"(inputs: {', '.join(ins)})")
    unknown = [n for n in padding.outputs or () if n not in outs]
    if unknown:
        raise ModelError(f"[batching] padding.outputs names {', '.join(unknown)}: not outputs of "
                         f"the model (outputs: {', '.join(outs)})")
    axis = padding.axis
    seq = _dim(ins[padding.mask_input].shape, axis)
    symbolic = isinstance(seq, str)            # a fixed or unknown dim names no other tensor
    padded = {padding.mask_input, *padding.values}
    if symbolic:
        padded |= {t.name for t in inputs if _dim(t.shape, axis) == seq}
    if padding.outputs is not None:
        sliced = set(padding.outputs)
    else:
        sliced = {t.name for t in outputs if symbolic and _dim(t.shape, axis) == seq}
    return frozenset(padded), frozenset(sliced)


class DynamicBatcher:
    """Merges concurrent `submit`s into runs of `run(feeds, outputs)` (Engine.run, blocking; it
    runs on the batcher's own worker thread). on_batch(rows, requests) is called after each
    successful run."""

    def __init__(self, run: Callable, inputs: Sequence, outputs: Sequence, config: BatchingConfig,
                 max_queue_size: int = 256, on_batch: Callable | None = None):
        if config.max_batch_size < 1 or max_queue_size < 1:
            raise ModelError("[batching] max_batch_size and max_queue_size must be >= 1, not "
                             f"{config.max_batch_size} and {max_queue_size}")
        self._run, self._on_batch = run, on_batch
        self.config, self.max_queue_size = config, max_queue_size
        self._pad = config.padding
        self._padded, self._sliced = _padding_plan(config.padding, inputs, outputs)
        self._queue: list[_Request] = []       # waiting, in arrival order
        self._running: list[_Request] = []
        self._wake = asyncio.Event()           # a submit, a cancellation or close happened
        self._task: asyncio.Task | None = None
        self._closed = False
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="ember-batcher")

    @property
    def pending(self) -> int:
        """Requests waiting or running."""
        return len(self._queue) + len(self._running)

    async def submit(self, feeds: Mapping, outputs: Sequence[str] | None = None):
        """-> (this request's outputs, seconds it waited before its batch started)."""
        if self._closed:
            raise EmberError("[batching] the batcher is closed: it takes no new requests")
        if self.pending >= self.max_queue_size:
            raise QueueFull(f"[batching] queue full: {self.pending} requests waiting or running "
                            f"(max_queue_size {self.max_queue_size})")
        req = self._request(feeds, outputs)
        self._queue.append(req)
        self._wake.set()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())
        try:
            return await req.future
        except asyncio.CancelledError:
            if req.started is None and req in self._queue:   # not started: nobody runs it
                self._queue.remove(req)
                self._wake.set()                # the oldest request, hence the deadline, may change
            raise

    def shutdown(self) -> None:
        """Stops at once, from any thread: for an owner that knows nothing is queued or
        running (a retired version whose last request is done, or server shutdown)."""
        self._closed = True
        self._pool.shutdown(wait=False)
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # not the loop's thread: the idle loop task ends with its loop
            return
        self._wake.set()

    async def close(self) -> None:
        """Stops taking requests; returns once the queued and running ones have finished."""
        self._closed = True
        self._wake.set()
        if self._task is not None:
            await self._task
        self._pool.shutdown(wait=False)

    # ---- requests ----

    def _request(self, feeds, outputs) -> _Request:
        if not isinstance(feeds, Mapping) or not feeds:
            raise InputError("[batching] feeds must be a non-empty dict of name -> array")
        if outputs is not None and (isinstance(outputs, str)
                                    or not all(isinstance(o, str) for o in outputs)):
            raise InputError("[batching] outputs must be a list of output names")
        feeds = {k: np.asarray(v) for k, v in feeds.items()}
        scalars = [k for k, v in feeds.items() if v.ndim == 0]
        if scalars:
            raise InputError(f"[batching] {', '.join(scalars)}: scalar input(s); batching needs "
                             "axis 0 to be the batch axis")
        rows = {k: v.shape[0] for k, v in feeds.items()}
        if len(set(rows.values())) > 1:
            raise InputError("[batching] every input needs the same size on axis 0 (the batch "
                             "axis): " + ", ".join(f"{k} has {n}" for k, n in rows.items()))
        # Without the mask a request cannot be padded: it merges only with identical shapes.
        padded = self._padded & feeds.keys() if self._pad and self._pad.mask_input in feeds \
            else frozenset()
        length = None
        if padded:
            axis = self._pad.axis
            short = sorted(k for k in padded if feeds[k].ndim <= axis)
            if short:
                raise InputError(f"[batching] {', '.join(short)}: padded along axis {axis}, so "
                                 f"need at least {axis + 1} dims")
            lengths = {k: feeds[k].shape[axis] for k in sorted(padded)}
            if len(set(lengths.values())) > 1:
                raise InputError(f"[batching] padded inputs differ in size on axis {axis}: "
                                 + ", ".join(f"{k} has {n}" for k, n in lengths.items()))
            length = next(iter(lengths.values()))
        shapes = tuple(sorted(
            (k, v.dtype.str, tuple(-1 if k in padded and i == self._pad.axis else n
                                   for i, n in enumerate(v.shape) if i > 0))
            for k, v in feeds.items()))
        key = (shapes, None if outputs is None else tuple(sorted(set(outputs))))
        outputs = None if outputs is None else list(outputs)
        future = asyncio.get_running_loop().create_future()
        return _Request(feeds, outputs, next(iter(rows.values())), length, key, future)

    # ---- scheduling ----

    def _gather(self) -> tuple[list[_Request], bool]:
        """The next batch: the oldest request and the later compatible ones that fit; and
        whether it is full (max_batch_size rows, or the next compatible one does not fit)."""
        head, limit = self._queue[0], self.config.max_batch_size
        batch, rows = [head], head.rows
        for r in self._queue[1:]:
            if rows >= limit:
                break
            if r.key == head.key:
                if rows + r.rows > limit:
                    return batch, True
                batch.append(r)
                rows += r.rows
        return batch, rows >= limit

    async def _loop(self) -> None:
        delay = self.config.max_queue_delay_ms / 1000
        try:
            while self._queue or not self._closed:
                if not self._queue:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                batch, full = self._gather()
                wait = batch[0].arrived + delay - time.monotonic()
                if wait > 0 and not full and not self._closed:   # closing: nothing more comes
                    self._wake.clear()
                    try:
                        await asyncio.wait_for(self._wake.wait(), wait)
                    except asyncio.TimeoutError:
                        pass
                    continue
                for r in batch:
                    self._queue.remove(r)
                await self._execute(batch)
        finally:  # only reached early if the loop itself is cancelled (event loop shutdown)
            for r in self._queue + self._running:
                r.future.cancel()

    async def _execute(self, batch: list[_Request]) -> None:
        now = time.monotonic()
        for r in batch:
            r.started = now
        self._running = batch
        try:
            if len(batch) > 1:
                try:
                    outs = await self._call(self._merge(batch), batch[0].outputs)
                    parts = self._split(batch, outs)
                except Exception as e:  # noqa: BLE001 - the solo reruns below say whose fault
                    log.info("[batching] a merged run of %d requests failed (%s); rerunning each "
                             "alone", len(batch), e)
                else:
                    self._count(batch)
                    for r, part in zip(batch, parts):
                        self._resolve(r, result=part)
                    return
            for r in batch:
                if r.future.done():             # cancelled: nobody wants its result
                    continue
                try:
                    out = await self._call(r.feeds, r.outputs)
                except Exception as e:  # noqa: BLE001 - handed to this request's caller
                    self._resolve(r, error=e)
                else:
                    self._count([r])
                    self._resolve(r, result=out)
        finally:
            self._running = []

    async def _call(self, feeds, outputs) -> dict:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._run, feeds, outputs)

    def _count(self, reqs) -> None:
        if self._on_batch is not None:
            try:
                self._on_batch(sum(r.rows for r in reqs), len(reqs))
            except Exception:  # noqa: BLE001 - a metrics hook must not fail requests
                log.exception("[batching] on_batch raised")

    @staticmethod
    def _resolve(r: _Request, result=None, error=None) -> None:
        if r.future.done():
            return
        if error is not None:
            r.future.set_exception(error)
        else:
            r.future.set_result((result, r.started - r.arrived))

    # ---- merging and splitting ----

    def _merge(self, batch: list[_Request]) -> dict:
        longest = max((r.length for r in batch if r.length is not None), default=None)
        return {name: np.concatenate([self._pad_to(r, name, longest) for r in batch], axis=0)
                for name in batch[0].feeds}

    def _pad_to(self, r: _Request, name: str, longest) -> np.ndarray:
        a = r.feeds[name]
        if r.length is None or r.length == longest or name not in self._padded:
            return a
        p = self._pad
        width = [(0, 0)] * a.ndim
        width[p.axis] = (0, longest - r.length)
        value = 0 if name == p.mask_input else p.values.get(name, p.value)
        return np.pad(a, width, constant_values=np.asarray(value).astype(a.dtype))

    def _split(self, batch: list[_Request], outs: dict) -> list[dict]:
        total = sum(r.rows for r in batch)
        bad = [k for k, v in outs.items() if v.ndim == 0 or v.shape[0] != total]
        if bad:
            raise EmberError(f"[batching] output(s) {', '.join(bad)} do not have the batch's "
                             f"{total} rows on axis 0: this model cannot merge requests")
        longest = max((r.length for r in batch if r.length is not None), default=None)
        axis = self._pad.axis if self._pad else 0
        parts, start = [], 0
        for r in batch:
            rows = slice(start, start + r.rows)
            start += r.rows
            part = {}
            for k, v in outs.items():
                if r.length is None or r.length == longest or k not in self._sliced:
                    part[k] = v[rows]
                    continue
                if v.ndim <= axis or v.shape[axis] != longest:
                    raise EmberError(f"[batching] output {k} has shape {v.shape}: no padded "
                                     f"axis {axis} of length {longest} to slice back")
                index = (rows,) + (slice(None),) * (axis - 1) + (slice(0, r.length),)
                part[k] = np.ascontiguousarray(v[index])
            parts.append(part)
        return parts
