"""ggml weight formats -> float32, in numpy: the reference the C++ and CUDA repacks are checked against.

Each format stores a row as independent blocks (`BLOCK_TYPES`: elements and bytes per block).
The dequantizers are vectorized over blocks and follow ggml's float evaluation order exactly
(`(d * sc) * q - dmin * m`), so results are bit-identical to ggml's `dequantize_row_*`.
`q4_*_to_q4_blocks` rewrite Q4_0 / Q4_1 / Q4_K rows as one shared 4-bit form: per 32 elements
16 code bytes (element j in the low nibble of byte j, element j + 16 in the high nibble), a
float32 scale and a float32 offset, with value = code * scale + offset exactly.
"""
from __future__ import annotations

import numpy as np

from ember.errors import ModelError

__all__ = ["BLOCK_TYPES", "row_bytes", "dequantize", "q4_0_to_q4_blocks", "q4_1_to_q4_blocks",
           "q4_k_to_q4_blocks", "q4_blocks_dequantize", "q8_0_to_q8_blocks", "Q4_BLOCK_CONVERTERS"]

QK_K = 256

# name -> (elements per block, bytes per block); the formats ember reads from GGUF files.
BLOCK_TYPES = {
    "F32": (1, 4),
    "F16": (1, 2),
    "BF16": (1, 2),
    "Q8_0": (32, 34),
    "Q4_0": (32, 18),
    "Q4_1": (32, 20),
    "Q4_K": (QK_K, 144),
    "Q5_K": (QK_K, 176),
    "Q6_K": (QK_K, 210),
}

# blocks per chunk: bounds the temporaries of one dequantize call (~8 MiB of output per chunk)
_CHUNK_ELEMENTS = 1 << 21


def row_bytes(ggml_type: str, cols: int) -> int:
    """Bytes of one row of `cols` elements (cols must be a multiple of the block size)."""
    block, size = BLOCK_TYPES[ggml_type]
    if cols % block:
        raise ModelError(f"[kquants] {ggml_type} rows need a multiple of {block} elements, got {cols}")
    return cols // block * size


def _blocks(raw: np.ndarray, ggml_type: str) -> np.ndarray:
    """raw bytes -> [n_blocks, bytes_per_block] uint8 (a view when raw is contiguous)."""
    block, size = BLOCK_TYPES[ggml_type]
    flat = np.ascontiguousarray(raw).view(np.uint8).reshape(-1)
    if flat.size % size:
        raise ModelError(f"[kquants] {flat.size} bytes is not a whole number of {ggml_type} blocks "
                         f"({size} bytes each)")
    return flat.reshape(-1, size)


def _f16(b: np.ndarray) -> np.ndarray:
    """[n, 2] uint8 -> [n, 1] float32 (little-endian IEEE half)."""
    return np.ascontiguousarray(b).view("<f2").astype(np.float32)


