"""ember.AsyncEngine on SmolLM2-135M: the same tokens as the blocking Engine (alone and among 16
concurrent requests), streaming, stop strings, errors, an event loop that is never blocked, and
cancellation that frees the KV cache: a cancelled task, `break` out of `async for`, Ctrl-C."""
import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import ember

pytestmark = pytest.mark.slow

OPTS = dict(threads=2, max_model_len=512, kv_cache_bytes=32 << 20)
LONG = "Tell me a very long story about dragons."


@pytest.fixture(scope="module")
def gguf_path():
    from ember import hub
    try:
        return hub.resolve("smollm2-135m")
    except ember.EmberError as e:
        pytest.skip(f"smollm2-135m is not available: {e}")


@pytest.fixture(scope="module")
def ae(gguf_path):
    with ember.AsyncEngine(gguf_path, **OPTS) as e:
        yield e


async def settle(ae, timeout=10.0):
    """Waits (without blocking the loop) until no request runs and every KV block is free."""
    deadline = time.monotonic() + timeout
    while True:
        s = ae.llm_stats()
        if (s["running"] == 0 and s["waiting"] == 0 and s["free_blocks"] == s["num_blocks"]) \
                or time.monotonic() > deadline:
            return s
        await asyncio.sleep(0.01)


def assert_idle(s):
    assert s["running"] == 0 and s["waiting"] == 0, s
    assert s["free_blocks"] == s["num_blocks"], s


def test_is_exported_and_needs_an_llm():
    assert ember.AsyncEngine.__module__ == "ember.async_engine" and "AsyncEngine" in ember.__all__
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper
    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ember.EmberError, match="decoder LLM"):
        ember.AsyncEngine(model.SerializeToString())


def test_generate_matches_the_sync_engine(ae):
    prompt = "The capital of France is"
    want = ae.engine.generate(prompt, max_tokens=12)[0]
    got = asyncio.run(ae.generate(prompt, max_tokens=12))
    assert len(got) == 1 and got[0] == want
    assert "Paris" in got[0].text
    # A list of prompts in one call, and token-id prompts, as Engine.generate takes them.
    ids = ae.tokenizer.encode(prompt)
    both = asyncio.run(ae.generate([prompt, ids], max_tokens=12))
    assert [c.token_ids for c in both] == [want.token_ids] * 2


def test_16_concurrent_requests_match_each_alone(ae):
    prompts = [f"Item {i}: a short note about {w}" for i, w in enumerate(
        "rivers cats stars bread music snow glass paper iron wind honey maps clocks ships salt moss".split())]

    async def main():
        return await asyncio.gather(*(ae.generate(p, max_tokens=16, ignore_eos=True) for p in prompts))
    together = asyncio.run(main())
    assert ae.llm_stats()["running"] == 0
    for p, got in zip(prompts, together):
        alone = ae.engine.generate(p, max_tokens=16, ignore_eos=True)[0]
        assert got[0].token_ids == alone.token_ids and got[0].text == alone.text, p


def test_stream_deltas_concatenate_to_generate(ae):
    prompt = "Les élèves ont étudié 3 langues: 日本語, español et "

    async def main():
        want = (await ae.generate(prompt, max_tokens=24))[0]
        stream = ae.stream(prompt, max_tokens=24)
        deltas = [d async for d in stream]
        return want, deltas, stream.completion
    want, deltas, completion = asyncio.run(main())
    assert "".join(deltas) == want.text and len(deltas) > 1 and all(deltas)
    assert completion == want
    assert deltas == list(ae.engine.stream(prompt, max_tokens=24))


def test_stop_strings(ae):
    async def main():
        full = (await ae.generate("Count: 1, 2, 3,", max_tokens=20, ignore_eos=True))[0].text
        cut = (await ae.generate("Count: 1, 2, 3,", max_tokens=20, stop=" 5,", ignore_eos=True))[0]
        streamed = [d async for d in ae.stream("Count: 1, 2, 3,", max_tokens=20, stop=[" 5,"],
                                                ignore_eos=True)]
        return full, cut, streamed, await settle(ae)
    full, cut, streamed, stats = asyncio.run(main())
    assert " 5," in full
    assert cut.finish_reason == "stop" and cut.text == full[:full.index(" 5,")]
    assert "".join(streamed) == cut.text
    assert cut == ae.engine.generate("Count: 1, 2, 3,", max_tokens=20, stop=" 5,", ignore_eos=True)[0]
    assert_idle(stats)


