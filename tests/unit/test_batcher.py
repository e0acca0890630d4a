"""ember.serve.batcher.DynamicBatcher: merging, deadlines, compatibility, padding, queue limits,
error isolation, cancellation, close and FIFO order, with a fake `run` that records its calls;
then a real ember.Engine, whose merged results must equal its solo results bit for bit."""
from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from ember.engine import TensorInfo
from ember.errors import EmberError, InputError, ModelError
from ember.serve.batcher import DynamicBatcher, QueueFull
from ember.serve.config import BatchingConfig, PaddingConfig

pytestmark = pytest.mark.timeout(60)

X_INFO = [TensorInfo("x", "float32", ["batch", 3])]
Y_INFO = [TensorInfo("y", "float32", ["batch", 3]), TensorInfo("s", "float32", ["batch"])]


class FakeRun:
    """Row-independent numpy model (y = 2x + 1, s = row sums) that records each call's feeds.
    With gated=True every call blocks until release(), so requests pile up behind it."""

    def __init__(self, gated=False):
        self.calls, self.started = [], threading.Event()
        self.gate = threading.Event()
        if not gated:
            self.gate.set()

    def release(self):
        self.gate.set()

    def __call__(self, feeds, outputs):
        self.calls.append({k: v.copy() for k, v in feeds.items()})
        self.started.set()
        assert self.gate.wait(10), "test never released the gate"
        x = feeds["x"]
        if (x < 0).any():
            raise InputError("[fake] negative input")
        out = {"y": x * 2 + 1, "s": x.reshape(len(x), -1).sum(1)}
        return {k: v for k, v in out.items() if outputs is None or k in outputs}

    def solo(self, x, outputs=None):
        out = {"y": x * 2 + 1, "s": x.reshape(len(x), -1).sum(1)}
        return {k: v for k, v in out.items() if outputs is None or k in outputs}

    def rows(self):
        return [len(c["x"]) for c in self.calls]


def batcher(run, size=8, delay_ms=0.0, padding=None, inputs=X_INFO, outputs=Y_INFO, **kw):
    return DynamicBatcher(run, inputs, outputs, BatchingConfig(size, delay_ms, padding), **kw)


def feed(rng, rows=1, width=3, dtype=np.float32):
    return {"x": rng.uniform(0.5, 2, (rows, width)).astype(dtype)}


async def started(run):
    """Waits (without blocking the loop) until the fake's first call is running."""
    assert await asyncio.to_thread(run.started.wait, 10)


def assert_same(got, want):
    assert got.keys() == want.keys()
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])


def test_merges_up_to_max_batch_size(rng):
    async def main():
        run, seen = FakeRun(gated=True), []
        b = batcher(run, size=4, on_batch=lambda rows, reqs: seen.append((rows, reqs)))
        first = asyncio.create_task(b.submit(feed(rng)))
        await started(run)                       # 1 row runs; the next batches gather behind it
        sizes = [1, 1, 1, 1, 2, 1, 3, 2, 3]
        feeds = [feed(rng, n) for n in sizes]
        tasks = [asyncio.create_task(b.submit(f)) for f in feeds]
        await asyncio.sleep(0.05)
        assert b.pending == 10
        run.release()
        results = await asyncio.gather(first, *tasks)
        for f, (out, queue_s) in zip(feeds, results[1:]):
            assert_same(out, run.solo(f["x"]))
            assert queue_s > 0
        # In order; a batch ends where the next compatible request would not fit.
        assert run.rows() == [1, 4, 3, 3, 2, 3] and b.pending == 0
        assert seen == [(1, 1), (4, 4), (3, 2), (3, 1), (2, 1), (3, 1)]
        await b.close()
    asyncio.run(main())


def test_deadline_flush_and_full_batch_does_not_wait(rng):
    async def main():
        run = FakeRun()
        b = batcher(run, size=8, delay_ms=150)
        t0 = time.monotonic()
        a = asyncio.create_task(b.submit(feed(rng)))
        await asyncio.sleep(0.03)
        c = asyncio.create_task(b.submit(feed(rng)))
        (_, qa), (_, qc) = await asyncio.gather(a, c)
        assert run.rows() == [2]                          # both joined the first one's batch
        assert qa >= 0.14 and qc < qa and time.monotonic() - t0 < 5
        await b.close()

        run = FakeRun()
        b = batcher(run, size=2, delay_ms=60_000)         # full at 2 rows: no minute-long wait
        t0 = time.monotonic()
        await asyncio.gather(b.submit(feed(rng)), b.submit(feed(rng)))
        assert run.rows() == [2] and time.monotonic() - t0 < 5
        await b.close()
    asyncio.run(main())


