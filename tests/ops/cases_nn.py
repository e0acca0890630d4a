"""Op cases for the convolution, CNN-layer, recurrent/resampling and tensor-manipulation
families: the second half of the case table in cases.py (which imports this module where
these rows belong, so one CASES list holds every row)."""
from __future__ import annotations

from case_types import ABSENT, C, F, In
from cases import BF16, BOOL, F16, F32, F64, I8, I32, I64, U8, REDUCES, case

# ---- recurrent, resampling, selection (ops_rnn.cpp) ------------------------------------------

# TopK: k as an initializer or fed at run time; ties (small_int) keep the lower index first.
case("TopK", {"axis": -1}, [((3, 7), F32, "normal"), C([3])], outputs=2, tol="bits", id="last")
case("TopK", {"axis": 1, "largest": 0}, [((2, 9, 5), F32, "normal"), C([4])], outputs=2,
     tol="bits", id="smallest-mid")
case("TopK", {"axis": 0}, [((9, 4), F32, "small_int"), C([9])], outputs=2, tol="bits", id="ties")
case("TopK", {"axis": -1, "largest": 0}, [((5, 8), I64, "small_int"), C([3])], outputs=2,
     tol="bits", id="ties-i64-smallest")
case("TopK", {}, [((4, 6), I32, "normal"), F([2])], outputs=2, tol="bits", id="fed-k")
case("TopK", {}, [((4, 6), F64, "normal"), C([0])], outputs=2, tol="bits", id="k0")
case("TopK", {}, [((4, 769), F16, "normal"), C([5])], outputs=2, tol="bits", id="f16")
case("TopK", {}, [((4, 33), BF16, "normal"), C([5])], outputs=2, opset=24, tol="bits", id="bf16")
case("TopK", {"sorted": 1}, [((1, 7), F32, "normal"), C([7])], outputs=2, opset=11, tol="bits",
     id="op11")

# LSTM / GRU: inputs X, W, R[, B, sequence_lens, initial_h(, initial_c, P)]. Shapes: seq 5,
# batch 3, input 4, hidden 6 (X is [batch, seq, input] under layout 1).
def _rnn_inputs(gates, dirs, layout=0, b=True, h0=False, c0=False, p=False, dt=F32):
    S, Bn, I, H = 5, 3, 4, 6
    x = (Bn, S, I) if layout else (S, Bn, I)
    hs = (Bn, dirs, H) if layout else (dirs, Bn, H)
    ins = [(x, dt, "unit"), ((dirs, gates * H, I), dt, "unit"), ((dirs, gates * H, H), dt, "unit")]
    ins.append(((dirs, 2 * gates * H), dt, "unit") if b else ABSENT)
    ins.append(ABSENT)  # sequence_lens: onnx.reference ignores it (tests/cpp/test_rnn.cpp)
    ins.append((hs, dt, "unit") if h0 else ABSENT)
    if gates == 4:
        ins.append((hs, dt, "unit") if c0 else ABSENT)
        ins.append(((dirs, 3 * H), dt, "unit") if p else ABSENT)
    while ins[-1] is ABSENT:
        ins.pop()
    return ins


for d, dirs in (("forward", 1), ("reverse", 1), ("bidirectional", 2)):
    case("LSTM", {"hidden_size": 6, "direction": d}, _rnn_inputs(4, dirs, h0=True, c0=True),
         outputs=3, opset=14, tol="accum", id=f"{d}")
    case("GRU", {"hidden_size": 6, "direction": d}, _rnn_inputs(3, dirs, h0=True), outputs=2,
         opset=14, tol="accum", id=f"{d}")
    case("GRU", {"hidden_size": 6, "direction": d, "linear_before_reset": 1},
         _rnn_inputs(3, dirs, h0=True), outputs=2, opset=14, tol="accum", id=f"{d}-lbr")
case("LSTM", {"hidden_size": 6}, _rnn_inputs(4, 1, b=False), outputs=3, opset=11, tol="accum",
     id="op7-nobias")
case("LSTM", {"hidden_size": 6, "direction": "bidirectional"},
     _rnn_inputs(4, 2, h0=True, c0=True, p=True), outputs=3, opset=14, tol="accum", id="peephole")
case("LSTM", {"hidden_size": 6, "layout": 1, "direction": "bidirectional"},
     _rnn_inputs(4, 2, layout=1, h0=True, c0=True, p=True), outputs=3, opset=14, tol="accum",
     id="layout1")
case("LSTM", {"hidden_size": 6}, _rnn_inputs(4, 1), outputs=3, out_names=("", "yh", ""),
     opset=14, tol="accum", id="yh-only")
case("LSTM", {"hidden_size": 6}, _rnn_inputs(4, 1, dt=F64), outputs=3, opset=14, tol="accum",
     id="f64")
case("LSTM", {"hidden_size": 6}, _rnn_inputs(4, 1, dt=F16), outputs=3, opset=14,
     tol=(1e-2, 1e-2), id="f16")
case("GRU", {"hidden_size": 6}, _rnn_inputs(3, 1, b=False), outputs=2, opset=11, tol="accum",
     id="op7-nobias")
case("GRU", {"hidden_size": 6, "layout": 1, "direction": "bidirectional"},
     _rnn_inputs(3, 2, layout=1, h0=True), outputs=2, opset=14, tol="accum", id="layout1")
case("GRU", {"hidden_size": 6}, _rnn_inputs(3, 1, dt=F64), outputs=2, opset=22, tol="accum",
     id="f64")

# ---- tensor manipulation (ops_tensor.cpp, ops_tensor_index.cpp) ------------------------------

