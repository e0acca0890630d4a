"""int4 weight-only: com.microsoft MatMulNBits (bits=4), group-wise along K.

q4g_quantize / q4g_dequantize are numpy twins of kernels/common/quant.cpp's references (same
float32 arithmetic, same rounding: roundf is half away from zero, the symmetric path truncates
x * id + 8.5 as q4_0 does), so a file written here decodes in ember's C++ bit for bit.
MatMulNBits(A, B, scales[, zero_points]) with attrs K, N, bits=4, block_size=G, accuracy_level=4:
  B uint8 [N, n_blocks, G / 2]: code of k in the low nibble for even k, padding codes = zero point
  scales float32 [N * n_blocks]; zero_points uint8 [N * ceil(n_blocks / 2)], even block low
  (absent for symmetric groups: every zero point is then 8).
"""

from __future__ import annotations

import numpy as np

from ember.quantize.graph import set_opset
from ember.quantize.select import Decision, display_name

MS_DOMAIN = "com.microsoft"


def _roundf(v):
    """C's roundf (half away from zero) of float32 values, exactly (float64 holds x + 0.5)."""
    v = np.asarray(v, np.float64)
    return np.sign(v) * np.floor(np.abs(v) + 0.5)


def q4g_quantize(w, group, zero_point=True):
    """w float32 [N, K] -> (q uint8 [N, n_blocks * G / 2], scales float32 [N, n_blocks],
    zp uint8 [N, ceil(n_blocks / 2)] or None). Rules in kernels/common/quant.h."""
    w = np.ascontiguousarray(w, dtype=np.float32)
    n, k = w.shape
    groups = (k + group - 1) // group
    if not np.isfinite(w).all():
        raise ValueError("q4g: weights must be finite")
    padded = np.zeros((n, groups * group), np.float32)
    padded[:, :k] = w
    x = padded.reshape(n, groups, group)
    valid = (np.arange(groups * group) < k).reshape(groups, group)
    if zero_point:
        big = np.float32(np.inf)
        vmin = np.minimum(np.where(valid, x, big).min(axis=2), np.float32(0))
        vmax = np.maximum(np.where(valid, x, -big).max(axis=2), np.float32(0))
        scale = ((vmax - vmin) / np.float32(15.0)).astype(np.float32)
        with np.errstate(divide="ignore"):
            inv = np.where(scale != 0, np.float32(1.0) / scale, np.float32(0)).astype(np.float32)
        z = np.where(scale != 0, np.clip(_roundf(-vmin * inv), 0, 15), 8).astype(np.int64)
        codes = np.clip(_roundf(x * inv[..., None]) + z[..., None], 0, 15).astype(np.int64)
    else:
        a = np.abs(x) * valid
        idx = a.argmax(axis=2)                                   # first of the largest |x|
        vmax = np.take_along_axis(x, idx[..., None], axis=2)[..., 0]
        scale = (vmax / np.float32(-8.0)).astype(np.float32)
        with np.errstate(divide="ignore"):
            inv = np.where(scale != 0, np.float32(1.0) / scale, np.float32(0)).astype(np.float32)
        z = np.full(scale.shape, 8, np.int64)
        t = (x * inv[..., None]).astype(np.float32) + np.float32(8.5)
        codes = np.minimum(15, np.trunc(t)).astype(np.int64)
    codes = np.where(valid, codes, z[..., None]).reshape(n, groups * group)
    q = (codes[:, 0::2] | (codes[:, 1::2] << 4)).astype(np.uint8)
    zp = None
    if zero_point:
        zpad = np.zeros((n, groups + (groups & 1)), np.int64)
        zpad[:, :groups] = z
        zp = (zpad[:, 0::2] | (zpad[:, 1::2] << 4)).astype(np.uint8)
    return q, scale.astype(np.float32), zp


def q4g_unpack(q, zp, groups):
    """q4g_quantize's packed nibbles -> (codes int64 [N, n_blocks * G], zero points int64
    [N, groups]; 8 where zp is None)."""
    n = q.shape[0]
    codes = np.empty((n, q.shape[1] * 2), np.int64)
    codes[:, 0::2], codes[:, 1::2] = q & 0x0F, q >> 4
    if zp is None:
        return codes, np.full((n, groups), 8, np.int64)
    zz = np.empty((n, zp.shape[1] * 2), np.int64)
    zz[:, 0::2], zz[:, 1::2] = zp & 0x0F, zp >> 4
    return codes, zz[:, :groups]


def q4g_dequantize(q, scales, zp, k, group):
    """Inverse of q4g_quantize -> float32 [N, K]."""
    n, groups = scales.shape
    codes, z = q4g_unpack(q, zp, groups)
    c = codes.reshape(n, groups, group) - z[..., None]
    return (c.astype(np.float32) * scales[..., None]).reshape(n, groups * group)[:, :k]


def apply(ed, layers, config):
    """Rewrites each layer (MatMul, or Gemm with alpha = beta = 1) as MatMulNBits -> [Decision]."""
    if not layers:
        return []
    set_opset(ed.model, MS_DOMAIN, 1)
    G = config.group_size
    weights = {}
    decisions = []
    for L in layers:
        n = L.node
        key = (L.w, L.kn)
        w = ed.const_array(L.w)
        wnk = w.T if L.kn else w                                    # [N, K]
        N, K = wnk.shape
        if key not in weights:
            q, scales, zp = q4g_quantize(wnk, G, config.int4_zero_point)
            blocks = scales.shape[1]
            names = [ed.add_init(f"{L.w}_q4", q.reshape(N, blocks, G // 2)),
                     ed.add_init(f"{L.w}_scales", scales.reshape(-1))]
            if zp is not None:
                names.append(ed.add_init(f"{L.w}_zp", zp.reshape(-1)))
            weights[key] = names
        y = n.output[0]
        name = n.name or display_name(n)
        has_bias = n.op_type == "Gemm" and len(n.input) > 2 and n.input[2]
        y0 = ed.fresh(f"{y}_nobias") if has_bias else y
        ed.replace(n)
        ed.add_node(n, "MatMulNBits", [L.x, *weights[key]], [y0], name, domain=MS_DOMAIN,
                    K=K, N=N, bits=4, block_size=G, accuracy_level=4)
        if has_bias:
            ed.add_node(n, "Add", [y0, n.input[2]], [y], f"{name}/Add_bias")
        decisions.append(Decision(display_name(n), n.op_type, True, "", "int4", tuple(L.shape),
                                  n.output[0]))
    return decisions
