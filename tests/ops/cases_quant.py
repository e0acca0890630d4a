"""Op cases for the quantization family (ops_quant.cpp): QuantizeLinear, DequantizeLinear,
DynamicQuantizeLinear, MatMulInteger, QLinearMatMul, ConvInteger, QLinearConv. Part of the
case table in cases.py (which imports this module, so one CASES list holds every row).

Integer outputs must match onnx.reference exactly. Scales are drawn so that results saturate
at both ends of the type; the "halfway" rows put x / scale exactly on .5 to pin round half to
even. com.microsoft MatMulNBits has no onnx.reference: tests/unit/test_matmulnbits.py checks
it against onnxruntime.
"""
from __future__ import annotations

import numpy as np

from case_types import ABSENT, C, F, In
from cases import BF16, F16, F32, I8, I16, I32, U8, case

QUANT_OPS = ["QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger",
             "QLinearMatMul", "ConvInteger", "QLinearConv"]

U8_ANY, I8_ANY = ("int", 0, 256), ("int", -128, 128)
I16_ANY = ("int", -32768, 32768)
SCALE = ("uniform", 0.05, 0.5)  # x "wide" (+-20) over these scales saturates 8-bit types
SMALL_SCALE = ("uniform", 0.01, 0.05)  # per-row / per-column matmul and conv scales

# ---- QuantizeLinear ---------------------------------------------------------------------------

case("QuantizeLinear", {}, [((7, 769), F32, "wide"), C(0.1, F32), C(128, U8)], opset=13,
     id="tensor-u8-saturate")
case("QuantizeLinear", {}, [((5125,), F32, "wide"), (((), F32, SCALE)), ((), I8, I8_ANY)],
     opset=13, id="tensor-i8-fed")
case("QuantizeLinear", {}, [((7, 769), F32, "wide"), C(0.2, F32)], opset=13, id="no-zp")
case("QuantizeLinear", {}, [((7, 769), F32, "wide"), C([0.1], F32), C([3], U8)], opset=10,
     id="op10")
case("QuantizeLinear", {}, [((), F32, "wide"), C(0.25, F32), C(-3, I8)], opset=19, id="scalar")
# per axis: axis 0, 1 and -1; scales and zero points as initializers and as feeds
case("QuantizeLinear", {"axis": 0}, [((7, 769), F32, "wide"), In((7,), F32, SCALE, const=True),
                                      In((7,), U8, U8_ANY, const=True)], opset=13, id="axis0-u8")
case("QuantizeLinear", {}, [((7, 769), F32, "wide"), ((769,), F32, SCALE), ((769,), I8, I8_ANY)],
     opset=13, id="axis1-i8")
case("QuantizeLinear", {"axis": -1}, [((3, 5, 7), F32, "wide"), ((7,), F32, SCALE),
                                      ((7,), U8, U8_ANY)], opset=19, id="axis-1-u8")
case("QuantizeLinear", {"axis": -2}, [((3, 5, 7), F32, "wide"), ((5,), F32, SCALE)], opset=21,
     id="axis-2-no-zp")
# blocked (21+): blocks along the last axis with a partial last block, and along axis 0
case("QuantizeLinear", {"axis": 1, "block_size": 32},
     [((7, 769), F32, "wide"), In((7, 25), F32, SCALE, const=True),
      In((7, 25), U8, U8_ANY, const=True)],
     opset=21, id="blocked-axis1-u8")
case("QuantizeLinear", {"axis": 0, "block_size": 3},
     [((7, 65), F32, "wide"), ((3, 65), F32, SCALE), ((3, 65), I8, I8_ANY)], opset=21,
     id="blocked-axis0-i8")
case("QuantizeLinear", {"axis": -1, "block_size": 4, "output_dtype": 5},
     [((2, 3, 9), F32, "wide"), ((2, 3, 3), F32, ("uniform", 1e-4, 1e-3))], opset=21,
     id="blocked-int16-output-dtype")
# output type from output_dtype (21+, no zero point), int16 saturating
case("QuantizeLinear", {"output_dtype": 3}, [((7, 769), F32, "wide"), C(0.1, F32)], opset=21,
     id="output-dtype-i8")
case("QuantizeLinear", {}, [((7, 769), F32, "wide"), C(0.0004, F32), ((), I16, I16_ANY)],
     opset=21, id="i16-saturate")
