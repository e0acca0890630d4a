"""ONNX tensors (initializers, Constant values, tensor attributes) -> numpy, validated first:
dtype, dims, stored size, and for external data the path (inside the model's folder), offset
and length against the file. bfloat16 comes back as uint16 bits with dtype "bfloat16"."""
from __future__ import annotations

import dataclasses
import math
import os

import numpy as np

from ember.errors import ModelError
from ember.onnx_lean import SELF
from ember.onnx_ops import ONNX_DTYPES

_STORAGE = {"bfloat16": np.dtype("<u2")}  # numpy has no bfloat16: carry the bits


@dataclasses.dataclass
class TensorValue:
    """A validated tensor: `array` holds the data (uint16 bits for bfloat16)."""
    array: np.ndarray
    dtype: str


def dtype_of(code, what, origin):
    name = ONNX_DTYPES.get(code)
    if name is None:
        raise ModelError(f"[onnx] {origin}: {what} has dtype {_type_name(code)}, which ember does "
                         f"not support (supported: {', '.join(sorted(set(ONNX_DTYPES.values())))})")
    return name


def _type_name(code):
    from onnx import TensorProto
    try:
        return TensorProto.DataType.Name(int(code))
    except ValueError:
        return f"unknown type {code}"


MAX_RANK = 64                # numpy's limit, and ember's (kMaxRank)
MAX_TENSOR_BYTES = 2**40     # ember's kMaxTensorBytes


def _dims_of(t, what, origin, itemsize):
    dims = [int(d) for d in t.dims]
    if len(dims) > MAX_RANK:
        raise ModelError(f"[onnx] {origin}: {what} has {len(dims)} dims, over the limit of {MAX_RANK}")
    if any(d < 0 for d in dims):
        raise ModelError(f"[onnx] {origin}: {what} has negative dims {dims}")
    # Zero dims do not excuse the others: [0, 2^62] is no tensor numpy or ember can hold.
    if math.prod(d for d in dims if d) * itemsize > MAX_TENSOR_BYTES:
        raise ModelError(f"[onnx] {origin}: {what} has impossibly large dims {dims}")
    return dims


