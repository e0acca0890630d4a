"""GGUF model files: metadata and memory-mapped tensors, every count, size and offset checked.

A GGUF file is a header (magic, version, tensor and key counts), key/value metadata, tensor
infos (name, dims, ggml type, offset) and, after padding to `general.alignment`, the tensor
data. The header is parsed here rather than with `gguf.GGUFReader`: that reader trusts the
counts and lengths it reads (a truncated string silently comes back short), takes seconds per
file on a 50k-token vocabulary, and the `gguf` package is not installed everywhere ember runs.
It stays the reference in the tests. Every problem is a ModelError naming the file and the key
or tensor; nothing is allocated from a size the file has not been shown to hold.

Usage: `f = load_gguf(path)`; the builder reads `f.metadata` / `f.tensors[name].raw` (views of
the memory map), copies or repacks the weights, then calls `f.close()`.
"""
from __future__ import annotations

import mmap
import os
import struct

import numpy as np

from ember.errors import EmberError, ModelError
from ember.llm.kquants import (BLOCK_TYPES, Q4_BLOCK_CONVERTERS, dequantize as _dequantize,
                               q8_0_to_q8_blocks)

__all__ = ["load_gguf", "GGUFFile", "GGUFTensor", "GGML_TYPE_NAMES", "rope_unpermute_rows"]

GGUF_MAGIC = b"GGUF"
GGUF_VERSIONS = (2, 3)          # v1 had 32-bit counts and is long gone
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4                    # GGML_MAX_DIMS

# ggml type id -> name, for every type ggml defines (ember supports those in BLOCK_TYPES).
GGML_TYPE_NAMES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1",
    10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K", 16: "IQ2_XXS",
    17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S",
    23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64", 29: "IQ1_M",
    30: "BF16", 34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4",
}

# metadata value types: id -> (name, struct format or None for string/array)
_VT_STRING, _VT_ARRAY, _VT_BOOL = 8, 9, 7
_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<B",
           10: "<Q", 11: "<q", 12: "<d"}
_SCALAR_NP = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "<u1",
              10: "<u8", 11: "<i8", 12: "<f8"}
_MIN_KV_BYTES = 8 + 4 + 1              # empty key, type, smallest value
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 8 + 4 + 8   # empty name, n_dims, one dim, type, offset