# round half to even: x / scale lands exactly on k + 0.5 (scales are powers of two)
_halves = (np.arange(-40, 41) + 0.5).astype(np.float32)
case("QuantizeLinear", {}, [F(_halves, F32), C(1.0, F32), C(0, I8)], opset=13, id="halfway-i8")
case("QuantizeLinear", {}, [F(_halves * 0.25, F32), C(0.25, F32), C(100, U8)], opset=13,
     id="halfway-u8")
case("QuantizeLinear", {"axis": 0},
     [F(np.stack([_halves * 0.5, _halves * 4]), F32), C([0.5, 4.0], F32), C([-1, 2], I8)],
     opset=13, id="halfway-axis0")
# other x and scale types: float16 / bfloat16 divide in their own precision; int32 x (13)
# divides in float64; 23+ lets the scale's type differ from x's, and precision choose
case("QuantizeLinear", {}, [((7, 769), F16, "wide"), C(0.1, F16), C(7, U8)], opset=19, id="f16")
case("QuantizeLinear", {}, [((7, 769), BF16, "wide"), C(0.1, BF16), C(-7, I8)], opset=19,
     id="bf16")
case("QuantizeLinear", {}, [((7, 769), I32, ("int", -300, 300)), C(0.7, F32), C(5, I8)],
     opset=13, id="i32-x")
case("QuantizeLinear", {}, [((7, 769), F32, "wide"), C(0.1, F16), C(3, U8)], opset=23,
     id="f32-x-f16-scale")
case("QuantizeLinear", {"precision": 10}, [((7, 769), F32, "wide"), C(0.1, F32), C(3, U8)],
     opset=23, id="precision-f16")
case("QuantizeLinear", {"axis": 1, "block_size": 16, "saturate": 1},
     [((3, 40), F32, "wide"), ((3, 3), F32, SCALE), ((3, 3), U8, U8_ANY)], opset=25,
     id="op25-blocked")

# ---- DequantizeLinear -------------------------------------------------------------------------
# onnx.reference implements DequantizeLinear from version 19 (10 and 13 differ only in types).

case("DequantizeLinear", {}, [((7, 769), U8, U8_ANY), C(0.1, F32), C(128, U8)], opset=19,
     id="tensor-u8")
case("DequantizeLinear", {}, [((5125,), I8, I8_ANY), ((), F32, SCALE), ((), I8, I8_ANY)],
     opset=19, id="tensor-i8-fed")
case("DequantizeLinear", {"axis": 0}, [((7, 769), I8, I8_ANY), In((7,), F32, SCALE, const=True),
                                        In((7,), I8, I8_ANY, const=True)], opset=19, id="axis0-i8")
case("DequantizeLinear", {}, [((7, 769), U8, U8_ANY), ((769,), F32, SCALE), ((769,), U8, U8_ANY)],
     opset=19, id="axis1-u8")
case("DequantizeLinear", {"axis": -1}, [((3, 5, 7), I8, I8_ANY), ((7,), F32, SCALE)], opset=19,
     id="axis-1-no-zp")
case("DequantizeLinear", {}, [((7, 769), I32, ("int", -2**30, 2**30)), C(0.001, F32)], opset=19,
     id="i32")
case("DequantizeLinear", {}, [((7, 769), I32, ("int", -2**30, 2**30)), C(0.001, F32),
                              C(12345, I32)], opset=19, id="i32-zp")
case("DequantizeLinear", {}, [((7, 769), I16, I16_ANY), C(0.01, F32), C(-300, I16)], opset=21,
     id="i16")
case("DequantizeLinear", {"axis": 1, "block_size": 32},
     [((7, 769), U8, U8_ANY), In((7, 25), F32, SCALE, const=True),
      In((7, 25), U8, U8_ANY, const=True)], opset=21, id="blocked-axis1")
case("DequantizeLinear", {"axis": 0, "block_size": 2},
     [((7, 5, 3), I8, I8_ANY), ((4, 5, 3), F32, SCALE)], opset=21, id="blocked-axis0-no-zp")
case("DequantizeLinear", {}, [((7, 769), U8, U8_ANY), C(0.1, F16), C(9, U8)], opset=19, id="f16")
case("DequantizeLinear", {"axis": 0}, [((3, 769), I8, I8_ANY), ((3,), BF16, SCALE)], opset=19,
     id="bf16-axis0")