# ReduceMin/Prod/L2: the REDUCES grid in both forms (axes input at 18, attribute before).
for op in ("ReduceMin", "ReduceProd", "ReduceL2"):
    for label, x, axes, keep, noop in REDUCES:
        attrs = {"keepdims": keep}
        if noop:
            attrs["noop_with_empty_axes"] = 1
        ins = [(x, F32, "unit")] + ([C(axes)] if axes is not None else [])
        case(op, attrs, ins, opset=18, tol="accum", id=f"{label}-op18")
        if not noop:
            old = {"keepdims": keep, **({"axes": axes} if axes is not None else {})}
            case(op, old, [(x, F32, "unit")], opset=11, tol="accum", id=f"{label}-op11")
    case(op, {"axes": [1]}, [((7, 769), F32, "unit")], opset=13, tol="accum", id="attr-op13")
    case(op, {}, [In((769, 7), F32, "unit", layout="t"), C([-1])], opset=18, tol="accum",
         id="transposed")
    case(op, {"keepdims": 0}, [((3, 7, 5), F32, "pos"), C([0, 2])], opset=18, tol="accum",
         id="pos-small")
    case(op, {}, [((7, 65), F16, "unit"), C([1])], opset=18, tol="accum", id="f16")
    case(op, {}, [((7, 65), F64, "normal"), C([0])], opset=18, tol="accum", id="f64")
    case(op, {"keepdims": 0}, [((7, 5), I64, ("int", -3, 4)), C([-1])], opset=18, id="i64")
    case(op, {}, [((3, 7, 5), I32, ("int", -3, 4)), C([0, 2])], opset=18, id="i32")
    case(op, {"keepdims": 0}, [((0, 7), F32, "normal"), C([0])], opset=20 if op == "ReduceMin"
         else 18, tol="accum", id="empty")
case("ReduceMin", {}, [((7, 769), U8, ("int", 0, 256)), C([1])], opset=18, id="u8")
case("ReduceMin", {}, [((7, 769), I8, ("int", -128, 128)), C([0])], opset=18, id="i8")
case("ReduceMin", {"keepdims": 0}, [((7, 65), BOOL, "bool"), C([1])], opset=20, id="bool")
case("ReduceMin", {}, [((7, 65), F32, "special"), C([1])], opset=18, tol="accum", id="special")
case("ReduceMin", {}, [((7, 65), BF16, "unit"), C([1])], opset=18, tol="accum", id="bf16")
case("ReduceL2", {}, [((7, 65), F32, "wide"), C([0])], opset=18, tol="accum", id="wide")

# ArgMax/ArgMin: ties (small_int) with first and last index, NaN, every layout of axis.
for op in ("ArgMax", "ArgMin"):
    for label, x, axis, keep in (("last", (7, 769), -1, 1), ("first", (7, 769), 0, 0),
                                 ("middle", (3, 7, 65), 1, 1), ("tail", (5125,), 0, 0),
                                 ("one", (1,), 0, 1)):
        case(op, {"axis": axis, "keepdims": keep}, [(x, F32, "normal")], opset=13, id=label)
    for last in (0, 1):
        case(op, {"axis": 1, "select_last_index": last}, [((7, 65), F32, "small_int")],
             opset=13, id=f"ties-last{last}")
        case(op, {"axis": 0, "select_last_index": last}, [((7, 65), I32, "small_int")],
             opset=12, id=f"ties-i32-last{last}")
    case(op, {"axis": 1}, [((7, 65), F32, "special")], id="special")
    case(op, {"axis": -1}, [((7, 65), F16, "normal")], id="f16")
    case(op, {"axis": -1}, [((7, 65), BF16, "normal")], id="bf16")
    case(op, {"axis": 0}, [((7, 65), I64, "normal")], id="i64")
    case(op, {"axis": 1}, [((7, 65), U8, ("int", 0, 256))], id="u8")
    case(op, {"axis": 1, "keepdims": 0}, [((7, 65), F64, "normal")], opset=11, id="op11")
    case(op, {}, [In((65, 7), F32, layout="t")], id="transposed")

# Tile: repeats are a shape-time value.
case("Tile", {}, [((3, 5), F32, "normal"), C([2, 3])], tol="bits", id="2d")
case("Tile", {}, [((2, 3, 5), F32, "normal"), C([1, 3, 1])], tol="bits", id="middle")
case("Tile", {}, [((7,), I64, "normal"), C([0])], tol="bits", id="zero")
case("Tile", {}, [((), F32, "normal"), C([], I64)], tol="bits", id="scalar")
case("Tile", {}, [((3, 5), BOOL, "bool"), C([2, 1])], tol="bits", id="bool")
case("Tile", {}, [((3, 5), F16, "normal"), F([3, 2])], tol="bits", id="fed")
case("Tile", {}, [In((5, 3), F32, layout="t"), C([2, 2])], opset=11, tol="bits", id="op6")

# Pad: pads [begins..., ends...]; negative entries crop; axes input from 18, wrap from 19.
# (onnx.reference cannot crop: tests/cpp/test_tensor_ops.cpp covers negative pads.)
PADS = [  # (label, X shape, pads)
    ("2d", (3, 5), [1, 2, 2, 1]),
    ("zeros", (4, 7), [0, 2, 1, 0]),
    ("rank3", (2, 3, 4), [0, 1, 2, 1, 0, 3]),
    ("big", (3, 4), [5, 7, 4, 6]),
]
for mode in ("constant", "reflect", "edge", "wrap"):
    for label, x, pads in PADS:
        if mode == "reflect" and label == "big":
            continue
        case("Pad", {"mode": mode}, [(x, F32, "normal"), C(pads)], opset=19, tol="bits",
             id=f"{mode}-{label}")
case("Pad", {"mode": "reflect"}, [((3, 4), F32, "normal"), C([2, 3, 2, 3])], opset=19,
     tol="bits", id="reflect-full")
case("Pad", {}, [((3, 5), F32, "normal"), C([1, 1, 1, 1]), C(2.5, F32)], tol="bits",
     id="value")
