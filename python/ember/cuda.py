"""CUDA availability. The CUDA backend is a separate module (ember._cuda), loaded lazily;
a CPU-only build (every build until the CUDA backend lands) reports it as unavailable."""

import importlib


def is_available() -> bool:
    """True when ember was built with CUDA and a device is present."""
    try:
        cuda = importlib.import_module("ember._cuda")
    except ImportError:
        return False
    return bool(cuda.device_count() > 0)
