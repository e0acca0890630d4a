"""ember's quantization tool: ONNX float models -> int8 (W8A8 dynamic or static QDQ) or int4
(MatMulNBits) ONNX files that ember fuses into integer kernels and onnxruntime also runs.

  ember.quantize(src, dst, scheme="int8" | "int4", calibration=None, method="minmax", ...)
  ember.quantize_model(model, config, calibration=None) -> onnx.ModelProto   (used by Engine)
  ember.QuantConfig, QuantResult, QuantReport, QuantFallbackWarning

The file formats are described in dynamic.py, static.py, int4.py and embed.py; the layer choice
in select.py and config.py; calibration in calibrate.py; the accuracy report in report.py.
"""

from ember.quantize.api import QuantResult, quantize, quantize_model
from ember.quantize.config import QuantConfig
from ember.quantize.fallback import QUANT_OPS, QuantFallbackWarning
from ember.quantize.report import QuantReport

__all__ = ["quantize", "quantize_model", "QuantConfig", "QuantResult", "QuantReport",
           "QuantFallbackWarning", "QUANT_OPS"]
