"""`ember generate / chat / info / models` on the default LLM (SmolLM2-135M GGUF): in-process
through cli.main() where output is all that matters, as a subprocess for exit codes, tracebacks
and Ctrl-C."""

import io
import json
import os
import re
import signal
import subprocess
import sys

import onnx
import pytest
from onnx import TensorProto, helper

from ember import cli, hub
from ember.errors import EmberError

SUMMARY = re.compile(r"^(\d+) tokens, finish (\w+); prompt (\d+) tokens, first token in \d+ ms "
                     r"\(\d+ tok/s\); decode [\d.-]+ tok/s", re.M)


@pytest.fixture(scope="module")
def gguf_path():
    try:
        return hub.resolve("smollm2-135m")
    except EmberError as e:
        pytest.skip(f"smollm2-135m is not available here: {e}")


def ember(*args, stdin=""):
    """cli.main() in this process -> (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    old = sys.stdin, sys.stdout, sys.stderr
    sys.stdin, sys.stdout, sys.stderr = io.StringIO(stdin), out, err
    try:
        rc = cli.main([str(a) for a in args])
    finally:
        sys.stdin, sys.stdout, sys.stderr = old
    return rc, out.getvalue(), err.getvalue()


def ember_process(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "ember", *map(str, args)], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def test_generate_streams_the_text_then_a_summary(gguf_path):
    # The default model by name: `ember generate "..."` works right after install.
    rc, out, err = ember("generate", "The capital of France is", "--max-tokens", 8,
                         "--temperature", 0)
    assert rc == 0, err
    assert "Paris" in out and out.endswith("\n")
    m = SUMMARY.search(err)
    assert m, err
    assert int(m[1]) <= 8 and m[2] in ("length", "stop") and int(m[3]) == 5
    # --json: the same greedy text, with ids, usage and timings
    rc, js, err = ember("generate", "The capital of France is", "--max-tokens", 8,
                        "--model", gguf_path, "--json")
    assert rc == 0, err
    r = json.loads(js)
    assert r["text"] + "\n" == out
    assert r["finish_reason"] in ("length", "stop")
    assert r["usage"]["completion_tokens"] == len(r["token_ids"]) <= 8
    assert r["usage"]["prompt_tokens"] == 5
    assert r["timings"]["time_to_first_token_s"] > 0 and r["timings"]["total_s"] > 0


def test_generate_reads_the_prompt_from_stdin_and_applies_stop(gguf_path):
    rc, out, err = ember("generate", "-m", gguf_path, "--max-tokens", 8, "--stop", ".",
                         stdin="The capital of France is\n")
    assert rc == 0, err
    assert out == " Paris\n"                     # cut before the stop string
    assert SUMMARY.search(err)[2] == "stop"


def test_chat_over_a_pipe_keeps_history_and_resets(gguf_path):
    lines = "Hi\nWhat is the capital of France?\n\n/reset\nHi\n/exit\nignored after /exit\n"
    rc, out, err = ember("chat", "-m", gguf_path, "--max-tokens", 12, "--stats", stdin=lines)
    assert rc == 0, err
    turns = [(int(n), int(p)) for n, _, p in SUMMARY.findall(err)]
    assert len(turns) == 3, err                  # the blank line and /reset are not turns
    (n1, p1), (n2, p2), (n3, p3) = turns
    assert p2 > p1 + n1                          # the second turn sees the first one
    assert p3 == p1                              # /reset: the third starts afresh
    assert out.count("\n") >= 3
    rc, out_fresh, _ = ember("chat", "-m", gguf_path, "--max-tokens", 12, stdin="Hi\n")
    assert out.startswith(out_fresh) and out.endswith(out_fresh)   # greedy: same reply to "Hi"


def test_info_on_gguf_states_the_memory_plan(gguf_path):
    rc, out, err = ember("info", gguf_path)
    assert rc == 0, err
    assert "layers 30" in out and "kv heads 3" in out and "head dim 64" in out
    assert "KV per token: 23040 bytes" in out    # 30 layers x 2 x 3 kv heads x 64 x 2 bytes
    assert "sequences at full length" in out and "MiB" in out
    rc, js, err = ember("info", "smollm2-135m", "--json", "--kv-dtype", "f32", "--max-model-len",
                        2048, "--max-num-seqs", 4, "--kv-cache-bytes", "128MiB")
    assert rc == 0, err
    plan = json.loads(js)
    assert plan["kv_bytes_per_token"] == 46080 and plan["kv_dtype"] == "f32"
    assert plan["kv_cache_bytes"] <= 128 << 20 and plan["max_model_len"] == 2048
    assert plan["full_length_sequences"] == plan["kv_tokens"] // 2048 == 1
    assert {"arch", "layers", "weight_bytes", "weight_types", "kv_blocks"} <= set(plan)
    rc, _, err = ember("info", gguf_path, "--kv-cache-bytes", "1MiB")
    assert rc == 2 and "ember: error:" in err and "kv_cache_bytes" in err


def test_info_llm_options_are_refused_for_onnx(tmp_path):
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    rc, out, err = ember("info", path, "--kv-dtype", "f16")
    assert rc == 2 and "--kv-dtype" in err and "GGUF" in err


def test_models_lists_the_default_llm_as_available(gguf_path):
    rc, js, err = ember("models", "--json")
    assert rc == 0, err
    rows = {r["name"]: r for r in json.loads(js)}
    assert rows["smollm2-135m"]["format"] == "gguf"
    assert rows["smollm2-135m"]["state"].startswith("available")
    assert rows["smollm2-135m"]["path"] and os.path.samefile(rows["smollm2-135m"]["path"], gguf_path)


def test_errors_are_one_line_without_traceback(tmp_path):
    p = ember_process("generate", "hi", "--model", tmp_path / "missing.gguf")
    out, err = p.communicate(timeout=60)
    assert p.returncode == 2 and err.startswith("ember: error:") and "missing.gguf" in err
    assert "Traceback" not in err
    rc, _, err = ember("generate", "hi", "--max-tokens", 0)
    assert rc == 2 and "--max-tokens must be >= 1" in err
    rc, _, err = ember("generate", stdin="")
    assert rc == 2 and "prompt is empty" in err
    rc, _, err = ember("chat", "--seed", -1)
    assert rc == 2 and "--seed" in err


@pytest.mark.skipif(os.name != "posix", reason="sends SIGINT")
def test_ctrl_c_cancels_generate_cleanly(gguf_path):
    p = ember_process("generate", "Once upon a time", "-m", gguf_path, "--ignore-eos",
                      "--max-tokens", 3000)
    p.stdout.read(8)                             # streaming has begun
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "Traceback" not in err
    m = SUMMARY.search(err)
    assert m and m[2] == "abort" and int(m[1]) < 3000


@pytest.mark.skipif(os.name != "posix", reason="sends SIGINT")
def test_ctrl_c_in_chat_cancels_the_reply_only(gguf_path):
    p = ember_process("chat", "-m", gguf_path, "--max-tokens", 400, "--stats",
                      stdin=subprocess.PIPE)
    # Greedy, this reply runs the full 400 tokens: the signal lands mid-reply.
    p.stdin.write("Write a very long story about a dragon.\n")
    p.stdin.flush()
    p.stdout.read(8)
    p.send_signal(signal.SIGINT)
    p.stdin.write("Hi\n")
    p.stdin.close()
    p.wait(timeout=60)
    err = p.stderr.read()
    assert p.returncode == 0, err
    assert "(reply cancelled)" in err and "Traceback" not in err
    assert [r for _, r, _ in SUMMARY.findall(err)] == ["stop"]   # only "Hi" was answered