def test_chat_and_score(ae):
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    got = asyncio.run(ae.chat(msgs, max_tokens=20))
    assert got == ae.engine.chat(msgs, max_tokens=20) and "Paris" in got.text
    assert asyncio.run(ae.score("The capital of France is Paris.")) == \
        ae.engine.score("The capital of France is Paris.")


def test_cancelling_the_task_frees_blocks(ae):
    async def main():
        # Counters settle first: tokens of an earlier test counted late must not end the wait
        # below before this request runs (seen once in a full-suite run).
        before = (await settle(ae))["generated_tokens"]
        task = asyncio.create_task(ae.generate(LONG, max_tokens=400, ignore_eos=True))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            s = ae.llm_stats()
            if s["running"] == 1 and s["generated_tokens"] - before >= 3:
                break
            await asyncio.sleep(0.01)
        busy = ae.llm_stats()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return before, busy, await settle(ae)
    before, busy, stats = asyncio.run(main())
    assert busy["running"] == 1 and busy["free_blocks"] < busy["num_blocks"], busy
    assert_idle(stats)
    assert stats["generated_tokens"] - before < 300  # it stopped long before max_tokens


def test_leaving_async_for_frees_blocks(ae):
    async def main():
        n = 0
        async for _ in ae.stream(LONG, max_tokens=400, ignore_eos=True):
            n += 1
            if n == 3:
                busy = ae.llm_stats()
                break            # the dropped stream cancels its request
        after_break = await settle(ae)
        # A stream kept in a variable: aclose() (or async with) cancels it.
        stream = ae.stream(LONG, max_tokens=400, ignore_eos=True)
        async with stream:
            async for _ in stream:
                break
        after_with = await settle(ae)
        stream = ae.stream(LONG, max_tokens=400, ignore_eos=True)
        await stream.__anext__()
        await stream.aclose()
        return busy, after_break, after_with, await settle(ae), stream
    before = ae.llm_stats()["generated_tokens"]
    busy, after_break, after_with, after_aclose, stream = asyncio.run(main())
    assert busy["running"] == 1 and busy["free_blocks"] < busy["num_blocks"]
    for s in (after_break, after_with, after_aclose):
        assert_idle(s)
    assert after_aclose["generated_tokens"] - before < 600
    assert stream.completion is None


def test_errors_raise_from_await(ae):
    async def main():
        with pytest.raises(ember.InputError, match="max_tokens"):
            await ae.generate("hi", max_tokens=0)
        with pytest.raises(ember.InputError, match="max_tokens"):
            async for _ in ae.stream("hi", max_tokens=-1):
                pass
        with pytest.raises(ember.InputError, match="unknown sampling"):
            await ae.generate("hi", bogus=3)
        # One bad prompt in a batch: the call fails and the prompts already queued are cancelled.
        with pytest.raises(ember.InputError, match="prompt"):
            await ae.generate([LONG, 3.5], max_tokens=400, ignore_eos=True)
        stats = await settle(ae)
        ok = await ae.generate("The capital of France is", max_tokens=3)
        return stats, ok
    stats, ok = asyncio.run(main())
    assert_idle(stats)
    assert ok[0].token_ids


def test_event_loop_keeps_running(ae):
    async def main():
        ticks, stop = 0, False

        async def ticker():
            nonlocal ticks
            while not stop:
                await asyncio.sleep(0.01)
                ticks += 1
        t = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        start = time.monotonic()
        out = await ae.generate(LONG, max_tokens=64, ignore_eos=True)
        elapsed = time.monotonic() - start
        stop = True
        await t
        return ticks, elapsed, out
    ticks, elapsed, out = asyncio.run(main())
    assert len(out[0].token_ids) == 64
    # A blocked loop would tick about once; a free one about elapsed / 10 ms times.
    assert ticks >= 10 and ticks >= 0.2 * elapsed / 0.01, (ticks, elapsed)


