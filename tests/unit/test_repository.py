"""The model repository's file-system side: layouts, invalid versions, settling, state file."""

import json
import os

import pytest

from ember.errors import ModelError
from ember.serve.repository import (RepositoryWatcher, StateStore, VersionSource,
                                    scan_repository)


def write(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def hf_folder(vdir):
    write(vdir / "model" / "config.json", b"{}")
    write(vdir / "model" / "model.safetensors", b"\0" * 16)


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


@pytest.fixture
def watch(tmp_path):
    clock = Clock()
    return tmp_path, clock, RepositoryWatcher(str(tmp_path), settle_s=1.0, clock=clock)


# ---- layouts -------------------------------------------------------------------------------

def test_layouts_onnx_gguf_and_hf_folder(tmp_path):
    onnx = write(tmp_path / "enc" / "1" / "model.onnx")
    write(tmp_path / "enc" / "1" / "tokenizer.json", b"{}")
    write(tmp_path / "enc" / "1" / "1_Pooling" / "config.json", b"{}")  # sentence-transformers
    gguf = write(tmp_path / "llm" / "3" / "model.gguf")
    hf_folder(tmp_path / "hf" / "2")
    repo = scan_repository(str(tmp_path))
    assert sorted(repo) == ["enc", "hf", "llm"]
    assert repo["enc"].versions[1].path == str(onnx)
    assert repo["llm"].versions[3].path == str(gguf)
    assert repo["hf"].versions[2].path == str(tmp_path / "hf" / "2" / "model")
    assert all(not m.invalid and m.config_error is None for m in repo.values())
    assert repo["enc"].config.kind == "auto" and repo["enc"].config_fingerprint is None
    fp = repo["enc"].versions[1].fingerprint
    assert [f[0] for f in fp] == ["1_Pooling/config.json", "model.onnx", "tokenizer.json"]


def test_invalid_versions_carry_reasons(tmp_path):
    m = tmp_path / "m"
    write(m / "1" / "weights.bin")
    write(m / "2" / "model.onnx")
    write(m / "2" / "model.gguf")
    write(m / "3" / "model.gguf")
    write(m / "3" / "README.md")
    write(m / "4" / "model" / "config.json", b"{}")  # no safetensors
    (m / "5" / "model.onnx").mkdir(parents=True)
    (m / "6").mkdir()
    hf_folder(m / "7")
    hf_folder(m / "007")
    write(m / "8")  # a file named like a version
    (m / "9").mkdir()
    os.symlink(m / "nowhere.gguf", m / "9" / "model.gguf")  # dangling
    write(m / "10" / "model.onnx")
    write(m / "10" / ".DS_Store")  # hidden entries do not count against a layout
    repo = scan_repository(str(tmp_path))["m"]
    assert list(repo.versions) == [10]
    why = repo.invalid
    assert sorted(why) == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert "no model.onnx" in why[1] and "weights.bin" in why[1]
    assert "more than one model" in why[2]
    assert "README.md" in why[3]
    assert "safetensors" in why[4]
    assert "not a readable file" in why[5] and "not a readable file" in why[9]
    assert "found: nothing" in why[6]
    assert "007 and 7" in why[7]
    assert "not a folder" in why[8]


def test_ignored_names(tmp_path):
    write(tmp_path / ".hidden" / "1" / "model.onnx")
    write(tmp_path / "bad name" / "1" / "model.onnx")
    write(tmp_path / "_under" / "1" / "model.onnx")
    write(tmp_path / ("x" * 65) / "1" / "model.onnx")
    write(tmp_path / "file.onnx")
    write(tmp_path / "ok.v-1_2" / "1" / "model.onnx")
    write(tmp_path / "ok.v-1_2" / "latest" / "model.onnx")   # not a version number
    write(tmp_path / "ok.v-1_2" / ".2" / "model.onnx")        # a version being copied in
    write(tmp_path / "ok.v-1_2" / "notes.txt")
    repo = scan_repository(str(tmp_path))
    assert list(repo) == ["ok.v-1_2"]
    assert list(repo["ok.v-1_2"].versions) == [1] and not repo["ok.v-1_2"].invalid


def test_config_errors_are_recorded_per_model(tmp_path):
    write(tmp_path / "bad" / "config.toml", b"thread = 2\n")
    write(tmp_path / "bad" / "1" / "model.onnx")
    write(tmp_path / "good" / "config.toml", b"threads = 2\n[version_policy]\nall = true\n")
    write(tmp_path / "good" / "1" / "model.onnx")
    repo = scan_repository(str(tmp_path))
    assert repo["bad"].config is None and "unknown key(s) thread" in repo["bad"].config_error
    assert 1 in repo["bad"].versions
    assert repo["good"].config.threads == 2 and repo["good"].config_error is None
    assert repo["good"].config.version_policy.select([1, 2]) == [1, 2]


def test_missing_root_raises(tmp_path):
    with pytest.raises(ModelError, match=r"\[serve\] model repository .* missing"):
        scan_repository(str(tmp_path / "nope"))
    with pytest.raises(ModelError, match="not a folder"):
        scan_repository(str(write(tmp_path / "f")))


def test_unreadable_folders_are_recorded(tmp_path, monkeypatch):
    write(tmp_path / "m" / "1" / "model.onnx")
    write(tmp_path / "m" / "2" / "model.onnx")
    write(tmp_path / "locked" / "1" / "model.onnx")
    real_listdir = os.listdir
    denied = {str(tmp_path / "m" / "2"), str(tmp_path / "locked")}

    def listdir(path):  # chmod 0 does not stop root, so deny by hand
        if str(path) in denied:
            raise PermissionError(13, "Permission denied", str(path))
        return real_listdir(path)

    monkeypatch.setattr(os, "listdir", listdir)
    repo = scan_repository(str(tmp_path))
    assert list(repo["m"].versions) == [1] and "cannot list" in repo["m"].invalid[2]
    assert not repo["locked"].versions and "cannot list" in repo["locked"].config_error


def test_symlinks_are_followed(tmp_path):
    outside = write(tmp_path / "elsewhere" / "big.gguf", b"weights")
    repo = tmp_path / "repo"
    (repo / "m" / "1").mkdir(parents=True)
    os.symlink(outside, repo / "m" / "1" / "model.gguf")
    v = scan_repository(str(repo))["m"].versions[1]
    assert v.path == str(repo / "m" / "1" / "model.gguf")
    assert v.fingerprint[0][:2] == ("model.gguf", len(b"weights"))  # the target's size


# ---- settling ------------------------------------------------------------------------------

def test_first_poll_is_ready_at_once(watch):
    root, clock, w = watch
    write(root / "a" / "1" / "model.onnx")
    write(root / "b" / "2" / "model.gguf")
    ch = w.poll()
    assert sorted(ch.ready) == ["a", "b"] and not ch.unsettled and not ch.removed
    assert isinstance(ch.ready["a"].versions[1], VersionSource)
    clock.t += 5
    ch = w.poll()
    assert not ch.ready and not ch.unsettled and not ch.removed


def test_new_version_settles(watch):
    root, clock, w = watch
    write(root / "m" / "1" / "model.onnx")
    w.poll()
    write(root / "m" / "2" / "model.onnx", b"half")
    ch = w.poll()
    assert ch.unsettled == {"m": [2]} and not ch.ready
    clock.t += 0.5
    assert w.poll().unsettled == {"m": [2]}
    clock.t += 0.5
    ch = w.poll()
    assert not ch.unsettled and list(ch.ready["m"].versions) == [1, 2]


def test_growing_file_stays_unsettled(watch):
    root, clock, w = watch
    w.poll()
    f = write(root / "m" / "1" / "model.gguf", b"a")
    assert w.poll().unsettled == {"m": [1]}
    for _ in range(4):  # the copy keeps writing: each change restarts the wait
        clock.t += 0.6
        with open(f, "ab") as fh:
            fh.write(b"more")
        ch = w.poll()
        assert ch.unsettled == {"m": [1]} and not ch.ready
    clock.t += 1.0
    ch = w.poll()
    assert ch.ready["m"].versions[1].fingerprint[0][1] == 1 + 4 * 4


def test_changed_settled_version_keeps_old_until_settled(watch):
    root, clock, w = watch
    f = write(root / "m" / "1" / "model.onnx", b"old")
    old = w.poll().ready["m"].versions[1]
    write(f, b"newer")
    ch = w.poll()
    assert ch.unsettled == {"m": [1]} and not ch.ready
    clock.t += 1.0
    new = w.poll().ready["m"].versions[1]
    assert new.fingerprint != old.fingerprint


def test_settled_version_turning_invalid_leaves_versions(watch):
    root, clock, w = watch
    write(root / "m" / "1" / "model.onnx")
    f = write(root / "m" / "2" / "model.onnx")
    w.poll()
    os.rename(f, root / "m" / "2" / "other.onnx")
    assert w.poll().unsettled == {"m": [2]}
    clock.t += 1.0
    m = w.poll().ready["m"]
    assert list(m.versions) == [1] and "other.onnx" in m.invalid[2]


def test_version_removed_and_model_removed(watch):
    root, clock, w = watch
    write(root / "m" / "1" / "model.onnx")
    write(root / "m" / "2" / "model.onnx")
    w.poll()
    for p in (root / "m" / "2").iterdir():
        p.unlink()
    (root / "m" / "2").rmdir()
    ch = w.poll()  # a disappearance needs no settling
    assert list(ch.ready["m"].versions) == [1]
    for p in (root / "m" / "1").iterdir():
        p.unlink()
    (root / "m" / "1").rmdir()
    (root / "m").rmdir()
    ch = w.poll()
    assert ch.removed == ["m"] and not ch.ready


def test_config_change_is_reported_after_settling(watch):
    root, clock, w = watch
    write(root / "m" / "1" / "model.onnx")
    assert w.poll().ready["m"].config.threads is None
    write(root / "m" / "config.toml", b"threads = 3\n")
    assert not w.poll().ready
    clock.t += 1.0
    m = w.poll().ready["m"]
    assert m.config.threads == 3 and list(m.versions) == [1]
    write(root / "m" / "config.toml", b"threads = x\n")
    clock.t += 1.0
    assert not w.poll().ready
    clock.t += 1.0
    m = w.poll().ready["m"]
    assert m.config is None and "config.toml" in m.config_error


def test_atomic_rename_of_hidden_folder(watch):
    root, clock, w = watch
    write(root / "m" / "1" / "model.onnx")
    w.poll()
    hf_folder(root / "m" / ".incoming")
    clock.t += 5
    ch = w.poll()
    assert not ch.ready and not ch.unsettled  # hidden: not even seen
    os.rename(root / "m" / ".incoming", root / "m" / "2")
    assert w.poll().unsettled == {"m": [2]}
    clock.t += 1.0
    assert w.poll().ready["m"].versions[2].path == str(root / "m" / "2" / "model")


def test_new_model_waits_for_settling(watch):
    root, clock, w = watch
    w.poll()
    write(root / "new" / "1" / "model.onnx")
    ch = w.poll()
    assert not ch.ready and ch.unsettled == {"new": [1]}
    clock.t += 1.0
    assert list(w.poll().ready["new"].versions) == [1]


# ---- state store ---------------------------------------------------------------------------

def test_state_round_trip(tmp_path):
    path = tmp_path / "state" / "deep" / "state.json"
    s = StateStore(str(path))
    assert s.get("pins") is None and s.get("pins", {}) == {}
    s.set("pins", {"m": 2})
    s.set("order", (1, 2))
    assert s.update("count", lambda v: (v or 0) + 1) == 1
    assert s.update("count", lambda v: v + 1) == 2
    again = StateStore(str(path))
    assert again.get("pins") == {"m": 2} and again.get("order") == [1, 2]
    assert again.get("count") == 2
    got = again.get("pins")
    got["m"] = 9  # a returned value is a copy
    assert again.get("pins") == {"m": 2}
    with pytest.raises(TypeError, match=r"\[serve\] state 'bad'"):
        s.set("bad", object())
    assert StateStore(str(path)).get("bad") is None


def test_state_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    s = StateStore(str(path))
    s.set("a", 1)

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        s.set("a", 2)
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"a": 1}
    assert os.listdir(tmp_path) == ["state.json"]  # no temp file left behind
    assert s.get("a") == 1