case("Pad", {}, [((3, 5), I32, "normal"), C([0, 1, 2, 0]), C(-7, I32)], tol="bits", id="i32")
case("Pad", {}, [((3, 5), F16, "normal"), C([0, 1, 2, 0]), ABSENT, C([-1, 0])], opset=18,
     tol="bits", id="axes")
case("Pad", {"mode": "edge"}, [((2, 3, 5), F32, "normal"), C([2, 1]), ABSENT, C([-2], I32)],
     opset=18, tol="bits", id="axes-i32")
case("Pad", {}, [((3, 5), F32, "normal"), F([1, 0, 0, 2]), F(1.5, F32)], tol="bits", id="fed")
case("Pad", {"mode": "reflect"}, [((3, 5), F64, "normal"), C([1, 2, 1, 2])], opset=11,
     tol="bits", id="op11")
case("Pad", {"mode": "edge"}, [((3, 5), BF16, "normal"), C([1, 2, 1, 2])], opset=13,
     tol="bits", id="op13-bf16")
case("Pad", {}, [((0, 5), F32, "normal"), C([1, 0, 1, 0])], tol="bits", id="empty")

# DepthToSpace (DCR/CRD) and SpaceToDepth.
for mode in ("DCR", "CRD"):
    case("DepthToSpace", {"blocksize": 2, "mode": mode}, [((2, 12, 3, 5), F32, "normal")],
         tol="bits", id=mode)
    case("DepthToSpace", {"blocksize": 3, "mode": mode}, [((1, 9, 2, 1), I64, "normal")],
         opset=11, tol="bits", id=f"{mode}-op11")
case("DepthToSpace", {"blocksize": 1}, [((1, 3, 2, 2), F16, "normal")], tol="bits", id="b1")
case("SpaceToDepth", {"blocksize": 2}, [((2, 3, 6, 4), F32, "normal")], tol="bits", id="b2")
case("SpaceToDepth", {"blocksize": 3}, [((1, 2, 3, 9), I32, "normal")], opset=11, tol="bits",
     id="b3-op1")
case("SpaceToDepth", {"blocksize": 2}, [((1, 2, 4, 2), BF16, "normal")], opset=13, tol="bits",
     id="bf16")
for mode in ("DCR", "CRD"):
    case("SpaceToDepth", {"blocksize": 2, "mode": mode}, [((2, 3, 4, 6), F32, "normal")],
         opset=28, tol="bits", id=f"{mode}-op28")
TENSOR_OPS = ("ReduceMin ReduceProd ReduceL2 ArgMax ArgMin Tile Pad DepthToSpace "
              "SpaceToDepth").split()

# GatherElements / ScatterElements / ScatterND: indices in range, negative ones included.
for label, x, ind, axis in (("axis0", (7, 5), (4, 5), 0), ("axis1", (3, 7, 5), (3, 9, 5), 1),
                            ("neg", (7, 65), (7, 65), -2), ("one", (1,), (3,), 0)):
    n = x[axis]
    case("GatherElements", {"axis": axis}, [(x, F32, "normal"), (ind, I64, ("int", -n, n))],
         tol="bits", id=label)
case("GatherElements", {"axis": 1}, [((3, 7), F16, "normal"), C([[0, 6], [-1, 2], [3, 3]], I32)],
     tol="bits", id="i32-const")
case("GatherElements", {}, [((7, 5), I64, "normal"), ((2, 5), I64, ("int", 0, 7))], opset=11,
     tol="bits", id="op11")
# Scatter with duplicate indices is order-dependent for "none": those use distinct indices.
for red in ("none", "add", "mul", "max", "min"):
    opset = 16 if red in ("none", "add", "mul") else 18
    case("ScatterElements", {"axis": 1, "reduction": red},
         [((3, 7), F32, "normal"), C([[1, 0, 6], [-1, 2, 3], [4, 5, 0]]), ((3, 3), F32, "normal")],
         opset=opset, tol="exact", id=red)
    case("ScatterND", {"reduction": red},
         [((5, 3, 4), F32, "normal"), C([[1], [-1], [0]]), ((3, 3, 4), F32, "normal")],
         opset=opset, tol="exact", id=red)
    if red != "none":
        case("ScatterElements", {"axis": 0, "reduction": red},
             [((4, 3), I64, "normal"), C([[1, 1, 3], [1, 0, 3]]), ((2, 3), I64, "normal")],
             opset=opset, id=f"{red}-dup-i64")
        case("ScatterND", {"reduction": red},
             [((4, 3), I32, "normal"), C([[1, 2], [1, 2], [0, 0]]), ((3,), I32, "normal")],
             opset=opset, id=f"{red}-dup-i32")
case("ScatterElements", {}, [((7,), F16, "normal"), C([2, -3]), ((2,), F16, "normal")],
     opset=11, tol="bits", id="op11")
case("ScatterND", {}, [((4, 5), F64, "normal"), C([[3, 4], [0, 1]]), ((2,), F64, "normal")],
     opset=11, tol="bits", id="op11-points")
case("ScatterND", {}, [((4, 5), BOOL, "bool"), C([[2]]), ((1, 5), BOOL, "bool")], opset=13,
     tol="bits", id="bool")

# OneHot: depth is a shape-time value; out-of-range indices give all-off rows.
case("OneHot", {}, [((3, 5), I64, ("int", -6, 6)), C(4), C([0.5, 2.0], F32)], tol="bits",
     id="wrap-oob")
case("OneHot", {"axis": 0}, [((3, 5), I32, ("int", -4, 4)), C(4.0, F32), C([-1, 1], I64)],
     tol="bits", id="axis0")
case("OneHot", {"axis": 1}, [((2, 3), F32, ("int", -3, 5)), C(3, I32), C([0, 1], I32)],
     tol="bits", id="float-indices")