case("DequantizeLinear", {"output_dtype": 10}, [((7, 769), U8, U8_ANY), C(0.1, F32), C(9, U8)],
     opset=23, id="output-dtype-f16")
case("DequantizeLinear", {"axis": 1, "block_size": 8},
     [((3, 20), I8, I8_ANY), ((3, 3), F16, SCALE), ((3, 3), I8, I8_ANY)], opset=25,
     id="op25-blocked-f16")

# ---- DynamicQuantizeLinear --------------------------------------------------------------------

case("DynamicQuantizeLinear", {}, [((7, 769), F32, "normal")], outputs=3, opset=11, id="mixed")
case("DynamicQuantizeLinear", {}, [((5125,), F32, "pos")], outputs=3, opset=11, id="all-positive")
case("DynamicQuantizeLinear", {}, [((3, 7), F32, ("uniform", -5.0, -0.1))], outputs=3, opset=11,
     id="all-negative")
case("DynamicQuantizeLinear", {}, [F(np.zeros((3, 7)), F32)], outputs=3, opset=11, id="all-zero")
case("DynamicQuantizeLinear", {}, [((1,), F32, "wide")], outputs=3, opset=11, id="one")
# ties: 255 / 2 spreads x over codes 0..255 with many exact halves
case("DynamicQuantizeLinear", {}, [F(np.arange(0, 256, 0.5), F32)], outputs=3, opset=11,
     id="halfway")

# ---- MatMulInteger ----------------------------------------------------------------------------

case("MatMulInteger", {}, [((7, 769), U8, U8_ANY), ((769, 65), U8, U8_ANY), ((), U8, U8_ANY),
                           ((), U8, U8_ANY)], opset=10, id="u8-scalar-zps")
case("MatMulInteger", {}, [((7, 769), I8, I8_ANY), In((769, 33), U8, U8_ANY, const=True),
                           C(-5, I8), In((33,), U8, U8_ANY, const=True)], opset=10,
     id="i8-u8-per-col")
case("MatMulInteger", {}, [((7, 33), U8, U8_ANY), ((33, 5), I8, I8_ANY)], opset=10, id="no-zps")
case("MatMulInteger", {}, [((7, 33), U8, U8_ANY), ((33, 5), I8, I8_ANY), ABSENT,
                           ((5,), I8, I8_ANY)], opset=10, id="b-zp-only")
case("MatMulInteger", {}, [((2, 1, 5, 33), I8, I8_ANY), ((3, 33, 7), I8, I8_ANY),
                           ((2, 1, 5, 1), I8, I8_ANY), ((3, 1, 7), I8, I8_ANY)], opset=10,
     id="batch-broadcast-per-row-col")
case("MatMulInteger", {}, [((33,), U8, U8_ANY), ((4, 33, 7), U8, U8_ANY), C(3, U8),
                           ((4, 1, 7), U8, U8_ANY)], opset=10, id="vector-lhs")
case("MatMulInteger", {}, [((3, 5, 33), U8, U8_ANY), ((33,), I8, I8_ANY), ((3, 5, 1), U8, U8_ANY),
                           C([-2], I8)], opset=10, id="vector-rhs")
# extremes: (a - zp) * (b - zp) at 255 * 255 over K = 769
case("MatMulInteger", {}, [F(np.full((3, 769), 255), U8), F(np.zeros((769, 2)), U8), C(0, U8),
                           C(255, U8)], opset=10, id="extremes")

# ---- QLinearMatMul ----------------------------------------------------------------------------

def _qmm(a, b, dta, dtb, dty, sa=C(0.02, F32), sb=C(0.03, F32), sy=C(0.5, F32), za=None,
         zb=None, zy=None):
    gen = {U8: U8_ANY, I8: I8_ANY}
    return [(a, dta, gen[dta]), sa, za or ((), dta, gen[dta]), (b, dtb, gen[dtb]), sb,
            zb or ((), dtb, gen[dtb]), sy, zy or ((), dty, gen[dty])]


case("QLinearMatMul", {}, _qmm((7, 769), (769, 65), U8, U8, U8), opset=10, id="u8-tensor")
case("QLinearMatMul", {}, _qmm((7, 769), (769, 33), I8, I8, I8, sy=C(2.0, F32)), opset=10,
     id="i8-tensor")