def test_incompatible_requests_do_not_merge(rng):
    async def main():
        run = FakeRun(gated=True)
        b = batcher(run, size=8)
        first = asyncio.create_task(b.submit(feed(rng)))
        await started(run)
        reqs = [(feed(rng), None), (feed(rng, width=4), None), (feed(rng), None),
                (feed(rng, dtype=np.float64), None), (feed(rng), ["y"]), (feed(rng, width=4), None)]
        tasks = [asyncio.create_task(b.submit(f, o)) for f, o in reqs]
        await asyncio.sleep(0.02)
        run.release()
        results = await asyncio.gather(first, *tasks)
        for (f, o), (out, _) in zip(reqs, results[1:]):
            assert_same(out, run.solo(f["x"], o))
            assert out["y"].dtype == f["x"].dtype
        shapes = [(c["x"].shape, c["x"].dtype) for c in run.calls[1:]]
        assert shapes == [((2, 3), np.float32), ((2, 4), np.float32), ((1, 3), np.float64),
                          ((1, 3), np.float32)]
        await b.close()
    asyncio.run(main())


SEQ_IN = [TensorInfo("ids", "int64", ["batch", "seq"]),
          TensorInfo("mask", "int64", ["batch", "seq"])]
SEQ_OUT = [TensorInfo("hidden", "float32", ["batch", "seq", 2]),
           TensorInfo("pooled", "float32", ["batch", 2])]


def seq_model(feeds, outputs=None):
    """Token-level output and a masked pooled one: padding changes neither for real tokens."""
    ids, mask = feeds["ids"], feeds["mask"]
    hidden = np.stack([ids * mask, mask], -1).astype(np.float32)
    pooled = np.stack([(ids * mask).sum(1), mask.sum(1)], -1).astype(np.float32)
    out = {"hidden": hidden, "pooled": pooled}
    return {k: v for k, v in out.items() if outputs is None or k in outputs}


@pytest.mark.parametrize("declared", [True, False])
def test_padding_pads_and_slices_back(rng, declared):
    # Undeclared shapes give nothing to infer from: padding.outputs names the sliced output.
    ins = SEQ_IN if declared else [TensorInfo(t.name, t.dtype, None) for t in SEQ_IN]
    outs = SEQ_OUT if declared else [TensorInfo(t.name, t.dtype, None) for t in SEQ_OUT]
    pad = PaddingConfig(axis=1, mask_input="mask", values={"ids": 7},
                        outputs=None if declared else ("hidden",))

    async def main():
        calls = []

        def run(feeds, outputs):
            calls.append(feeds)
            return seq_model(feeds, outputs)
        b = batcher(run, size=8, delay_ms=50, padding=pad, inputs=ins, outputs=outs)
        lengths = [3, 7, 1, 5]
        reqs = [{"ids": rng.integers(1, 100, (1, n)), "mask": np.ones((1, n), np.int64)}
                for n in lengths]
        results = await asyncio.gather(*(b.submit(f) for f in reqs))
        assert len(calls) == 1 and calls[0]["ids"].shape == (4, 7)
        assert (calls[0]["mask"].sum(1) == lengths).all()
        assert (calls[0]["ids"][0, 3:] == 7).all()        # padded with values["ids"]
        for f, (out, _) in zip(reqs, results):
            assert_same(out, seq_model(f))                # hidden sliced back to its own length
        await b.close()
    asyncio.run(main())


def test_padding_config_names_are_checked():
    for pad in (PaddingConfig(1, "attn"), PaddingConfig(1, "mask", values={"idz": 0}),
                PaddingConfig(1, "mask", outputs=("hiden",))):
        with pytest.raises(ModelError, match=r"\[batching\]"):
            batcher(FakeRun(), padding=pad, inputs=SEQ_IN, outputs=SEQ_OUT)


def test_queue_full(rng):
    async def main():
        run = FakeRun(gated=True)
        b = batcher(run, size=1, max_queue_size=2)
        a = asyncio.create_task(b.submit(feed(rng)))
        await started(run)
        c = asyncio.create_task(b.submit(feed(rng)))
        await asyncio.sleep(0)
        assert b.pending == 2
        with pytest.raises(QueueFull, match=r"\[batching\] queue full") as e:
            await b.submit(feed(rng))
        assert isinstance(e.value, EmberError)
        run.release()
        await asyncio.gather(a, c)
        assert b.pending == 0
        await b.submit(feed(rng))                         # room again
        await b.close()
    asyncio.run(main())


def test_a_failing_request_does_not_fail_its_neighbours(rng):
    async def main():
        run, seen = FakeRun(), []
        b = batcher(run, size=8, delay_ms=50, on_batch=lambda rows, reqs: seen.append((rows, reqs)))
        feeds = [feed(rng) for _ in range(4)]
        feeds[2]["x"][0, 1] = -1
        results = await asyncio.gather(*(b.submit(f) for f in feeds), return_exceptions=True)
        assert isinstance(results[2], InputError) and "negative" in str(results[2])
        for i in (0, 1, 3):
            assert_same(results[i][0], run.solo(feeds[i]["x"]))
        assert run.rows() == [4, 1, 1, 1, 1] and seen == [(1, 1)] * 3
        await b.close()
    asyncio.run(main())