def test_state_refused_inside_repository(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    with pytest.raises(ModelError, match=r"\[serve\] state file .* must live outside the model"):
        StateStore.for_repository(str(repo), str(repo / ".state" / "state.json"))
    os.symlink(repo, tmp_path / "alias")
    with pytest.raises(ModelError, match="outside"):
        StateStore.for_repository(str(tmp_path / "alias"), str(repo / "s.json"))
    ok = StateStore.for_repository(str(repo), str(tmp_path / "repo-state.json"))
    ok.set("k", "v")
    assert not any(repo.iterdir())


def test_state_default_path(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBER_CACHE", str(tmp_path / "cache"))
    repo = tmp_path / "repo"
    repo.mkdir()
    p = StateStore.default_path(str(repo))
    assert p.startswith(str(tmp_path / "cache" / "serve-state"))
    assert p.endswith("state.json") and len(os.path.basename(os.path.dirname(p))) == 16
    assert StateStore.default_path(str(repo) + "/.") == p
    assert StateStore.for_repository(str(repo)).path == p


def test_corrupt_state_file_is_an_error(tmp_path):
    path = tmp_path / "state.json"
    path.write_text("{not json")
    with pytest.raises(ModelError, match=f"state file {path} is unreadable or corrupt"):
        StateStore(str(path))
    path.write_text("[1, 2]")
    with pytest.raises(ModelError, match="expected a JSON object"):
        StateStore(str(path))
    assert path.read_text() == "[1, 2]"  # never reset behind the operator's back