case("QLinearMatMul", {}, _qmm((7, 65), (65, 33), U8, I8, U8), opset=21, id="mixed-op21")
case("QLinearMatMul", {}, _qmm((7, 65), (65, 33), I8, U8, I8, sb=((33,), F32, SMALL_SCALE),
                               zb=((33,), U8, U8_ANY)), opset=10, id="per-col")
case("QLinearMatMul", {}, _qmm((7, 65), (65, 33), U8, U8, U8, sa=((7, 1), F32, SMALL_SCALE),
                               za=((7, 1), U8, U8_ANY)), opset=10, id="per-row")
case("QLinearMatMul", {}, _qmm((2, 1, 5, 33), (3, 33, 7), U8, I8, U8), opset=10,
     id="batch-broadcast")
case("QLinearMatMul", {}, _qmm((2, 5, 33), (2, 33, 7), U8, U8, U8, sa=C(0.02, F16),
                               sb=C(0.03, F16), sy=C(0.25, F16)), opset=21, id="f16-scales")
case("QLinearMatMul", {}, _qmm((5, 33), (33, 7), I8, I8, I8, sa=C(0.02, BF16), sb=C(0.03, BF16),
                               sy=C(0.25, BF16)), opset=21, id="bf16-scales")
case("QLinearMatMul", {}, _qmm((5, 33), (33, 7), U8, U8, U8, sa=C([0.02], F32), sb=C([0.03], F32),
                               sy=C([0.5], F32), za=C([128], U8), zb=C([128], U8), zy=C([128], U8)),
     opset=21, id="one-element-params")

# ---- ConvInteger / QLinearConv ----------------------------------------------------------------

case("ConvInteger", {"pads": [1, 1, 1, 1]},
     [((2, 3, 9, 9), U8, U8_ANY), In((4, 3, 3, 3), U8, U8_ANY, const=True), ((), U8, U8_ANY),
      ((), U8, U8_ANY)], opset=10, id="pads-u8")
case("ConvInteger", {"group": 2, "strides": [2, 2]},
     [((1, 4, 11, 9), I8, I8_ANY), ((6, 2, 3, 3), I8, I8_ANY), C(-3, I8),
      In((6,), I8, I8_ANY, const=True)], opset=10, id="group-stride-per-channel")
case("ConvInteger", {"auto_pad": "SAME_UPPER", "dilations": [2]},
     [((2, 3, 17), U8, U8_ANY), ((5, 3, 3), I8, I8_ANY), C(100, U8)], opset=10,
     id="1d-same-dilated")
case("ConvInteger", {"group": 3}, [((1, 3, 7, 7), U8, U8_ANY), ((3, 1, 3, 3), U8, U8_ANY)],
     opset=10, id="depthwise-no-zps")


def _qconv(xs, ws, dt, wdt, ydt, ws_scale=C(0.02, F32), wz=None, bias=None):
    gen = {U8: U8_ANY, I8: I8_ANY}
    ins = [(xs, dt, gen[dt]), C(0.05, F32), ((), dt, gen[dt]), In(ws, wdt, gen[wdt], const=True),
           ws_scale, wz or ((), wdt, gen[wdt]), C(0.4, F32), ((), ydt, gen[ydt])]
    if bias:
        ins.append(In((ws[0],), I32, ("int", -5000, 5000), const=True))
    return ins


case("QLinearConv", {"pads": [1, 1, 1, 1]},
     _qconv((2, 3, 9, 9), (4, 3, 3, 3), U8, U8, U8, bias=True), opset=10, id="pads-bias-u8")
case("QLinearConv", {"group": 2, "strides": [2, 2]},
     _qconv((1, 4, 11, 9), (6, 2, 3, 3), I8, I8, I8,
            ws_scale=In((6,), F32, SMALL_SCALE, const=True), wz=In((6,), I8, I8_ANY, const=True),
            bias=True),
     opset=10, id="group-stride-per-channel")
case("QLinearConv", {"auto_pad": "SAME_LOWER", "strides": [2]},
     _qconv((2, 3, 17), (5, 3, 4), U8, I8, I8), opset=10, id="1d-same")
case("QLinearConv", {"group": 3, "dilations": [2, 1]},
     _qconv((1, 3, 9, 7), (3, 1, 3, 3), U8, U8, U8), opset=10, id="depthwise-dilated")