def test_cancelled_requests(rng):
    async def main():
        run = FakeRun(gated=True)
        b = batcher(run, size=8)
        a, c = feed(rng), feed(rng)
        ta, tc = asyncio.create_task(b.submit(a)), asyncio.create_task(b.submit(c))
        await started(run)                                # a and c run as one batch
        waiting = feed(rng)
        tw = asyncio.create_task(b.submit(waiting))
        await asyncio.sleep(0.01)
        assert b.pending == 3
        tw.cancel()                                       # not started: leaves the queue
        ta.cancel()                                       # running: its result is dropped
        await asyncio.sleep(0.01)
        assert b.pending == 2
        run.release()
        assert_same((await tc)[0], run.solo(c["x"]))
        for t in (ta, tw):
            with pytest.raises(asyncio.CancelledError):
                await t
        assert run.rows() == [2] and b.pending == 0
        await b.close()
    asyncio.run(main())


def test_close_drains_then_refuses(rng):
    async def main():
        run = FakeRun()
        b = batcher(run, size=8, delay_ms=60_000)
        tasks = [asyncio.create_task(b.submit(feed(rng))) for _ in range(3)]
        await asyncio.sleep(0.01)
        assert not any(t.done() for t in tasks)           # waiting for a minute-long deadline
        t0 = time.monotonic()
        await b.close()                                   # flushes now instead
        assert all(t.done() and t.exception() is None for t in tasks)
        assert run.rows() == [3] and time.monotonic() - t0 < 5
        with pytest.raises(EmberError, match=r"\[batching\].*closed"):
            await b.submit(feed(rng))
    asyncio.run(main())


def test_fifo_and_no_starvation(rng):
    async def main():
        run = FakeRun(gated=True)
        b = batcher(run, size=1)                          # no merging: strictly one at a time
        feeds = [{"x": np.full((1, 3), i + 1, np.float32)} for i in range(6)]
        tasks = []
        for f in feeds:
            tasks.append(asyncio.create_task(b.submit(f)))
            await asyncio.sleep(0)
        run.release()
        await asyncio.gather(*tasks)
        assert [c["x"][0, 0] for c in run.calls] == [1, 2, 3, 4, 5, 6]
        await b.close()

        # An incompatible request is not overtaken by later compatible ones forever.
        run = FakeRun(gated=True)
        b = batcher(run, size=2)
        order = [3, 4, 3, 3, 3]                           # widths: A, B, A, A, A
        tasks = [asyncio.create_task(b.submit(feed(rng, width=order[0])))]
        await started(run)
        for w in order[1:]:
            tasks.append(asyncio.create_task(b.submit(feed(rng, width=w))))
            await asyncio.sleep(0)
        run.release()
        await asyncio.gather(*tasks)
        assert [c["x"].shape for c in run.calls] == [(1, 3), (1, 4), (2, 3), (1, 3)]
        await b.close()
    asyncio.run(main())


def test_large_requests_run_alone_and_bad_feeds(rng):
    async def main():
        run = FakeRun()
        b = batcher(run, size=4)
        big, small = feed(rng, 6), feed(rng, 1)
        (o1, _), (o2, _) = await asyncio.gather(b.submit(big), b.submit(small))
        assert_same(o1, run.solo(big["x"]))
        assert_same(o2, run.solo(small["x"]))
        assert run.rows() == [6, 1]
        with pytest.raises(InputError, match=r"\[batching\].*x has 2.*z has 3"):
            await b.submit({"x": np.ones((2, 3), np.float32), "z": np.ones((3,), np.float32)})
        with pytest.raises(InputError, match=r"\[batching\] x"):
            await b.submit({"x": np.float32(1)})
        assert b.pending == 0
        await b.close()
    asyncio.run(main())


# ---- a real engine ----------------------------------------------------------------------------

def test_real_engine_merged_equals_solo_bit_for_bit(rng, finish_model_fn):
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    import ember

    w = rng.standard_normal((64, 48)).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        "mm_relu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 48])],
        initializer=[numpy_helper.from_array(w, "w")])
    eng = ember.Engine(finish_model_fn(g, 17), threads=2)
    sizes = [1, 3, 2, 5, 1, 4, 7, 1]
    feeds = [{"x": rng.standard_normal((n, 64)).astype(np.float32)} for n in sizes]
    solo = [eng.run(f) for f in feeds]

    async def main():
        seen = []
        b = DynamicBatcher(eng.run, eng.inputs, eng.outputs, BatchingConfig(16, 20.0),
                           on_batch=lambda rows, reqs: seen.append(rows))
        results = await asyncio.gather(*(b.submit(f) for f in feeds))
        await b.close()
        return [r for r, _ in results], seen

    merged, seen = asyncio.run(main())
    assert max(seen) > 1 and sum(seen) == sum(sizes)
    for got, want in zip(merged, solo):
        assert_same(got, want)
