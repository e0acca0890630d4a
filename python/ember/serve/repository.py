"""The file-system side of a model repository: what models and versions DIR holds, when a
version being copied in has settled, and a small state file for the server kept outside DIR.

    DIR/<name>/config.toml          optional (see config.py)
    DIR/<name>/<version>/model.onnx  plus any files beside it (tokenizer, sentence-transformers)
    DIR/<name>/<version>/model.gguf  alone
    DIR/<name>/<version>/model/      alone: a Hugging Face folder (config.json + *.safetensors)

Names that are not model names or version numbers are ignored, as is every hidden entry, so a
version can be copied into a hidden folder and renamed into place. Symlinks are followed, even
out of DIR: the repository's files are its administrator's to point wherever they choose.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import tempfile
import threading
import time
from dataclasses import dataclass, field

from ember.errors import ModelError
from ember.hub import cache_dir
from ember.serve.config import ModelConfig, load_config

__all__ = ["VersionSource", "RepoModel", "RepoChanges", "scan_repository", "RepositoryWatcher",
           "StateStore"]

MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
VERSION_NAME = re.compile(r"[0-9]+")
MODEL_ENTRIES = ("model.onnx", "model.gguf", "model")


@dataclass(frozen=True)
class VersionSource:
    version: int
    path: str              # the model file or folder to hand to ember.Engine
    fingerprint: tuple     # (relpath, size, mtime_ns) of every file under the version folder


@dataclass(frozen=True)
class RepoModel:
    name: str
    dir: str
    config: ModelConfig | None           # None when config_error is set
    config_error: str | None
    config_fingerprint: str | None       # sha256 of config.toml; None when there is none
    versions: dict = field(default_factory=dict)   # version -> VersionSource
    invalid: dict = field(default_factory=dict)    # version -> why it cannot be served


@dataclass
class RepoChanges:
    ready: dict = field(default_factory=dict)      # name -> RepoModel (settled versions only)
    removed: list = field(default_factory=list)    # model folders gone
    unsettled: dict = field(default_factory=dict)  # name -> versions still changing


def scan_repository(root: str) -> dict[str, RepoModel]:
    """Every model under root as it is now; per-model problems are recorded, never raised."""
    return {name: model for name, (model, _) in _scan(root).items()}


def _scan(root: str) -> dict:
    """name -> (RepoModel, {version: fingerprint} for every version folder, valid or not)."""
    if not os.path.isdir(root):
        raise ModelError(f"[serve] model repository {root} is missing or not a folder")
    try:
        names = sorted(os.listdir(root))
    except OSError as e:
        raise ModelError(f"[serve] cannot list model repository {root}: {e}") from None
    return {n: _scan_model(n, os.path.join(root, n)) for n in names
            if MODEL_NAME.fullmatch(n) and os.path.isdir(os.path.join(root, n))}


def _scan_model(name: str, mdir: str):
    config, error, cfg_fp = _read_config(os.path.join(mdir, "config.toml"))
    versions, invalid, fps = {}, {}, {}
    try:
        entries = os.listdir(mdir)
    except OSError as e:  # an unreadable model folder serves nothing; say why where it is seen
        why = f"[serve] cannot list {mdir}: {e}"
        return RepoModel(name, mdir, None, why, why), fps
    by_number: dict[int, list[str]] = {}
    for entry in entries:
        if VERSION_NAME.fullmatch(entry):
            by_number.setdefault(int(entry), []).append(entry)
    for v, folders in sorted(by_number.items()):
        vdir = os.path.join(mdir, folders[0])
        fps[v] = _fingerprint(vdir)
        if len(folders) > 1:  # "7" and "007": neither is preferred silently
            invalid[v] = f"folders {' and '.join(sorted(folders))} both name version {v}"
            continue
        path, why = _model_path(vdir)
        if why:
            invalid[v] = why
        else:
            versions[v] = VersionSource(v, path, fps[v])
    return RepoModel(name, mdir, config, error, cfg_fp, versions, invalid), fps


def _read_config(path: str):
    """(config, error, fingerprint); a missing config.toml means the defaults."""
    try:
        with open(path, "rb") as f:
            fp = hashlib.sha256(f.read()).hexdigest()
    except FileNotFoundError:
        return ModelConfig(), None, None
    except OSError as e:
        return None, f"[serve] cannot read {path}: {e}", f"unreadable: {e}"
    try:
        return load_config(path), None, fp
    except ModelError as e:
        return None, str(e), fp


def _model_path(vdir: str):
    """(path of the model to load, None) or (None, why the version folder is not servable)."""
    if not os.path.isdir(vdir):
        return None, f"{vdir} is not a folder"
    try:
        names = sorted(n for n in os.listdir(vdir) if not n.startswith("."))
    except OSError as e:
        return None, f"cannot list {vdir}: {e}"
    found = [n for n in MODEL_ENTRIES if n in names]
    if not found:
        listed = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "") or "nothing"
        return None, f"holds no model.onnx, model.gguf or model/ folder (found: {listed})"
    if len(found) > 1:
        return None, f"holds more than one model ({', '.join(found)}); a version holds one"
    kind, path = found[0], os.path.join(vdir, found[0])
    # ONNX exports bring their tokenizer and pooling files along; the other layouts stand alone
    # so that a stray second weights file cannot be mistaken for the one being served.
    extra = [n for n in names if n != kind]
    if kind != "model.onnx" and extra:
        return None, f"unexpected entries beside {kind}: {', '.join(extra)}"
    if kind != "model":
        return (path, None) if os.path.isfile(path) else (None, f"{kind} is not a readable file")
    if not os.path.isdir(path):
        return None, "model is not a folder"
    try:
        inside = os.listdir(path)
    except OSError as e:
        return None, f"cannot list {path}: {e}"
    if "config.json" not in inside or not any(n.endswith(".safetensors") for n in inside):
        return None, "model/ needs config.json and *.safetensors (a Hugging Face folder)"
    return path, None


def _fingerprint(vdir: str) -> tuple:
    """(relpath, size, mtime_ns) of every file under vdir, sorted; errors become entries so a
    folder that turns readable (or broken) changes its fingerprint too."""
    out, seen = [], set()

    def walk(d: str, rel: str):
        st = os.stat(d)
        if (st.st_dev, st.st_ino) in seen:  # a symlink loop
            return
        seen.add((st.st_dev, st.st_ino))
        with os.scandir(d) as it:
            entries = list(it)
        for e in entries:
            r = rel + e.name
            try:
                if e.is_dir():
                    walk(e.path, r + "/")
                else:
                    s = e.stat()
                    out.append((r, s.st_size, s.st_mtime_ns))
            except OSError as err:  # a dangling symlink or an unreadable subfolder
                out.append((r, -1, str(err)))

    try:
        walk(vdir, "")
    except OSError as err:
        out.append(("", -1, str(err)))
    return tuple(sorted(out))


@dataclass
class _Tracked:
    """One version folder (or config.toml) as watched: its fingerprint, since when, and what
    it held (a VersionSource or why not; for a config, (config, error))."""
    fp: object
    since: float
    value: object


@dataclass
class _ModelState:
    seen: dict = field(default_factory=dict)      # version -> _Tracked, as on disk now
    settled: dict = field(default_factory=dict)   # version -> _Tracked, as last settled
    config_seen: _Tracked | None = None
    config_settled: _Tracked | None = None
    reported: RepoModel | None = None


class RepositoryWatcher:
    """Polls a repository and reports models whose settled versions or config changed.

    A version (or config.toml) that is new or changed counts only once its fingerprint has held
    for settle_s, so a copy in progress is never loaded half-written; the first poll takes
    everything as settled. A version that disappears is dropped at once.
    """

    def __init__(self, root: str, settle_s: float = 1.0, clock=time.monotonic):
        self.root, self.settle_s, self.clock = root, settle_s, clock
        self._models: dict[str, _ModelState] = {}
        self._first = True

    def poll(self) -> RepoChanges:
        now, changes = self.clock(), RepoChanges()
        current = _scan(self.root)  # a vanished root raises: the caller decides to keep serving
        for name in sorted(set(self._models) - set(current)):
            if self._models.pop(name).reported is not None:
                changes.removed.append(name)
        for name, (model, fps) in current.items():
            st = self._models.setdefault(name, _ModelState())
            waiting = self._settle_versions(st, model, fps, now)
            if waiting:
                changes.unsettled[name] = waiting
            view = self._settle_config(st, model, now)
            if view is None or (st.reported is None and waiting):
                continue  # a new model is first shown whole, not version by version
            if st.reported is None or _key(view) != _key(st.reported):
                changes.ready[name] = view
            st.reported = view
        self._first = False
        return changes

    def _stable(self, t: _Tracked, now: float) -> bool:
        return self._first or now - t.since >= self.settle_s

    def _settle_versions(self, st: _ModelState, model: RepoModel, fps: dict, now) -> list[int]:
        for v in set(st.seen) - set(fps):
            del st.seen[v]
            st.settled.pop(v, None)
        waiting = []
        for v, fp in fps.items():
            value = model.versions.get(v) or model.invalid[v]
            t = st.seen.get(v)
            if t is None or t.fp != fp:
                t = st.seen[v] = _Tracked(fp, now, value)
            t.value = value
            if self._stable(t, now):
                st.settled[v] = t
            elif v not in st.settled or st.settled[v].fp != fp:
                waiting.append(v)
        return sorted(waiting)

    def _settle_config(self, st: _ModelState, model: RepoModel, now) -> RepoModel | None:
        """The model as settled so far, or None until its config.toml has settled once."""
        cfg = (model.config, model.config_error)
        t = st.config_seen
        if t is None or t.fp != model.config_fingerprint:
            t = st.config_seen = _Tracked(model.config_fingerprint, now, cfg)
        t.value = cfg
        if self._stable(t, now):
            st.config_settled = t
        s = st.config_settled
        if s is None:
            return None
        versions = {v: t.value for v, t in st.settled.items() if isinstance(t.value, VersionSource)}
        invalid = {v: t.value for v, t in st.settled.items() if isinstance(t.value, str)}
        return RepoModel(model.name, model.dir, *s.value, s.fp,
                         dict(sorted(versions.items())), dict(sorted(invalid.items())))


def _key(m: RepoModel):
    """What a change is reported on: the settled versions and the config (not invalid reasons)."""
    return m.versions, m.config_fingerprint, m.config_error


class StateStore:
    """The server's own small state (rollback pins, ...) as one JSON object in one file, kept
    in memory and rewritten atomically on every set. One server process per file."""

    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self._lock = threading.Lock()
        self._data = self._load()

    @staticmethod
    def default_path(repo_root: str) -> str:
        digest = hashlib.sha256(os.path.realpath(repo_root).encode()).hexdigest()[:16]
        return os.path.join(cache_dir(), "serve-state", digest, "state.json")

    @classmethod
    def for_repository(cls, root: str, path: str | None = None) -> "StateStore":
        """The store for a repository; refuses a file the repository watcher would see."""
        path = path or cls.default_path(root)
        real, real_root = os.path.realpath(path), os.path.realpath(root)
        if os.path.commonpath([real, real_root]) == real_root:
            raise ModelError(f"[serve] state file {path} must live outside the model repository "
                             f"{root} (the repository is watched for models)")
        return cls(path)

    def _load(self) -> dict:
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:  # not reset: it may hold pins an operator relies on
            raise ModelError(f"[serve] state file {self.path} is unreadable or corrupt: {e}; "
                             "fix or remove it") from None
        if not isinstance(data, dict):
            raise ModelError(f"[serve] state file {self.path} is corrupt: expected a JSON "
                             f"object, found {type(data).__name__}; fix or remove it")
        return data

    def get(self, key: str, default=None):
        with self._lock:
            return copy.deepcopy(self._data[key]) if key in self._data else default

    def set(self, key: str, value) -> None:
        with self._lock:
            self._set(key, value)

    def update(self, key: str, fn, default=None):
        """Stores fn(current value or default) under the lock; returns the new value."""
        with self._lock:
            cur = copy.deepcopy(self._data[key]) if key in self._data else default
            new = fn(cur)
            self._set(key, new)
            return copy.deepcopy(self._data[key])

    def _set(self, key: str, value) -> None:
        try:  # stored as it will read back (tuples become lists), so get() == after a restart
            value = json.loads(json.dumps(value))
        except (TypeError, ValueError) as e:
            raise TypeError(f"[serve] state {key!r}: value is not JSON-serialisable: {e}") from None
        data = dict(self._data, **{key: value})
        _write_atomic(self.path, json.dumps(data, indent=1, sort_keys=True) + "\n")
        self._data = data


def _write_atomic(path: str, text: str) -> None:
    """Temp file in the same folder, fsync, os.replace: a crash leaves the old or the new file."""
    d = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".state-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    if hasattr(os, "O_DIRECTORY"):  # the rename survives a power loss once the folder is synced
        dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