def test_llm_stats_never_waits_out_the_generation(gguf_path):
    """llm_stats() reads the snapshot the step loop publishes after each step: it once waited
    on the step mutex, which the loop thread retakes at once, for up to a whole generation."""
    async def main():
        async with await ember.AsyncEngine.create(gguf_path, **OPTS) as ae2:
            task = asyncio.create_task(ae2.generate(LONG, max_tokens=200, ignore_eos=True))
            seen, worst = set(), 0.0
            while not task.done():
                t0 = time.perf_counter()
                seen.add(ae2.llm_stats()["generated_tokens"])
                worst = max(worst, time.perf_counter() - t0)
                await asyncio.sleep(0.005)
            await task
        return seen, worst
    seen, worst = asyncio.run(main())
    assert worst < 0.25, f"llm_stats() took {worst:.3f} s"
    assert len(seen) >= 10, f"only {len(seen)} distinct token counts seen while generating 200"


def test_create_in_a_thread_and_close_fails_requests_in_flight(gguf_path):
    async def main():
        ae2 = await ember.AsyncEngine.create(gguf_path, **OPTS)
        task = asyncio.create_task(ae2.generate(LONG, max_tokens=400, ignore_eos=True))
        while ae2.llm_stats()["generated_tokens"] < 2:
            await asyncio.sleep(0.01)
        await ae2.aclose()
        with pytest.raises(ember.EmberError, match="closed"):
            await asyncio.wait_for(task, 10)
        with pytest.raises(ember.EmberError, match="closed"):
            await ae2.generate("hi")
    asyncio.run(main())


CTRL_C = textwrap.dedent("""
    import asyncio, os, signal, sys, time
    import ember
    ae = ember.AsyncEngine(sys.argv[1], threads=2, max_model_len=512, kv_cache_bytes=32 << 20)

    async def main():
        async for _ in ae.stream("Tell me a very long story about dragons.", max_tokens=400,
                                 ignore_eos=True):
            print("SIGINT_AT", time.time(), flush=True)
            os.kill(os.getpid(), signal.SIGINT)
            await asyncio.sleep(30)   # the interrupt lands here (or in the stream's wait)
    if sys.argv[2] == "close":
        try:
            asyncio.run(main())
        except KeyboardInterrupt:
            deadline = time.time() + 5
            while True:
                s = ae.llm_stats()
                if s["running"] == 0 and s["free_blocks"] == s["num_blocks"] or time.time() > deadline:
                    break
                time.sleep(0.01)
            print("STATS", s["running"], s["free_blocks"], s["num_blocks"], s["generated_tokens"],
                  flush=True)
            ae.close()
            print("CLOSED", flush=True)
    else:
        asyncio.run(main())   # KeyboardInterrupt unhandled; the engine is closed at exit
""")


@pytest.mark.parametrize("how", ["close", "exit"])
def test_ctrl_c_cancels_and_exits_cleanly(gguf_path, how):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (
        os.path.dirname(os.path.dirname(ember.__file__)), os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.run([sys.executable, "-c", CTRL_C, gguf_path, how], capture_output=True,
                          text=True, timeout=60, env=env)
    done = time.time()
    out, err = proc.stdout, proc.stderr
    assert "terminate called" not in err and "Fatal Python error" not in err, err
    sent = [float(line.split()[1]) for line in out.splitlines() if line.startswith("SIGINT_AT")]
    assert len(sent) == 1, (out, err)
    assert done - sent[0] < 5, f"took {done - sent[0]:.1f} s to exit after SIGINT"
    if how == "close":
        assert proc.returncode == 0, (out, err)
        stats = next(line.split()[1:] for line in out.splitlines() if line.startswith("STATS"))
        running, free, total, generated = map(int, stats)
        assert running == 0 and free == total and generated < 300, out
        assert "CLOSED" in out
    else:
        assert proc.returncode in (-signal.SIGINT, 128 + signal.SIGINT), (proc.returncode, err)
        assert "KeyboardInterrupt" in err