case("OneHot", {"axis": -2}, [((7,), I64, ("int", 0, 9)), F(9), C([0.0, 1.0], F64)],
     tol="bits", id="fed-depth")

# Einsum: explicit/implicit output, ellipsis, diagonals, reductions, several operands.
EINSUMS = [  # (label, equation, input shapes)
    ("matmul", "ij,jk->ik", [(3, 4), (4, 5)]),
    ("batch", "bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),
    ("implicit", "ij,jk", [(3, 4), (4, 5)]),
    ("implicit-upper", "Ba,aC", [(3, 4), (4, 5)]),
    ("transpose", "ij->ji", [(3, 4)]),
    ("sum", "ij->", [(3, 4)]),
    ("trace", "ii", [(4, 4)]),
    ("diag", "ii->i", [(4, 4)]),
    ("diag3", "iji->ij", [(3, 2, 3)]),
    ("outer", "i,j->ij", [(3,), (5,)]),
    ("dot", "i,i", [(7,), (7,)]),
    ("three", "ij,jk,kl->il", [(2, 3), (3, 4), (4, 2)]),
    ("ellipsis", "...ij,...jk->...ik", [(2, 3, 4), (2, 4, 5)]),
    ("ellipsis-bcast", "...ij,...jk->...ik", [(2, 1, 3, 4), (3, 4, 2)]),
    ("ellipsis-mid", "i...j->j...i", [(2, 3, 4, 5)]),
    ("ellipsis-implicit", "...ii", [(2, 3, 3)]),
    ("spaces", "i j , j k -> i k", [(3, 4), (4, 5)]),
]
for label, eq, shapes in EINSUMS:
    case("Einsum", {"equation": eq}, [(s, F32, "normal") for s in shapes], opset=12,
         tol="accum", id=label)
case("Einsum", {"equation": "ij,jk->ik"}, [((3, 4), F64, "normal"), ((4, 5), F64, "normal")],
     opset=12, tol="accum", id="f64")
case("Einsum", {"equation": "bij,bjk->bik"}, [((2, 3, 4), I64, "normal"),
                                            ((2, 4, 5), I64, "normal")], opset=12, id="i64")
case("Einsum", {"equation": "ij,jk->ik"}, [((3, 4), F16, "unit"), ((4, 5), F16, "unit")],
     opset=12, tol="accum", id="f16")
TENSOR_OPS += "GatherElements ScatterElements ScatterND OneHot Einsum".split()


# ---- convolution (Conv, ConvTranspose) ---------------------------------------------------------

# (label, attrs, X shape, W shape, bias): odd spatial sizes 1, 7, 13; channels 1, 3, 8; batch
# 1 and 3; groups and depthwise; dilation 2; stride 2; every auto_pad; 1-D, 2-D and 3-D.
CONV = [
    ("3x3-pad", {"pads": [1, 1, 1, 1]}, (1, 3, 7, 7), (8, 3, 3, 3), True),
    ("stride2-same-upper-b3", {"strides": [2, 2], "auto_pad": "SAME_UPPER"}, (3, 3, 13, 13),
     (8, 3, 3, 3), True),
    ("dil2-same-lower", {"dilations": [2, 2], "auto_pad": "SAME_LOWER"}, (1, 8, 13, 7),
     (8, 8, 3, 3), False),
    ("valid-stride2", {"auto_pad": "VALID", "strides": [2, 2]}, (1, 3, 13, 7), (8, 3, 3, 3), True),
    ("group2-b3", {"group": 2, "pads": [0, 1, 2, 1]}, (3, 8, 7, 13), (8, 4, 3, 3), True),
    ("depthwise", {"group": 8, "pads": [1, 1, 1, 1]}, (1, 8, 13, 13), (8, 1, 3, 3), True),
    ("depthwise-s2-d2-b3", {"group": 8, "strides": [2, 2], "dilations": [2, 2],
                            "auto_pad": "SAME_UPPER"}, (3, 8, 13, 7), (8, 1, 3, 3), False),
    ("depthwise-mult", {"group": 3, "pads": [1, 1, 1, 1]}, (1, 3, 7, 7), (6, 1, 3, 3), True),
    ("1x1-b3", {}, (3, 8, 7, 7), (3, 8, 1, 1), True),
    ("1x1-stride2", {"strides": [2, 2]}, (1, 8, 7, 13), (3, 8, 1, 1), False),
    ("kernel-shape", {"kernel_shape": [3, 1]}, (1, 3, 7, 7), (1, 3, 3, 1), True),
    ("spatial1", {}, (1, 1, 1, 1), (1, 1, 1, 1), True),
    ("spatial1x13", {"pads": [0, 1, 0, 1]}, (3, 3, 1, 13), (8, 3, 1, 3), True),
    ("1d-stride2", {"strides": [2], "pads": [1, 1]}, (3, 3, 13), (8, 3, 3), True),
    ("1d-dil2-same", {"dilations": [2], "auto_pad": "SAME_LOWER"}, (1, 8, 7), (1, 8, 2), False),
    ("3d", {"pads": [1, 0, 1, 1, 0, 1]}, (1, 3, 5, 7, 7), (8, 3, 3, 3, 3), True),
]
for label, attrs, xs, ws, bias in CONV:
    ins = [(xs, F32, "normal"), In(ws, F32, const=True)] + ([In((ws[0],), F32, const=True)] if bias else [])
    case("Conv", attrs, ins, tol="accum", id=f"{label}-f32")
case("Conv", {"pads": [1, 1, 1, 1]}, [In((1, 3, 7, 13), F32, layout="t"), ((8, 3, 3, 3), F32, "normal"),
                                      ((8,), F32, "normal")], tol="accum", id="fed-w-view")
case("Conv", {"pads": [1, 1, 1, 1], "group": 2},
     [((1, 8, 7, 7), F16, "unit"), ((8, 4, 3, 3), F16, "unit"), ((8,), F16, "unit")],
     tol=(2e-2, 2e-2), id="group2-f16")
case("Conv", {"strides": [2, 2]}, [((3, 3, 13, 7), F64, "normal"), ((8, 3, 3, 3), F64, "normal")],
     tol="accum", id="stride2-f64")
case("Conv", {"auto_pad": "SAME_UPPER"}, [((1, 3, 7, 7), BF16, "unit"), ((8, 3, 3, 3), BF16, "unit")],
     opset=22, tol=(5e-2, 5e-2), id="same-bf16-op22")
case("Conv", {"pads": [1, 1, 1, 1]}, [((1, 3, 7, 7), F32, "normal"), ((8, 3, 3, 3), F32, "normal")],
     opset=11, tol="accum", id="op11")
case("Conv", {"group": 8}, [((1, 8, 7, 7), F32, "normal"), ((8, 1, 3, 3), F32, "normal")],
     opset=22, tol="accum", id="depthwise-op22")
case("Conv", {"pads": [1, 1, 1, 1]}, [((0, 3, 7, 7), F32, "normal"), ((8, 3, 3, 3), F32, "normal")],
     tol="accum", id="empty-batch")
case("Conv", {"pads": [1, 1, 1, 1], "strides": [2, 2]},
     [((3, 64, 13, 13), F32, "normal"), In((65, 64, 3, 3), F32, const=True),
      In((65,), F32, const=True)], tol="accum", id="big-im2col")

CONV_TRANSPOSE = [
    ("basic", {}, (1, 3, 7, 7), (3, 8, 3, 3), True),
    ("stride2-pads-outpad-b3", {"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1]},
     (3, 3, 7, 7), (3, 8, 3, 3), True),
    ("output-shape", {"strides": [2, 2], "output_shape": [15, 16]}, (1, 3, 7, 7), (3, 8, 3, 3),
     False),
    # onnx.reference (1.23) gets groups right only when each group has one input and one
    # output channel and there is no bias; other groups: tests/cpp/test_conv.cpp.
    ("depthwise-dil2", {"group": 8, "dilations": [2, 2]}, (1, 8, 7, 13), (8, 1, 3, 3), False),
    ("depthwise-s2-b3", {"group": 8, "strides": [2, 2]}, (3, 8, 7, 7), (8, 1, 3, 3), False),
    ("same-upper-s2", {"strides": [2, 2], "auto_pad": "SAME_UPPER"}, (1, 3, 7, 7), (3, 1, 3, 3),
     False),
    ("same-lower-s2-b3", {"strides": [2, 2], "auto_pad": "SAME_LOWER"}, (3, 3, 7, 13),
     (3, 8, 3, 3), True),
    ("asym-pads", {"pads": [0, 1, 2, 1]}, (1, 1, 7, 7), (1, 3, 3, 3), True),
    ("spatial1", {}, (1, 1, 1, 1), (1, 1, 1, 1), False),
    ("1d-stride2", {"strides": [2], "output_padding": [1]}, (3, 3, 13), (3, 8, 3), True),
    ("3d", {"strides": [1, 2, 2], "pads": [1, 1, 0, 1, 1, 0]}, (1, 3, 5, 7, 7), (3, 8, 3, 3, 3),
     True),
]
for label, attrs, xs, ws, bias in CONV_TRANSPOSE:
    m = ws[1] * attrs.get("group", 1)
    ins = [(xs, F32, "normal"), In(ws, F32, const=True)] + ([In((m,), F32, const=True)] if bias else [])
    case("ConvTranspose", attrs, ins, tol="accum", id=f"{label}-f32")
case("ConvTranspose", {"strides": [2, 2]},
     [((1, 3, 7, 7), F16, "unit"), ((3, 8, 3, 3), F16, "unit"), ((8,), F16, "unit")],
     tol=(2e-2, 2e-2), id="stride2-f16")
case("ConvTranspose", {"pads": [1, 1, 1, 1]}, [((3, 3, 7, 7), F64, "normal"), ((3, 8, 3, 3), F64, "normal")],
     tol="accum", id="pads-f64")
case("ConvTranspose", {"strides": [2, 2]}, [((1, 3, 7, 7), BF16, "unit"), ((3, 8, 3, 3), BF16, "unit")],
     opset=22, tol=(5e-2, 5e-2), id="bf16-op22")
case("ConvTranspose", {"strides": [2, 2]}, [((1, 3, 7, 7), F32, "normal"), ((3, 8, 3, 3), F32, "normal")],
     opset=11, tol="accum", id="op11")
CONV_OPS = ["Conv", "ConvTranspose"]

# ---- CNN layers and activations (ops_nn.cpp, ops_pool.cpp) ----------------------------------

NN_OPS = ("LeakyRelu PRelu Elu Selu HardSigmoid HardSwish Floor Ceil Round Sign Mod "
          "GlobalAveragePool GlobalMaxPool BatchNormalization InstanceNormalization "
          "GroupNormalization MaxPool AveragePool").split()
for op, attrs, tol in [("LeakyRelu", {"alpha": 0.1}, "exact"), ("Elu", {"alpha": 0.5}, "trans"),
                       ("Selu", {}, "trans"), ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}, "exact"),
                       ("HardSwish", {}, "exact"), ("Floor", {}, "exact"), ("Ceil", {}, "exact"),
                       ("Round", {}, "exact"), ("Sign", {}, "exact")]:
    case(op, attrs, [((7, 769), F32, "wide")], tol=tol, id="f32")
    case(op, attrs, [((5125,), F16, "wide")], tol=tol, id="f16")
    case(op, attrs, [((3, 7), BF16, "normal")], tol=tol, id="bf16")
    case(op, attrs, [In((7, 769), F64, "wide", layout="t")], tol=tol, id="views-f64")
