"""Bad input never crashes the process: corrupt model files and wrong feeds raise EmberErrors.

Model files are loaded in this process (pytest-timeout catches hangs). Feeds that reach C++
kernels (wrong dtype/rank, out-of-range ids) run in one child process, one JSON line per case,
so a missing bounds check fails the test with the child's returncode instead of killing pytest.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import ember
from ember_e2e import tiny_gpt_export

pytestmark = pytest.mark.timeout(120)


def _assert_model_error(fn, *names):
    with pytest.raises(ember.EmberError) as e:
        fn()
    assert isinstance(e.value, ember.ModelError), f"{type(e.value).__name__}: {e.value}"
    for n in names:
        assert n in str(e.value), f"message does not name {n!r}: {e.value}"
    return e.value


# ---- model files --------------------------------------------------------------------------

def test_garbage_file(tmp_path, rng):
    path = tmp_path / "garbage.onnx"
    path.write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    _assert_model_error(lambda: ember.Engine(str(path)), str(path))


def test_garbage_bytes(rng):
    _assert_model_error(lambda: ember.Engine(rng.integers(0, 256, 1000, dtype=np.uint8).tobytes()))


def test_text_file(tmp_path):
    path = tmp_path / "notes.onnx"
    path.write_text("this is not a model\n" * 20)
    _assert_model_error(lambda: ember.Engine(str(path)), str(path))


def test_empty_file(tmp_path):
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    _assert_model_error(lambda: ember.Engine(str(path)), str(path))


def test_directory_path(tmp_path):
    with pytest.raises(ember.EmberError) as e:
        ember.Engine(str(tmp_path))
    assert str(tmp_path) in str(e.value)


@pytest.mark.parametrize("path", ["/nonexistent/ember/model.onnx", "no_such_model.onnx"])
def test_missing_path(path, tmp_path, monkeypatch):
    monkeypatch.setenv("EMBER_CACHE", str(tmp_path))
    with pytest.raises(ember.EmberError) as e:
        ember.Engine(path)
    assert path in str(e.value)


@pytest.fixture(scope="module")
def real_model_bytes(export_dir):
    """A real torch export (the tiny GPT-2-style decoder) as one self-contained ONNX file."""
    import onnx

    path, _, _ = tiny_gpt_export(export_dir)
    return path, onnx.load(path).SerializeToString()


@pytest.mark.slow
def test_truncated_model_files(real_model_bytes, tmp_path):
    _, data = real_model_bytes
    n = len(data)
    with ember.Engine(data) as eng:                # the untruncated bytes load and run
        assert eng.run({"input_ids": np.array([[1, 2, 3]])})["logits"].shape[:2] == (1, 3)
    offsets = sorted({1, 2, 9, 64, 333, n // 10, n // 3, n // 2, (9 * n) // 10, n - 1})
    assert len(offsets) == 10 and n > 100_000
    failures = []
    for off in offsets:
        path = tmp_path / f"truncated_{off}.onnx"
        path.write_bytes(data[:off])
        try:
            ember.Engine(str(path)).close()
            failures.append(f"offset {off}/{n}: loaded without error")
        except ember.ModelError as e:
            if str(path) not in str(e):
                failures.append(f"offset {off}/{n}: message does not name the file: {e}")
        except ember.EmberError as e:
            failures.append(f"offset {off}/{n}: {type(e).__name__} instead of ModelError: {e}")
        try:                                       # the same bytes given in memory
            ember.Engine(data[:off]).close()
            failures.append(f"offset {off}/{n} (bytes): loaded without error")
        except ember.ModelError:
            pass
        except ember.EmberError as e:
            failures.append(f"offset {off}/{n} (bytes): {type(e).__name__}: {e}")
    assert not failures, "\n".join(failures)


@pytest.mark.slow
def test_truncated_external_data(real_model_bytes, tmp_path):
    """Weights in a side file (what torch's dynamo exporter writes) that is cut short."""
    import onnx

    src, _ = real_model_bytes
    model = onnx.load(src)
    onnx.save_model(model, str(tmp_path / "model.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="model.onnx.data", size_threshold=1024)
    data_path = tmp_path / "model.onnx.data"
    full = data_path.read_bytes()
    with ember.Engine(str(tmp_path / "model.onnx")) as eng:
        eng.run({"input_ids": np.array([[5, 6]])})
    for cut in (len(full) // 2, len(full) - 1):
        data_path.write_bytes(full[:cut])
        e = _assert_model_error(lambda: ember.Engine(str(tmp_path / "model.onnx")))
        assert "model.onnx" in str(e)
    data_path.unlink()
    _assert_model_error(lambda: ember.Engine(str(tmp_path / "model.onnx")), "model.onnx.data")


# ---- feeds --------------------------------------------------------------------------------

# name -> (python expression for the feeds, given `ids`, `mask`, `types` of shape [2, 7]; expected)
# expected: an error class name, "ok", or "ok_or_error".
FEED_CASES = {
    "missing_input": ("{'input_ids': ids, 'attention_mask': mask}", "InputError"),
    "unknown_name": ("{'input_ids': ids, 'attention_mask': mask, 'token_type_ids': types, "
                     "'bogus': ids}", "InputError"),
    "float_ids": ("{'input_ids': ids.astype(np.float32), 'attention_mask': mask, "
                  "'token_type_ids': types}", "InputError"),
    "int32_ids": ("{'input_ids': ids.astype(np.int32), 'attention_mask': mask, "
                  "'token_type_ids': types}", "InputError"),
    "rank1_ids": ("{'input_ids': ids[0], 'attention_mask': mask, 'token_type_ids': types}",
                  "InputError"),
    "rank3_ids": ("{'input_ids': ids[None], 'attention_mask': mask, 'token_type_ids': types}",
                  "InputError"),
    "seq_mismatch": ("{'input_ids': ids, 'attention_mask': mask[:, :5], 'token_type_ids': types}",
                     "InputError"),
    "ids_1e9": ("{'input_ids': np.where(ids == ids[0, 3], 10**9, ids), 'attention_mask': mask, "
                "'token_type_ids': types}", "InputError"),
    "ids_minus_1e9": ("{'input_ids': np.where(ids == ids[0, 3], -10**9, ids), "
                      "'attention_mask': mask, 'token_type_ids': types}", "InputError"),
    "ids_vocab_size": ("{'input_ids': np.full_like(ids, 30522), 'attention_mask': mask, "
                       "'token_type_ids': types}", "InputError"),
    "token_type_2": ("{'input_ids': ids, 'attention_mask': mask, 'token_type_ids': types + 2}",
                     "InputError"),
    "seq_513_over_positions": ("{k: np.ones((1, 513), np.int64) for k in "
                               "('input_ids', 'attention_mask', 'token_type_ids')}", "InputError"),
    "negative_ids_in_range": ("{'input_ids': ids - 30522, 'attention_mask': mask, "
                              "'token_type_ids': types}", "ok"),
    "python_lists": ("{'input_ids': ids.tolist(), 'attention_mask': mask.tolist(), "
                     "'token_type_ids': types.tolist()}", "ok"),
    "empty_batch": ("{'input_ids': ids[:0], 'attention_mask': mask[:0], "
                    "'token_type_ids': types[:0]}", "ok_or_error"),
}

_CHILD = """
import json, sys
import numpy as np
import ember

eng = ember.Engine({path!r})
ids = np.array([[101, 7592, 2088, 2003, 2200, 999, 102], [101, 2748, 102, 0, 0, 0, 0]], np.int64)
mask = (ids != 0).astype(np.int64)
types = np.zeros_like(ids)
good = {{'input_ids': ids, 'attention_mask': mask, 'token_type_ids': types}}
ref = eng.run(good)['last_hidden_state']
for name, expr in {cases!r}.items():
    print(json.dumps({{'case': name, 'started': True}}), flush=True)
    res = {{'case': name, 'raised': None}}
    try:
        out = eng.run(eval(expr))
        res['shapes'] = {{k: list(v.shape) for k, v in out.items()}}
    except Exception as e:
        res.update(raised=type(e).__name__, mro=[c.__name__ for c in type(e).__mro__], msg=str(e))
    again = eng.run(good)['last_hidden_state']
    res['still_works'] = bool(np.array_equal(again, ref))
    print(json.dumps(res), flush=True)
print(json.dumps({{'case': '__done__'}}), flush=True)
"""


@pytest.fixture(scope="module")
def feed_results(minilm_bert_onnx_path):
    """Runs every FEED_CASES entry on MiniLM in one child: {case: result | None}, returncode."""
    import ember as _ember

    code = _CHILD.format(path=minilm_bert_onnx_path,
                         cases={k: v[0] for k, v in FEED_CASES.items()})
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(_ember.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    try:
        proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                              text=True, timeout=100, env=env)
        out, err, rc = proc.stdout, proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        err, rc = "hung (timeout 100 s)", "timeout"
    results, last_started = {}, None
    for line in out.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if row.get("started"):
            last_started = row["case"]
        else:
            results[row["case"]] = row
    return results, rc, last_started, err[-3000:]


_NAMES = {
    "missing_input": ["token_type_ids"],
    "unknown_name": ["bogus"],
    "float_ids": ["input_ids", "int64", "float32"],
    "int32_ids": ["input_ids", "int64", "int32"],
    "rank1_ids": ["input_ids", "7"],
    "rank3_ids": ["input_ids"],
    "seq_mismatch": ["attention_mask", "5", "7"],   # both inputs declare [batch, seq]
}


@pytest.mark.parametrize("case", list(FEED_CASES))
def test_wrong_feed(feed_results, case):
    results, rc, last_started, stderr = feed_results
    expected = FEED_CASES[case][1]
    res = results.get(case)
    if res is None:
        if last_started == case:
            pytest.fail(f"the child process died running case {case!r}: returncode {rc}\n{stderr}")
        pytest.fail(f"case {case!r} never ran: the child died earlier in case {last_started!r} "
                    f"(returncode {rc})\n{stderr}")
    assert res["still_works"], "the engine gives different results after this bad feed"
    if expected == "ok":
        assert res["raised"] is None, f"{res['raised']}: {res.get('msg')}"
        return
    if expected == "ok_or_error":
        assert res["raised"] is None or "EmberError" in res["mro"], res
        if res["raised"] is None:
            assert res["shapes"]["last_hidden_state"][0] == 0
        return
    assert res["raised"] is not None, f"no error; outputs {res.get('shapes')}"
    assert expected in res["mro"], f"{res['raised']} instead of {expected}: {res['msg']}"
    msg = res["msg"]
    for word in _NAMES.get(case, []):
        assert word in msg, f"message does not name {word!r}: {msg}"
    if case.startswith(("ids_", "token_type", "seq_513")):
        assert re.search(r"index|range|bound|vocab", msg, re.I), msg
        assert re.search(r"\bemb\.", msg), f"message does not name the Gather node: {msg}"


def test_feed_checks_ran_to_the_end(feed_results):
    results, rc, last_started, stderr = feed_results
    assert "__done__" in results and rc == 0, f"returncode {rc}, last case {last_started}\n{stderr}"


@pytest.mark.parametrize("feeds",
                         [[1, 2, 3], ("input_ids",), np.zeros((2, 7), np.int64), None, "ids"],
                         ids=["list", "tuple", "ndarray", "None", "str"])
def test_non_dict_feeds(minilm_engine, feeds):
    with pytest.raises(ember.InputError):
        minilm_engine.run(feeds)


def test_bad_outputs_argument(minilm_engine):
    ids = np.array([[101, 102]])
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": ids * 0}
    with pytest.raises(ember.EmberError) as e:
        minilm_engine.run(feeds, outputs=["no_such_output"])
    assert "no_such_output" in str(e.value)
    with pytest.raises(ember.InputError):
        minilm_engine.run(feeds, outputs="last_hidden_state")


def test_engine_after_close(minilm_bert_onnx_path):
    eng = ember.Engine(minilm_bert_onnx_path)
    ids = np.array([[101, 102]])
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": ids * 0}
    assert eng.run(feeds)["last_hidden_state"].shape == (1, 2, 384)
    eng.close()
    with pytest.raises(ember.EmberError, match="closed"):
        eng.run(feeds)
    eng.close()                                  # closing twice is harmless
    with ember.Engine(minilm_bert_onnx_path) as eng2:
        out = eng2.run(feeds)
    with pytest.raises(ember.EmberError):
        eng2.run(feeds)
    assert out["sentence_embedding"].shape == (1, 384)
