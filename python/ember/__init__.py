"""ember: an inference engine for ONNX graphs and decoder LLMs."""

from ember.errors import (EmberError, InputError, InternalError, ModelError,
                          UnsupportedOpError)
from ember.engine import Engine, TensorInfo
from ember.quantize import (QuantConfig, QuantFallbackWarning, QuantReport, QuantResult,
                            quantize, quantize_model)
from ember import cuda

__version__ = "0.1.0"
__all__ = ["Engine", "TensorInfo", "EmberError", "ModelError", "InputError",
           "UnsupportedOpError", "InternalError", "cuda", "__version__", "quantize",
           "quantize_model", "QuantConfig", "QuantResult", "QuantReport", "QuantFallbackWarning"]