case("LeakyRelu", {}, [((7, 9), F32, "normal")], id="default")
case("Round", {}, [F([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5, -0.0, 0.49999997], F32)],
     id="half-even")
for dt in (I8, I32, I64):
    case("Sign", {}, [((7, 769), dt, "small_int")], id=dt)
case("PRelu", {}, [((2, 3, 5, 7), F32, "normal"), ((3, 1, 1), F32, "normal")], id="channel")
case("PRelu", {}, [((2, 3, 5, 7), F32, "normal"), ((7,), F32, "normal")], id="row")
case("PRelu", {}, [((7, 769), F16, "normal"), ((1,), F16, "pos")], id="scalar-f16")
case("PRelu", {}, [((7, 769), I32, "normal"), ((769,), I32, "normal")], id="i32")
case("Mod", {"fmod": 1}, [((7, 769), F32, "wide"), ((769,), F32, "nonzero")], id="fmod-f32")
case("Mod", {"fmod": 1}, [((7, 769), F64, "wide"), ((7, 1), F64, "nonzero")], id="fmod-f64")
case("Mod", {"fmod": 0}, [((7, 769), F32, "wide"), ((769,), F32, "nonzero")], id="mod-f32")
for fm in (0, 1):
    case("Mod", {"fmod": fm}, [((7, 769), I32, ("int", -1000, 1000)), ((769,), I32, "nonzero")],
         id=f"i32-fmod{fm}")
    case("Mod", {"fmod": fm}, [((7, 769), I64, ("int", -1000, 1000)), ((), I64, "nonzero")],
         id=f"i64-fmod{fm}")
    case("Mod", {"fmod": fm}, [((7, 769), I8, ("int", -128, 128)), ((7, 1), I8, "nonzero")],
         id=f"i8-fmod{fm}")