def _k_scales(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q4_K / Q5_K packed 6-bit scales and mins: [n, 12] uint8 -> two [n, 8] float32.

    Bytes 0-3 hold scales 0-3 (low 6 bits), bytes 4-7 mins 0-3; bytes 8-11 hold the low 4 bits
    of scales 4-7 (low nibble) and mins 4-7 (high nibble), whose top 2 bits sit in the top 2
    bits of bytes 0-3 (scales) and 4-7 (mins).
    """
    a, b, c = s[:, 0:4], s[:, 4:8], s[:, 8:12]
    sc = np.concatenate([a & 63, (c & 15) | ((a >> 6) << 4)], axis=1)
    mn = np.concatenate([b & 63, (c >> 4) | ((b >> 6) << 4)], axis=1)
    return sc.astype(np.float32), mn.astype(np.float32)


def _nibbles_k(qs: np.ndarray) -> np.ndarray:
    """Q4_K / Q5_K quants: [n, 128] uint8 -> [n, 8, 32] codes 0..15.

    Each 32 bytes carry two sub-blocks: low nibbles are sub-block 2i, high nibbles 2i + 1.
    """
    q = qs.reshape(-1, 4, 1, 32)
    return np.concatenate([q & 15, q >> 4], axis=2).reshape(-1, 8, 32)


def _deq_q8_0(b):
    d = _f16(b[:, 0:2])
    return b[:, 2:].view(np.int8).astype(np.float32) * d


def _deq_q4_0(b):
    d = _f16(b[:, 0:2])
    q = b[:, 2:]
    q = np.concatenate([q & 15, q >> 4], axis=1).astype(np.int8) - np.int8(8)
    return d * q.astype(np.float32)


def _deq_q4_1(b):
    d, m = _f16(b[:, 0:2]), _f16(b[:, 2:4])
    q = b[:, 4:]
    q = np.concatenate([q & 15, q >> 4], axis=1).astype(np.float32)
    return d * q + m


def _deq_q4_k(b):
    d, dmin = _f16(b[:, 0:2]), _f16(b[:, 2:4])
    sc, mn = _k_scales(b[:, 4:16])
    q = _nibbles_k(b[:, 16:144]).astype(np.float32)
    scale = (d * sc)[:, :, None]
    minv = (dmin * mn)[:, :, None]
    return (scale * q - minv).reshape(-1, QK_K)


def _deq_q5_k(b):
    d, dmin = _f16(b[:, 0:2]), _f16(b[:, 2:4])
    sc, mn = _k_scales(b[:, 4:16])
    qh = b[:, 16:48]                                   # bit s of byte l: high bit of sub-block s, element l
    hi = (qh[:, None, :] >> np.arange(8, dtype=np.uint8)[None, :, None]) & 1
    q = (_nibbles_k(b[:, 48:176]) | (hi << 4)).astype(np.float32)
    scale = (d * sc)[:, :, None]
    minv = (dmin * mn)[:, :, None]
    return (scale * q - minv).reshape(-1, QK_K)


def _deq_q6_k(b):
    # per 128-element half: ql 64 bytes (low nibbles -> elements 0..63, high nibbles -> 64..127),
    # qh 32 bytes (2-bit pairs at shifts 0, 2, 4, 6 -> element groups of 32), then 16 int8 scales
    # (one per 16 elements) and the f16 super-scale d.
    n = b.shape[0]
    ql = b[:, 0:128].reshape(n, 2, 64)
    qh = b[:, 128:192].reshape(n, 2, 1, 32)
    sc = b[:, 192:208].view(np.int8).astype(np.float32)
    d = _f16(b[:, 208:210])
    lo = np.concatenate([ql & 15, ql >> 4], axis=2)                       # [n, 2, 128]
    hi = (qh >> np.array([0, 2, 4, 6], dtype=np.uint8)[None, None, :, None]) & 3
    q = (lo | (hi.reshape(n, 2, 128) << 4)).astype(np.int8) - np.int8(32)
    scale = (d * sc)[:, :, None]                                          # [n, 16, 1]
    return (scale * q.reshape(n, 16, 16).astype(np.float32)).reshape(n, QK_K)


_DEQUANT_BLOCKS = {
    "Q8_0": _deq_q8_0, "Q4_0": _deq_q4_0, "Q4_1": _deq_q4_1,
    "Q4_K": _deq_q4_k, "Q5_K": _deq_q5_k, "Q6_K": _deq_q6_k,
}


def dequantize(raw: np.ndarray, ggml_type: str, shape=None) -> np.ndarray:
    """raw bytes of a `ggml_type` tensor -> float32, flat or reshaped to `shape` (numpy order)."""
    if ggml_type not in BLOCK_TYPES:
        raise ModelError(f"[kquants] no dequantizer for {ggml_type}; "
                         f"supported: {', '.join(BLOCK_TYPES)}")
    flat = np.ascontiguousarray(raw).view(np.uint8).reshape(-1)
    if ggml_type in ("F32", "F16", "BF16") and flat.size % BLOCK_TYPES[ggml_type][1]:
        raise ModelError(f"[kquants] {flat.size} bytes is not a whole number of {ggml_type} values")
    if ggml_type == "F32":
        out = flat.view("<f4").astype(np.float32)
    elif ggml_type == "F16":
        out = flat.view("<f2").astype(np.float32)
    elif ggml_type == "BF16":
        out = (flat.view("<u2").astype(np.uint32) << 16).view(np.float32)
    else:
        blocks = _blocks(flat, ggml_type)
        per_block = BLOCK_TYPES[ggml_type][0]
        fn = _DEQUANT_BLOCKS[ggml_type]
        out = np.empty((blocks.shape[0], per_block), np.float32)
        step = max(1, _CHUNK_ELEMENTS // per_block)
        for start in range(0, blocks.shape[0], step):      # chunks of many blocks, not per block
            out[start:start + step] = fn(blocks[start:start + step])
        out = out.reshape(-1)
    return out if shape is None else out.reshape(tuple(shape))


# ---- the shared 4-bit form ------------------------------------------------------------------

def _pack_pairs(codes32: np.ndarray) -> np.ndarray:
    """[..., 32] codes 0..15 -> [..., 16] bytes: element j low nibble, element j + 16 high."""
    return (codes32[..., :16] | (codes32[..., 16:] << 4)).astype(np.uint8)


def _rows_blocks(raw: np.ndarray, ggml_type: str, rows: int, cols: int) -> np.ndarray:
    blocks = _blocks(raw, ggml_type)
    need = rows * row_bytes(ggml_type, cols) // BLOCK_TYPES[ggml_type][1]
    if blocks.shape[0] != need:
        raise ModelError(f"[kquants] {ggml_type} [{rows}, {cols}] needs {need} blocks, "
                         f"got {blocks.shape[0]}")
    return blocks


def q4_0_to_q4_blocks(raw: np.ndarray, rows: int, cols: int):
    """Q4_0 -> (codes uint8 [rows, cols/32, 16], scales f32 [rows, cols/32], offsets f32 [...]).

    value = (q - 8) * d = q * d + (-8 d): exact in float32 (at most 15 significant bits).
    """
    b = _rows_blocks(raw, "Q4_0", rows, cols)
    d = _f16(b[:, 0:2])[:, 0]
    codes = np.ascontiguousarray(b[:, 2:18])
    g = cols // 32
    return (codes.reshape(rows, g, 16), d.reshape(rows, g), (np.float32(-8) * d).reshape(rows, g))


def q4_1_to_q4_blocks(raw: np.ndarray, rows: int, cols: int):
    """Q4_1 -> (codes, scales, offsets): value = q * d + m, the format's own formula."""
    b = _rows_blocks(raw, "Q4_1", rows, cols)
    d, m = _f16(b[:, 0:2])[:, 0], _f16(b[:, 2:4])[:, 0]
    codes = np.ascontiguousarray(b[:, 4:20])
    g = cols // 32
    return codes.reshape(rows, g, 16), d.reshape(rows, g), m.reshape(rows, g)


def q4_k_to_q4_blocks(raw: np.ndarray, rows: int, cols: int):
    """Q4_K -> (codes uint8 [rows, cols/32, 16], scales f32 [rows, cols/32], offsets f32 [...]).

    Each 256-element super-block becomes 8 blocks of 32: scale = d * sc, offset = -(dmin * m),
    so code * scale + offset equals ggml's `d * sc * q - dmin * m` bit for bit. Q4_K keeps a
    sub-block's 32 codes as the low (or high) nibbles of 32 bytes; they are re-paired here as
    (j, j + 16) in one byte.
    """
    b = _rows_blocks(raw, "Q4_K", rows, cols)
    d, dmin = _f16(b[:, 0:2]), _f16(b[:, 2:4])
    sc, mn = _k_scales(b[:, 4:16])
    codes = _pack_pairs(_nibbles_k(b[:, 16:144]))         # [n, 8, 16]
    g = cols // 32
    return (codes.reshape(rows, g, 16), (d * sc).reshape(rows, g),
            (-(dmin * mn)).reshape(rows, g))


Q4_BLOCK_CONVERTERS = {"Q4_0": q4_0_to_q4_blocks, "Q4_1": q4_1_to_q4_blocks, "Q4_K": q4_k_to_q4_blocks}


def q8_0_to_q8_blocks(raw: np.ndarray, rows: int, cols: int):
    """Q8_0 -> (codes int8 [rows, cols/32, 32], scales f32 [rows, cols/32]): value = code * scale."""
    b = _rows_blocks(raw, "Q8_0", rows, cols)
    g = cols // 32
    return (np.ascontiguousarray(b[:, 2:]).view(np.int8).reshape(rows, g, 32),
            _f16(b[:, 0:2]).reshape(rows, g))


def q4_blocks_dequantize(codes: np.ndarray, scales: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The shared 4-bit form -> float32 [rows, cols]: code * scale + offset."""
    rows, g = scales.shape
    q = np.concatenate([codes & 15, codes >> 4], axis=-1).astype(np.float32)   # [rows, g, 32]
    return (q * scales[:, :, None] + offsets[:, :, None]).reshape(rows, g * 32)