class TensorReader:
    """Validates and converts TensorProtos (initializers, Constant values, tensor attributes)."""

    def __init__(self, origin, base_dir, self_path=None):
        """self_path: the model file, when it was parsed lean (onnx_lean.py): external data
        located at onnx_lean.SELF is read from it."""
        self.origin = origin
        self.base_dir = base_dir
        self._base_real = os.path.realpath(base_dir) if base_dir is not None else None
        self._self_path = self_path

    def check(self, t, what, data=True, raw=None):
        """Validates dtype, dims and (with `data`) the stored size without converting.
        -> (dtype name, dims, numel). `raw`: t.raw_data if the caller has it (each access of
        a protobuf bytes field copies it)."""
        dtype = dtype_of(t.data_type, what, self.origin)
        storage = _STORAGE.get(dtype, np.dtype(dtype))
        dims = _dims_of(t, what, self.origin, storage.itemsize)
        numel = math.prod(dims)
        if t.HasField("segment"):
            raise ModelError(f"[onnx] {self.origin}: {what} is segmented, which ember does not support")
        nbytes = numel * storage.itemsize
        if t.data_location == 1:  # EXTERNAL
            self._external(t, what, nbytes)
        elif not data:
            pass
        elif t.HasField("raw_data"):
            n = len(raw if raw is not None else t.raw_data)
            if n != nbytes:
                raise ModelError(f"[onnx] {self.origin}: {what} ({dtype} {dims}) has {n} "
                                 f"bytes of raw_data, expected {nbytes}")
        else:
            n = len(self._typed_field(t, dtype))
            if n != numel:
                raise ModelError(f"[onnx] {self.origin}: {what} ({dtype} {dims}) has {n} stored "
                                 f"elements, expected {numel}")
        return dtype, dims, numel

    def read(self, t, what):
        """-> TensorValue; validates first."""
        raw = t.raw_data if t.data_location != 1 and t.HasField("raw_data") else None
        dtype, dims, numel = self.check(t, what, raw=raw)
        storage = _STORAGE.get(dtype, np.dtype(dtype))
        if t.data_location == 1:
            path, offset, _ = self._external(t, what, numel * storage.itemsize)
            try:
                arr = np.fromfile(path, dtype=storage.newbyteorder("<"), count=numel, offset=offset)
            except (OSError, ValueError) as e:
                raise ModelError(f"[onnx] {self.origin}: {what}: cannot read external data "
                                 f"from {path}: {e}") from None
            if arr.size != numel:
                raise ModelError(f"[onnx] {self.origin}: {what}: external file {path} is too short")
        elif raw is not None:
            if dtype == "bool":
                arr = np.frombuffer(raw, dtype=np.uint8) != 0
            else:
                arr = np.frombuffer(raw, dtype=storage.newbyteorder("<"))
        else:
            vals = self._typed_field(t, dtype)
            if dtype in ("float16", "bfloat16"):  # int32_data holds the 16-bit patterns
                arr = np.array(vals, dtype=np.int64).astype(np.uint16)
                if dtype == "float16":
                    arr = arr.view(np.float16)
            elif dtype == "bool":
                arr = np.array(vals, dtype=np.int64) != 0
            elif dtype in ("int8", "uint8", "int16"):
                arr = np.array(vals, dtype=np.int64).astype(storage)
            else:
                arr = np.array(vals, dtype=storage)
        if arr.dtype.byteorder not in ("=", "|") and not arr.dtype.isnative:
            arr = arr.astype(arr.dtype.newbyteorder("="))
        return TensorValue(arr.reshape(dims), dtype)

    @staticmethod
    def _typed_field(t, dtype):
        if dtype == "float32":
            return t.float_data
        if dtype == "float64":
            return t.double_data
        if dtype == "int64":
            return t.int64_data
        return t.int32_data

    def _self_range(self, info, what, nbytes):
        """-> (model path, offset, nbytes) of a raw_data the lean parse left in the file."""
        try:
            offset, length = int(info["offset"]), int(info["length"])
        except (KeyError, ValueError):
            raise ModelError(f"[onnx] {self.origin}: {what}: bad data reference") from None
        size = os.path.getsize(self._self_path)
        if length != nbytes:
            raise ModelError(f"[onnx] {self.origin}: {what} has {length} bytes of raw_data, "
                             f"expected {nbytes} for its dtype and dims")
        if offset < 0 or offset + length > size:
            raise ModelError(f"[onnx] {self.origin}: {what}: the file changed while loading "
                             f"({size} bytes now)")
        return self._self_path, offset, nbytes

    def _external(self, t, what, nbytes):
        """-> (real path, offset, nbytes) after checking location, range and file size."""
        info = {e.key: e.value for e in t.external_data}
        loc = info.get("location", "")
        if loc == SELF and self._self_path is not None:
            return self._self_range(info, what, nbytes)
        if not loc:
            raise ModelError(f"[onnx] {self.origin}: {what} has external data without a location")
        if self._base_real is None:
            raise ModelError(f"[onnx] {self.origin}: {what} references external data '{loc}'; "
                             f"pass base_dir (the folder holding the data files)")
        if "\0" in loc:
            raise ModelError(f"[onnx] {self.origin}: {what}: external data path {loc!r} contains a NUL")
        if os.path.isabs(loc) or os.path.splitdrive(loc)[0]:
            raise ModelError(f"[onnx] {self.origin}: {what}: external data path '{loc}' is absolute; "
                             f"it must be relative to the model's folder")
        path = os.path.realpath(os.path.join(self._base_real, loc))
        if os.path.commonpath([path, self._base_real]) != self._base_real:
            raise ModelError(f"[onnx] {self.origin}: {what}: external data path '{loc}' resolves to "
                             f"{path}, outside the model's folder {self._base_real}")
        if not os.path.isfile(path):
            raise ModelError(f"[onnx] {self.origin}: {what}: external data file {path} not found")
        try:
            offset = int(info.get("offset", "0"))
            length = int(info["length"]) if "length" in info else None
        except ValueError:
            raise ModelError(f"[onnx] {self.origin}: {what}: bad external data offset/length "
                             f"{info.get('offset')!r}/{info.get('length')!r}") from None
        size = os.path.getsize(path)
        if offset < 0 or offset > size:
            raise ModelError(f"[onnx] {self.origin}: {what}: external data offset {offset} is "
                             f"outside {path} ({size} bytes)")
        if length is None:
            length = size - offset
        if length != nbytes:
            raise ModelError(f"[onnx] {self.origin}: {what}: external data length {length} bytes, "
                             f"expected {nbytes} for its dtype and dims")
        if offset + length > size:
            raise ModelError(f"[onnx] {self.origin}: {what}: external data [{offset}, "
                             f"{offset + length}) runs past the end of {path} ({size} bytes)")
        return path, offset, nbytes