case("Mod", {}, [((7, 769), U8, ("int", 0, 256)), ((769,), U8, "pos")], id="u8")
# onnx.reference's GlobalMaxPool reduces axes (rank-2, rank-1): right for 4-D input only.
for op in ("GlobalAveragePool", "GlobalMaxPool"):
    case(op, {}, [((2, 3, 7, 9), F32, "normal")], tol="accum", id="2d-f32")
    case(op, {}, [((2, 5, 3, 769), F16, "normal")], tol="accum", id="2d-f16")
    case(op, {}, [In((1, 3, 7, 5), F64, "normal", layout="t")], tol="accum", id="views-f64")
case("GlobalAveragePool", {}, [((2, 5, 769), F16, "normal")], tol="accum", id="1d-f16")
case("GlobalAveragePool", {}, [((1, 3, 2, 3, 5), F64, "normal")], tol="accum", id="3d-f64")
BN = [((3,), F32, "normal"), ((3,), F32, "normal"), ((3,), F32, "normal"), ((3,), F32, "pos")]
case("BatchNormalization", {"epsilon": 1e-3}, [((2, 3, 5, 7), F32, "normal"), *BN], opset=15,
     tol="accum", id="f32")
case("BatchNormalization", {}, [((2, 3, 7), F16, "normal"), *BN], opset=15, tol="accum",
     id="f16-f32params")
case("BatchNormalization", {}, [((2, 3), F64, "normal"), *[(s, F64, g) for s, _, g in BN]],
     opset=14, tol="accum", id="rank2-f64")
# (onnx.reference's BatchNormalization-9 applies a default momentum, i.e. training statistics,
# so the opset-9 form is covered by the ONNX node tests only.)
case("BatchNormalization", {}, [((2, 3, 5, 7), F32, "normal"), *[In(*x, const=True) for x in BN]],
     opset=14, tol="accum", id="const-params")
case("InstanceNormalization", {}, [((2, 3, 7, 9), F32, "normal"), ((3,), F32, "normal"),
                                   ((3,), F32, "normal")], tol="accum", id="f32")
case("InstanceNormalization", {"epsilon": 1e-2}, [((2, 4, 769), F16, "normal"),
                                                  ((4,), F16, "normal"), ((4,), F16, "normal")],
     tol="accum", id="f16")
case("GroupNormalization", {"num_groups": 3}, [((2, 6, 5, 7), F32, "normal"),
                                               ((6,), F32, "normal"), ((6,), F32, "normal")],
     opset=21, tol="accum", id="per-channel")
case("GroupNormalization", {"num_groups": 3, "epsilon": 1e-3},
     [((2, 6, 5, 7), F32, "normal"), ((3,), F32, "normal"), ((3,), F32, "normal")],
     opset=18, tol="accum", id="per-group-18")
case("GroupNormalization", {"num_groups": 1}, [((3, 4, 769), F64, "normal"),
                                               ((4,), F64, "normal"), ((4,), F64, "normal")],
     opset=21, tol=(1e-6, 1e-6), id="one-group-f64")  # onnx.reference stashes in float32