class GGUFTensor:
    """One tensor: `shape` in numpy order (reversed ggml ne: a 2-D weight is (out, in)),
    `ggml_type` a name like "Q4_1", `raw` a uint8 view of its bytes in the file's memory map."""

    __slots__ = ("name", "ggml_type", "shape", "offset", "n_bytes", "_file")

    def __init__(self, name, ggml_type, shape, offset, n_bytes, file):
        self.name = name
        self.ggml_type = ggml_type
        self.shape = shape
        self.offset = offset          # absolute byte offset in the file
        self.n_bytes = n_bytes
        self._file = file

    @property
    def n_elements(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def raw(self) -> np.ndarray:
        """The tensor's bytes, uint8 [n_bytes], backed by the memory map (read-only)."""
        return self._file._view(self)

    def rows_raw(self) -> np.ndarray:
        """uint8 [rows, bytes per row] where rows = product of all but the last dim: a row
        holds whole blocks, so rows can be permuted or split without touching the encoding."""
        cols = self.shape[-1]
        rows = self.n_elements // cols
        return self.raw.reshape(rows, self.n_bytes // rows)

    def dequantize(self) -> np.ndarray:
        return self._file.dequantize(self.name)

    def __repr__(self):
        return f"GGUFTensor({self.name!r}, {self.ggml_type}, shape={self.shape}, n_bytes={self.n_bytes})"


class GGUFFile:
    """A parsed GGUF file. Close it (or use `with`) once the weights are copied out: `close()`
    drops the memory map; `raw` views taken earlier keep their pages mapped until released."""

    def __init__(self, path, version, metadata, tensors, alignment, data_offset, file_size, mm):
        self.path = path
        self.version = version
        self.metadata = metadata
        self.tensors = tensors
        self.alignment = alignment
        self.data_offset = data_offset
        self.file_size = file_size
        self._mm = mm
        self._buf = np.frombuffer(mm, dtype=np.uint8) if mm is not None else None

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    @property
    def arch(self) -> str:
        arch = self.metadata.get("general.architecture")
        if not isinstance(arch, str):
            raise ModelError(f"[gguf] {self.name}: metadata key 'general.architecture' is "
                             f"{'missing' if arch is None else 'not a string'}")
        return arch

    def get(self, key: str, default=None):
        return self.metadata.get(key, default)

    @property
    def tensor_bytes_total(self) -> int:
        """Bytes of all tensor data as stored (before any repacking)."""
        return sum(t.n_bytes for t in self.tensors.values())

    def tensor_bytes(self, names=None) -> int:
        """Stored bytes of the named tensors (all when None)."""
        if names is None:
            return self.tensor_bytes_total
        return sum(self._tensor(n).n_bytes for n in names)

    def tensor(self, name: str) -> GGUFTensor:
        """The named tensor; ModelError naming the file when it is absent."""
        return self._tensor(name)

    def dequantize(self, name: str) -> np.ndarray:
        """float32 copy of a tensor, shaped `tensor.shape`."""
        t = self._tensor(name)
        return _dequantize(t.raw, t.ggml_type, t.shape)

    def q4_blocks(self, name: str):
        """A Q4_0 / Q4_1 / Q4_K weight [rows, cols] as (codes uint8 [rows, cols/32, 16],
        scales f32 [rows, cols/32], offsets f32 [rows, cols/32]); see kquants."""
        t = self._tensor(name)
        conv = Q4_BLOCK_CONVERTERS.get(t.ggml_type)
        if conv is None or len(t.shape) != 2:
            raise ModelError(f"[gguf] {self.name}: tensor '{name}' is {t.ggml_type} {list(t.shape)}; "
                             f"4-bit blocks come from 2-D {', '.join(Q4_BLOCK_CONVERTERS)} weights")
        return conv(t.raw, *t.shape)

    def q8_blocks(self, name: str):
        """A Q8_0 weight [rows, cols] as (codes int8 [rows, cols/32, 32], scales f32 [rows, cols/32])."""
        t = self._tensor(name)
        if t.ggml_type != "Q8_0" or len(t.shape) != 2:
            raise ModelError(f"[gguf] {self.name}: tensor '{name}' is {t.ggml_type} {list(t.shape)}, "
                             "not a 2-D Q8_0 weight")
        return q8_0_to_q8_blocks(t.raw, *t.shape)

    def release(self, name: str) -> None:
        """Drops the named tensor's pages from this process's resident memory (they are read
        back from the file if touched again): the builder calls it once a tensor is repacked,
        so loading never holds the file and the repacked weights in memory at once."""
        t = self._tensor(name)
        if self._mm is None or not hasattr(mmap, "MADV_DONTNEED"):
            return
        page = mmap.PAGESIZE
        start = t.offset // page * page
        end = -(-(t.offset + t.n_bytes) // page) * page
        try:
            self._mm.madvise(mmap.MADV_DONTNEED, start, min(end, self.file_size) - start)
        except (OSError, ValueError):
            pass  # advice only

    def close(self):
        """Drops the memory map. Later `raw` accesses raise EmberError."""
        self._buf = None
        mm, self._mm = self._mm, None
        if mm is not None:
            _close_quietly(mm)    # raw views still alive keep the map until they are released

    @property
    def closed(self) -> bool:
        return self._buf is None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        arch = self.metadata.get("general.architecture")
        return (f"GGUFFile({self.path!r}, arch={arch!r}, {len(self.tensors)} tensors, "
                f"{len(self.metadata)} keys)")

    def _tensor(self, name) -> GGUFTensor:
        t = self.tensors.get(name)
        if t is None:
            raise ModelError(f"[gguf] {self.name}: no tensor '{name}'")
        return t

    def _view(self, t: GGUFTensor) -> np.ndarray:
        if self._buf is None:
            raise EmberError(f"[gguf] {self.name}: file is closed; tensor '{t.name}' is no longer mapped")
        return self._buf[t.offset:t.offset + t.n_bytes]


def rope_unpermute_rows(n_rows: int, n_head: int) -> np.ndarray:
    """Row order that undoes llama.cpp's Q/K permutation for `llama`-arch GGUF files.

    convert_hf_to_gguf stores attn_q/attn_k rows so that ggml's interleaved ("normal") rope,
    rotating pairs (2i, 2i+1), matches HF's rotate_half rope, which pairs (i, i + d/2). With
    `hf_w = gguf_w[rope_unpermute_rows(rows, n_head)]` (n_head_kv for attn_k) the weight is back
    in HF order, for a NeoX/rotate_half rope kernel. Rows move whole, so this also works on
    `rows_raw()` of a quantized tensor.
    """
    if n_head <= 0 or n_rows % (2 * n_head):
        raise ModelError(f"[gguf] cannot unpermute {n_rows} rows into {n_head} rope heads")
    half = n_rows // n_head // 2
    return np.arange(n_rows).reshape(n_head, half, 2).swapaxes(1, 2).reshape(-1)


# ---- parsing ---------------------------------------------------------------------------------

class _Reader:
    """Bounds-checked little-endian reads from the memory map."""

    def __init__(self, mm, size, name):
        self.mm, self.size, self.name, self.pos = mm, size, name, 0

    def fail(self, what):
        raise ModelError(f"[gguf] {self.name}: {what}")

    def need(self, n, what):
        end = self.pos + n
        if end > self.size:
            self.fail(f"{what} ends at byte {end} past the file end ({self.size})")
        return end

    def scalar(self, fmt, n, what):
        end = self.need(n, what)
        (v,) = struct.unpack_from(fmt, self.mm, self.pos)
        self.pos = end
        return v

    def u32(self, what):
        return self.scalar("<I", 4, what)

    def u64(self, what):
        return self.scalar("<Q", 8, what)

    def string(self, what):
        n = self.u64(f"length of {what}")
        end = self.need(n, f"{what} ({n} bytes)")
        data = self.mm[self.pos:end]
        self.pos = end
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as e:
            self.fail(f"{what} is not valid UTF-8 ({e.reason} at byte {self.pos - n + e.start})")

    def value(self, vtype, key):
        if vtype == _VT_STRING:
            return self.string(f"value of '{key}'")
        if vtype == _VT_ARRAY:
            return self.array(key)
        fmt = _SCALAR.get(vtype)
        if fmt is None:
            self.fail(f"metadata key '{key}' has unknown value type {vtype}")
        v = self.scalar(fmt, struct.calcsize(fmt), f"value of '{key}'")
        return bool(v) if vtype == _VT_BOOL else v

    def array(self, key):
        etype = self.u32(f"array type of '{key}'")
        count = self.u64(f"array length of '{key}'")
        remaining = self.size - self.pos
        if etype == _VT_STRING:
            if count > remaining // 8:
                self.fail(f"metadata key '{key}': array of {count} strings cannot fit in the "
                          f"{remaining} bytes left in the file")
            return [self.string(f"'{key}'[{i}]") for i in range(count)]
        if etype == _VT_ARRAY:
            self.fail(f"metadata key '{key}' is an array of arrays, which GGUF readers do not support")
        dt = _SCALAR_NP.get(etype)
        if dt is None:
            self.fail(f"metadata key '{key}' is an array of unknown value type {etype}")
        width = np.dtype(dt).itemsize
        if count > remaining // width:
            self.fail(f"metadata key '{key}': array of {count} x {width}-byte values ends at byte "
                      f"{self.pos + count * width} past the file end ({self.size})")
        arr = np.frombuffer(self.mm, dtype=dt, count=count, offset=self.pos)
        self.pos += count * width
        if etype == _VT_BOOL:
            arr = arr != 0
        return arr.tolist()


def load_gguf(path) -> GGUFFile:
    """Parses and validates a GGUF file; tensors stay in the file, memory-mapped."""
    path = os.fspath(path)
    name = os.path.basename(path) or path
    try:
        f = open(path, "rb")
    except OSError as e:
        raise ModelError(f"[gguf] {name}: cannot open: {e.strerror or e}") from e
    with f:
        try:
            size = os.fstat(f.fileno()).st_size
            if size < 4 + 4 + 8 + 8:
                raise ModelError(f"[gguf] {name}: {size} bytes is too short for a GGUF header (24)")
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as e:
            raise ModelError(f"[gguf] {name}: cannot map: {e.strerror or e}") from e
    try:
        return _parse(path, name, mm, size)
    except ModelError:
        _close_quietly(mm)
        raise
    except (struct.error, ValueError, TypeError, IndexError, OverflowError, MemoryError) as e:
        # the checks above should leave nothing for these; never let one escape as a crash
        _close_quietly(mm)
        raise ModelError(f"[gguf] {name}: corrupt file ({type(e).__name__}: {e})") from None


def _close_quietly(mm):
    try:
        mm.close()
    except BufferError:
        pass          # a view is still referenced (by a traceback): the map goes with it


def _parse(path, name, mm, size) -> GGUFFile:
    r = _Reader(mm, size, name)
    magic = mm[0:4]
    if magic != GGUF_MAGIC:
        r.fail(f"not a GGUF file (magic {magic!r}, expected {GGUF_MAGIC!r})")
    r.pos = 4
    version = r.u32("version")
    if version not in GGUF_VERSIONS:
        if (version & 0xFFFF) == 0 and struct.unpack("<I", struct.pack(">I", version))[0] in GGUF_VERSIONS:
            r.fail("big-endian GGUF files are not supported")
        r.fail(f"GGUF version {version} is not supported (supported: {', '.join(map(str, GGUF_VERSIONS))})")
    n_tensors = r.u64("tensor count")
    n_kv = r.u64("metadata key count")
    remaining = size - r.pos
    if n_kv > remaining // _MIN_KV_BYTES:
        r.fail(f"metadata key count {n_kv} cannot fit in a file of {size} bytes")
    if n_tensors > remaining // _MIN_TENSOR_INFO_BYTES:
        r.fail(f"tensor count {n_tensors} cannot fit in a file of {size} bytes")

    metadata = {}
    for i in range(n_kv):
        key = r.string(f"metadata key #{i}")
        vtype = r.u32(f"value type of '{key}'")
        value = r.value(vtype, key)
        if key in metadata:
            r.fail(f"metadata key '{key}' appears twice")
        metadata[key] = value
    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if (not isinstance(alignment, int) or isinstance(alignment, bool) or alignment <= 0
            or alignment & (alignment - 1)):
        r.fail(f"metadata key 'general.alignment' must be a power of two, got {alignment!r}")

    infos = []
    seen = set()
    for i in range(n_tensors):
        tname = r.string(f"name of tensor #{i}")
        if tname in seen:
            r.fail(f"tensor '{tname}' appears twice")
        seen.add(tname)
        n_dims = r.u32(f"rank of tensor '{tname}'")
        if not 1 <= n_dims <= MAX_DIMS:
            r.fail(f"tensor '{tname}' has {n_dims} dims; ggml tensors have 1 to {MAX_DIMS}")
        ne = [r.u64(f"dim {d} of tensor '{tname}'") for d in range(n_dims)]
        type_id = r.u32(f"type of tensor '{tname}'")
        offset = r.u64(f"offset of tensor '{tname}'")
        infos.append((tname, ne, type_id, offset))

    data_offset = -(-r.pos // alignment) * alignment
    if infos and data_offset > size:
        r.fail(f"tensor data starts at byte {data_offset} past the file end ({size})")

    tensors = {}
    file = GGUFFile(path, version, metadata, tensors, alignment, data_offset, size, None)
    for tname, ne, type_id, offset in infos:
        tensors[tname] = _tensor(r, file, tname, ne, type_id, offset, data_offset, alignment)
    _check_overlaps(r, tensors)
    file._mm = mm
    file._buf = np.frombuffer(mm, dtype=np.uint8)
    return file


def _tensor(r, file, tname, ne, type_id, offset, data_offset, alignment) -> GGUFTensor:
    type_name = GGML_TYPE_NAMES.get(type_id)
    if type_name is None:
        r.fail(f"tensor '{tname}' has unknown ggml type {type_id}")
    if type_name not in BLOCK_TYPES:
        r.fail(f"tensor '{tname}' is {type_name}, which ember does not read "
               f"(supported: {', '.join(BLOCK_TYPES)})")
    block, type_size = BLOCK_TYPES[type_name]
    for d, n in enumerate(ne):
        if not 0 < n < 2 ** 63:
            r.fail(f"tensor '{tname}' has dim {d} = {n}; dims must be positive int64")
    if ne[0] % block:
        r.fail(f"tensor '{tname}' rows of {ne[0]} elements are not a multiple of the "
               f"{type_name} block size {block}")
    n_elements = 1
    for n in ne:
        n_elements *= n                     # Python ints: no overflow; bounded by the file below
    n_bytes = n_elements // block * type_size
    if offset % alignment:
        r.fail(f"tensor '{tname}' offset {offset} is not a multiple of the alignment {alignment}")
    start = data_offset + offset
    end = start + n_bytes
    if end > r.size:
        r.fail(f"tensor '{tname}' data ends at byte {end} past the file end ({r.size})")
    return GGUFTensor(tname, type_name, tuple(int(n) for n in reversed(ne)), start, n_bytes, file)


def _check_overlaps(r, tensors):
    spans = sorted((t.offset, t.offset + t.n_bytes, t.name) for t in tensors.values())
    for (s0, e0, n0), (s1, e1, n1) in zip(spans, spans[1:]):
        if s1 < e0:
            r.fail(f"tensors '{n0}' and '{n1}' overlap (bytes {s1}..{min(e0, e1)})")
