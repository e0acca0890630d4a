"""ember: an inference engine for ONNX graphs and decoder LLMs."""

from ember.errors import (EmberError, InputError, InternalError, ModelError,
                          UnsupportedOpError)
from ember.engine import Engine, TensorInfo
from ember.quantize import (QuantConfig, QuantFallbackWarning, QuantReport, QuantResult,
                            quantize, quantize_model)
from ember import cuda

__version__ = "0.1.0"
__all__ = ["Engine", "AsyncEngine", "TensorInfo", "EmberError", "ModelError", "InputError",
           "UnsupportedOpError", "InternalError", "cuda", "__version__", "quantize",
           "quantize_model", "QuantConfig", "QuantResult", "QuantReport", "QuantFallbackWarning"]


def __getattr__(name):  # ember.AsyncEngine, imported on first use (asyncio takes ~0.1 s to load)
    if name == "AsyncEngine":
        from ember.async_engine import AsyncEngine
        return AsyncEngine
    raise AttributeError(f"module 'ember' has no attribute {name!r}")