POOLS = [
    ("k3s2p1", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}, (2, 3, 9, 11)),
    ("ceil", {"kernel_shape": [3, 2], "strides": [2, 2], "ceil_mode": 1}, (1, 2, 8, 9)),
    ("ceil-pads", {"kernel_shape": [2, 2], "strides": [3, 2], "pads": [1, 0, 1, 1],
                   "ceil_mode": 1}, (1, 2, 7, 8)),
    ("dilated", {"kernel_shape": [2, 3], "dilations": [2, 2], "pads": [1, 2, 0, 1]}, (1, 3, 9, 9)),
    ("same-upper", {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"},
     (1, 2, 8, 9)),
    ("same-lower", {"kernel_shape": [2, 4], "auto_pad": "SAME_LOWER"}, (1, 2, 5, 7)),
    ("valid", {"kernel_shape": [2, 3], "strides": [2, 1], "auto_pad": "VALID"}, (2, 1, 7, 9)),
    ("1d", {"kernel_shape": [5], "strides": [3], "pads": [2, 1]}, (2, 3, 769)),
    ("3d", {"kernel_shape": [2, 2, 2], "strides": [1, 2, 2]}, (1, 2, 3, 5, 6)),
]
for label, attrs, shape in POOLS:
    case("MaxPool", attrs, [(shape, F32, "normal")], opset=22, tol="bits", id=label)
    case("AveragePool", attrs, [(shape, F32, "normal")], opset=22, tol="accum", id=label)
    if "pads" in attrs:
        case("AveragePool", {**attrs, "count_include_pad": 1}, [(shape, F32, "normal")],
             opset=22, tol="accum", id=f"{label}-incl")
case("MaxPool", POOLS[0][1], [((2, 3, 9, 11), F32, "normal")], opset=22, outputs=2, tol="bits",
     id="indices")
case("MaxPool", {**POOLS[3][1], "storage_order": 1}, [((1, 3, 9, 9), F32, "normal")], outputs=2,
     opset=22, tol="bits", id="indices-colmajor")
case("MaxPool", POOLS[1][1], [((1, 2, 8, 9), I8, ("int", -128, 128))], opset=12, id="i8")
case("MaxPool", POOLS[0][1], [((2, 3, 9, 11), F16, "normal")], opset=11, tol="bits", id="f16-11")
case("AveragePool", POOLS[0][1], [((2, 3, 9, 11), F16, "normal")], opset=11, tol="accum",
     id="f16-11")
case("AveragePool", POOLS[2][1], [((1, 2, 7, 8), F64, "normal")], opset=19, tol="accum",
     id="f64-19")

# Resize: inputs X, roi, scales, sizes; scales/sizes are needed at plan time (C, or F: fed).
_F32S = lambda v: C(v, F32)  # noqa: E731
_RESIZES = [  # (label, attrs, X shape, scales or None, sizes or None)
    ("nearest-up", {"mode": "nearest"}, (1, 2, 5, 7), [1, 1, 2.0, 3.0], None),
    ("nearest-down", {"mode": "nearest"}, (1, 2, 9, 7), [1, 1, 0.5, 0.6], None),
    ("nearest-ceil-align", {"mode": "nearest", "nearest_mode": "ceil",
                            "coordinate_transformation_mode": "align_corners"},
     (2, 5, 7), None, [2, 9, 4]),
    ("nearest-floor-asym", {"mode": "nearest", "nearest_mode": "floor",
                            "coordinate_transformation_mode": "asymmetric"},
     (2, 5, 7), [1, 1.7, 2.3], None),
    ("nearest-prefer-ceil", {"mode": "nearest", "nearest_mode": "round_prefer_ceil"},
     (2, 4, 6), [1, 1.5, 2.5], None),
    ("linear-up", {"mode": "linear"}, (1, 3, 5, 7), [1, 1, 1.8, 2.5], None),
    ("linear-down", {"mode": "linear"}, (1, 3, 9, 11), None, [1, 3, 4, 5]),
    ("linear-1d", {"mode": "linear"}, (13,), [2.5], None),
    ("linear-align", {"mode": "linear", "coordinate_transformation_mode": "align_corners"},
     (2, 5, 7), None, [2, 9, 3]),
    ("linear-pytorch", {"mode": "linear",
                        "coordinate_transformation_mode": "pytorch_half_pixel"},
     (2, 5, 7), None, [2, 1, 13]),
    ("linear-asym", {"mode": "linear", "coordinate_transformation_mode": "asymmetric"},
     (2, 5, 7), [1, 0.7, 1.9], None),
    ("linear-symmetric", {"mode": "linear",
                          "coordinate_transformation_mode": "half_pixel_symmetric"},
     (2, 5, 7), [1, 1.3, 0.7], None),
    ("linear-3d", {"mode": "linear"}, (3, 5, 4), [1.5, 0.6, 2.0], None),
    ("cubic", {"mode": "cubic"}, (1, 2, 5, 7), [1, 1, 1.6, 0.8], None),
    ("cubic-exclude", {"mode": "cubic", "exclude_outside": 1, "cubic_coeff_a": -0.5},
     (1, 2, 5, 7), [1, 1, 2.0, 1.4], None),
    ("linear-antialias", {"mode": "linear", "antialias": 1}, (1, 2, 13, 11), [1, 1, 0.4, 0.7],
     None),
    ("cubic-antialias", {"mode": "cubic", "antialias": 1}, (1, 2, 13, 11), None, [1, 2, 5, 4]),
    ("axes", {"mode": "linear", "axes": [3, 2]}, (2, 3, 5, 7), [1.5, 0.5], None),
    ("keep-not-larger", {"mode": "nearest", "axes": [2, 3],
                         "keep_aspect_ratio_policy": "not_larger"}, (1, 2, 5, 7), None, [9, 9]),
    ("keep-not-smaller", {"mode": "linear", "axes": [2, 3],
                          "keep_aspect_ratio_policy": "not_smaller"}, (1, 2, 5, 7), None, [9, 9]),
]
for label, attrs, shape, scales, sizes in _RESIZES:
    ins = [(shape, F32, "normal"), ABSENT, _F32S(scales) if scales else ABSENT]
    if sizes:
        ins.append(C(sizes))
    case("Resize", attrs, ins, opset=19, tol="accum", id=label)
case("Resize", {"mode": "linear"}, [((1, 3, 5, 7), F32, "normal"), ABSENT,
                                    F([1, 1, 1.8, 2.5], F32)], opset=19, tol="accum", id="fed-scales")
