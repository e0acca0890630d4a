"""Lean loading of an .onnx file: its large initializers are not parsed into the protobuf.

Parsing a whole model holds the protobuf's copy of every weight while ember's own copy is being
built, so the load peaks at twice the weights (MiniLM-L6: ~180 MB of the process's 228 MB,
where onnxruntime peaks at 190). `lean_model_bytes` walks the protobuf wire format of the
memory-mapped file (reading field headers only: the weights' pages are never touched) and
returns the model's bytes with each large top-level initializer's raw_data replaced by a
reference to where it lies in the file, in ONNX's own external-data form with the location
`SELF` (a NUL-led name no user path can have: the import refuses NUL in locations). The
TensorReader then reads each weight straight from the file into its array.

Anything unexpected in the wire format (a truncated field, a group, a length past the end)
gives None: the caller parses the file whole and reports what is wrong as before.
"""
from __future__ import annotations

import mmap
import os

SELF = "\0ember:self"       # external-data location meaning "this model file"
_MIN_RAW = 4096            # smaller raw_data stays inline

_MODEL_GRAPH = 7           # ModelProto.graph
_GRAPH_INITIALIZER = 5     # GraphProto.initializer
_TENSOR_RAW_DATA = 9       # TensorProto.raw_data
_TENSOR_EXTERNAL_DATA = 13  # TensorProto.external_data (StringStringEntryProto: key 1, value 2)
_TENSOR_DATA_LOCATION = 14  # TensorProto.data_location (1: EXTERNAL)


class _Malformed(Exception):
    pass


def _varint(buf, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _Malformed
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def _fields(buf, start: int, end: int):
    """(field number, wire type, field start, value start, value end) for each field."""
    pos = start
    while pos < end:
        field_start = pos
        key, pos = _varint(buf, pos, end)
        num, wire = key >> 3, key & 7
        if wire == 0:
            _, value_end = _varint(buf, pos, end)
            value_start = pos
        elif wire == 1:
            value_start, value_end = pos, pos + 8
        elif wire == 2:
            n, value_start = _varint(buf, pos, end)
            value_end = value_start + n
        elif wire == 5:
            value_start, value_end = pos, pos + 4
        else:  # groups: not in ONNX
            raise _Malformed
        if value_end > end:
            raise _Malformed
        yield num, wire, field_start, value_start, value_end
        pos = value_end


def _enc_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _len_field(num: int, payload: bytes) -> bytes:
    return _enc_varint(num << 3 | 2) + _enc_varint(len(payload)) + payload


def _tensor(buf, start: int, end: int) -> bytes:
    """A TensorProto's bytes, its raw_data (when large) replaced by an external-data reference
    into this file."""
    kept, raw, external = bytearray(), None, False
    for num, wire, fs, vs, ve in _fields(buf, start, end):
        if num == _TENSOR_RAW_DATA and wire == 2:
            raw = (vs, ve - vs)  # a repeated singular field: the last one counts
            continue
        if num in (_TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION):
            external = True
        kept += buf[fs:ve]
    if raw is None or raw[1] < _MIN_RAW or external:
        return bytes(buf[start:end])
    for key, value in (("location", SELF), ("offset", str(raw[0])), ("length", str(raw[1]))):
        entry = _len_field(1, key.encode()) + _len_field(2, value.encode())
        kept += _len_field(_TENSOR_EXTERNAL_DATA, entry)
    kept += _enc_varint(_TENSOR_DATA_LOCATION << 3) + _enc_varint(1)
    return bytes(kept)


def _graph(buf, start: int, end: int) -> bytes:
    out = bytearray()
    for num, wire, fs, vs, ve in _fields(buf, start, end):
        if num == _GRAPH_INITIALIZER and wire == 2:
            out += _len_field(num, _tensor(buf, vs, ve))
        else:
            out += buf[fs:ve]
    return bytes(out)


def lean_model_bytes(path: str) -> bytes | None:
    """The model file's bytes with its large top-level initializers referenced, not copied;
    None when the file is empty or its wire format is not what ONNX writes."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return None
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            try:
                out = bytearray()
                for num, wire, fs, vs, ve in _fields(buf, 0, len(buf)):
                    if num == _MODEL_GRAPH and wire == 2:
                        out += _len_field(num, _graph(buf, vs, ve))
                    else:
                        out += buf[fs:ve]
                return bytes(out)
            except _Malformed:
                return None
