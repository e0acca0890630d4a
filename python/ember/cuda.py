"""CUDA: the backend is a separate module, ember._cuda, built where nvcc (and, by default, a
GPU driver) were present at install time, and imported only when asked for. A CPU-only build
reports CUDA as unavailable and says why."""
from __future__ import annotations

import glob
import importlib
import logging
import os
import sys
import threading

from ember.errors import EmberError

_log = logging.getLogger("ember")

_lock = threading.Lock()
_registered: set[str] = set()


def _module():
    """ember._cuda, or an EmberError saying why it cannot be had."""
    try:
        return importlib.import_module("ember._cuda")
    except ImportError as e:
        raise EmberError(
            "[cuda] this ember was built without its CUDA module (ember._cuda): reinstall where "
            "nvcc and an NVIDIA driver are present, or force it with "
            f"`pip install . -C cmake.define.EMBER_CUDA=ON` ({e})") from None


def is_available() -> bool:
    """True when ember was built with CUDA and a device is present."""
    try:
        return _module().device_count() > 0
    except EmberError:
        return False


def device_count() -> int:
    try:
        return _module().device_count()
    except EmberError:
        return 0


def _wheel_lib(name: str, *packages: str) -> str:
    """lib `name` from the first nvidia-* wheel dir (nvidia/<package>/lib) on sys.path, or ''."""
    for base in sys.path:
        for package in packages:
            hits = glob.glob(os.path.join(base, "nvidia", package, "lib", name))
            if hits:
                return hits[0]
    return ""


def _cublaslt_path() -> str:
    """libcublasLt.so.13 from the nvidia-cublas wheel when it is installed (torch brings it)."""
    return _wheel_lib("libcublasLt.so.13", "cu13", "cublas")


def _cudnn_path() -> str:
    """libcudnn.so.9 from the nvidia-cudnn wheel when it is installed (torch brings it)."""
    return _wheel_lib("libcudnn.so.9", "cudnn", "cu13")


def device(name: str) -> str:
    """Registers the CUDA device `name` ("cuda" or "cuda:N") with the runtime and returns its
    canonical name ("cuda:N"); an EmberError says exactly what is missing otherwise."""
    ordinal = 0
    if name != "cuda":
        head, _, num = name.partition(":")
        if head != "cuda" or not num.isdigit():
            raise EmberError(f"[cuda] device must be 'cuda' or 'cuda:N', not {name!r}")
        ordinal = int(num)
    canonical = f"cuda:{ordinal}"
    with _lock:
        if canonical in _registered:
            return canonical
        cuda = _module()
        count = cuda.device_count()
        if count == 0:
            raise EmberError(f"[cuda] no CUDA device: {cuda.unavailable_reason()}")
        if ordinal >= count:
            raise EmberError(f"[cuda] no device {canonical}: {count} present")
        ok, error = cuda.load_cublaslt(_cublaslt_path())
        if not ok:
            raise EmberError(error)
        # Optional: Conv runs im2col + cuBLASLt where no cuDNN loads.
        ok, error, path, version = cuda.load_cudnn(_cudnn_path())
        if ok:
            _log.info("cuDNN %s from %s for Conv", version, path)
        else:
            _log.info("%s", error)
        from ember import _core
        cuda.register_device(_core._device_api, ordinal)
        _registered.add(canonical)
    return canonical