case("Resize", {"mode": "nearest"}, [((2, 5, 7), F32, "normal"), ABSENT, ABSENT, F([2, 9, 4])],
     opset=19, tol="bits", id="fed-sizes")
case("Resize", {"mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize",
                "extrapolation_value": 2.5},
     [((1, 2, 6, 7), F32, "normal"), C([0, 0, -0.2, 0.3, 1, 1, 0.9, 1.3], F32), ABSENT,
      C([1, 2, 5, 8])], opset=19, tol="accum", id="crop")
# (The roi keeps x_ori off .5 ties: onnx.reference computes it in float32.)
case("Resize", {"mode": "nearest", "coordinate_transformation_mode": "tf_crop_and_resize",
                "axes": [2, 3]},
     [((1, 2, 6, 7), F32, "normal"), C([0.15, 0.2, 0.8, 1.2], F32), ABSENT, C([3, 9])], opset=19,
     tol="bits", id="crop-nearest-axes")
case("Resize", {"mode": "linear"}, [((1, 2, 5, 7), U8, ("int", 0, 256)), ABSENT,
                                    _F32S([1, 1, 1.5, 1.7])], opset=19, id="u8")
case("Resize", {"mode": "nearest"}, [((2, 5, 7), I64, "normal"), ABSENT, _F32S([1, 2, 1.5])],
     opset=19, tol="bits", id="i64-nearest")
case("Resize", {"mode": "linear"}, [((2, 5, 7), F16, "unit"), ABSENT, _F32S([1, 2, 1.5])],
     opset=19, tol="accum", id="f16")
# onnx.reference computes cubic weights in float32 (A is a float32 scalar), hence the tolerance.
case("Resize", {"mode": "cubic"}, [((2, 5, 7), F64, "normal"), ABSENT, _F32S([1, 2, 1.5])],
     opset=19, tol=(1e-5, 1e-5), id="f64")
case("Resize", {"mode": "linear"}, [((2, 5, 7), F32, "normal"), C([], F32), _F32S([1, 2, 1.5])],
     opset=11, tol="accum", id="op11")
case("Resize", {"mode": "nearest", "coordinate_transformation_mode": "asymmetric"},
     [((2, 5, 7), F32, "normal"), C([], F32), C([], F32), C([2, 9, 4])], opset=11, tol="bits",
     id="op11-sizes")
case("Resize", {"mode": "linear"}, [((2, 5, 7), F32, "normal"), ABSENT, _F32S([1, 2, 1.5])],
     opset=13, tol="accum", id="op13")
case("Resize", {"mode": "linear", "axes": [1]}, [((2, 5, 7), F32, "normal"), ABSENT,
                                                 _F32S([2.2])], opset=18, tol="accum", id="op18")


# ---- control flow and data-dependent shapes (ops_control.cpp) --------------------------------

CONTROL_OPS = ["If", "Loop", "NonZero"]

# NonZero: zeros on purpose (small_int, bool); an empty input; f16 through the float compare.
case("NonZero", {}, [((3, 7), F32, "small_int")], tol="bits", id="f32")
case("NonZero", {}, [((2, 3, 5), I64, "small_int")], tol="bits", id="rank3-i64")
case("NonZero", {}, [((9,), BOOL, "bool")], tol="bits", id="bool")
case("NonZero", {}, [((4, 769), F16, "small_int")], tol="bits", id="f16")
case("NonZero", {}, [((0, 5), F32, "normal")], tol="bits", id="empty")


def _graph(nodes, name, inputs, outputs):
    from onnx import helper
    vi = lambda n, t, s: helper.make_tensor_value_info(n, t, s)  # noqa: E731
    return helper.make_graph(nodes, name, [vi(*x) for x in inputs], [vi(*x) for x in outputs])


def _const_branch(name, values):
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper
    node = helper.make_node("Constant", [], [f"{name}_out"],
                            value=numpy_helper.from_array(np.asarray(values, np.float32)))
    return _graph([node], name, [], [(f"{name}_out", TensorProto.FLOAT, None)])


# If: the branches differ in shape, so the output's shape is known only by running.
_branches = {"then_branch": _const_branch("then", [1.0, 2.0, 3.0]),
             "else_branch": _const_branch("else", [[4.0, 5.0], [6.0, 7.0]])}
case("If", _branches, [F(True, "bool")], tol="bits", id="then")
case("If", _branches, [F(False, "bool")], tol="bits", id="else")


def _loop_body():
    """v <- v + float(iter); scan v * 2; stop once iter reaches 2 (3 iterations at most)."""
    from onnx import TensorProto as T, helper
    nodes = [helper.make_node("Cast", ["iter"], ["iter_f"], to=T.FLOAT),
             helper.make_node("Add", ["v_in", "iter_f"], ["v_out"]),
             helper.make_node("Add", ["v_out", "v_out"], ["scan"]),
             helper.make_node("Constant", [], ["two"], value_int=2),
             helper.make_node("Less", ["iter", "two"], ["cond_out"])]
    return _graph(nodes, "body", [("iter", T.INT64, []), ("cond_in", T.BOOL, []),
                                  ("v_in", T.FLOAT, [3, 4])],
                  [("cond_out", T.BOOL, []), ("v_out", T.FLOAT, [3, 4]), ("scan", T.FLOAT, [3, 4])])


# Loop: trip count M and cond fed; the body's cond stops it early; a scan output stacks.
case("Loop", {"body": _loop_body()}, [F(5), F(True, "bool"), ((3, 4), F32, "normal")],
     outputs=2, id="early-stop")
case("Loop", {"body": _loop_body()}, [F(2), F(True, "bool"), ((3, 4), F32, "normal")],
     outputs=2, id="trip-count")
case("Loop", {"body": _loop_body()}, [ABSENT, F(True, "bool"), ((3, 4), F32, "normal")],
     outputs=2, id="no-trip-count")
