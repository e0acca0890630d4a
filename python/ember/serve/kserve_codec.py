"""KServe v2 inference protocol (the one Triton and KServe speak): request bodies -> numpy feeds,
numpy results -> response bodies, JSON and the binary-tensor extension. No HTTP here.

Binary extension: body = JSON header (Inference-Header-Content-Length bytes) followed by the raw
little-endian bytes of each tensor that has "binary_data_size", in the order the JSON lists them.

Every error is an InputError whose message starts "[kserve]" and names the field. Decisions:
- JSON data is strict. BOOL takes only true/false; integer types take only JSON integers within
  range (1.0, true and "1" are refused); float types take integers and floats but not true/false,
  and a value the dtype cannot hold (1e6 for FP16) is refused rather than turned into inf.
  NaN/Infinity are not JSON and are refused: send such tensors as binary data.
- Nested and flat "data" are both accepted; only the element count is checked against "shape".
- Binary BOOL bytes must be 0 or 1. Binary feeds are read-only views into the body (no copy).
- An output holding NaN/Inf cannot be written as JSON: encode_infer_response refuses it and
  tells the client to request that output with binary_data.
- Metadata writes -1 for symbolic or unknown dims, [-1] for an unknown rank and "UNKNOWN" for
  an undeclared dtype.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np

from ember.errors import InputError

try:
    from ml_dtypes import bfloat16 as _BF16
except ImportError:  # BF16 tensors are then refused with a message saying why
    _BF16 = None

__all__ = ["DATATYPES", "InferRequest", "datatype_of", "encode_infer_response", "model_metadata",
           "parse_infer_request"]

DATATYPES = {name: np.dtype(t) for name, t in [
    ("BOOL", np.bool_), ("UINT8", np.uint8), ("UINT16", np.uint16), ("UINT32", np.uint32),
    ("UINT64", np.uint64), ("INT8", np.int8), ("INT16", np.int16), ("INT32", np.int32),
    ("INT64", np.int64), ("FP16", np.float16), ("FP32", np.float32), ("FP64", np.float64)]}
if _BF16 is not None:
    DATATYPES["BF16"] = np.dtype(_BF16)
_BY_DTYPE = {dt: name for name, dt in DATATYPES.items()}
_BY_NAME = {dt.name: name for name, dt in DATATYPES.items()} | {"bfloat16": "BF16"}


@dataclass
class InferRequest:
    id: str | None
    feeds: dict = field(default_factory=dict)          # input name -> np.ndarray
    outputs: list | None = None                         # requested output names; None = all
    binary_outputs: set = field(default_factory=set)   # outputs to send as binary data
    parameters: dict = field(default_factory=dict)     # the request-level "parameters"


def datatype_of(dtype) -> str:
    """numpy dtype -> KServe datatype name ("FP32"); InputError when it has none."""
    dt = np.dtype(dtype)
    name = _BY_DTYPE.get(dt.newbyteorder("=") if dt.byteorder in ("<", ">") else dt)
    if name is None:
        raise InputError(f"[kserve] dtype {dt} has no KServe v2 datatype")
    return name


def _fail(msg: str):
    raise InputError(f"[kserve] {msg}")


def _dict(value, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        _fail(f"{where}: must be a JSON object, not {type(value).__name__}")
    return value


def _bool(value, where: str) -> bool:
    if type(value) is not bool:
        _fail(f"{where}: must be true or false, not {value!r}")
    return value


def _name(spec, where: str) -> str:
    if not isinstance(spec, dict):
        _fail(f"{where}: must be a JSON object, not {type(spec).__name__}")
    name = spec.get("name")
    if not isinstance(name, str):
        _fail(f"{where}.name: must be a string")
    return name


def _no_constant(token: str):
    _fail(f"request JSON: {token} is not JSON; send tensors holding NaN/Inf as binary data")


def _header(body: memoryview, header_length) -> tuple[dict, int]:
    size = len(body)
    if header_length is not None:
        if isinstance(header_length, (str, bytes)):
            text = header_length.strip()
            header_length = int(text) if text.isascii() and text.isdigit() else header_length
        if type(header_length) is not int or header_length < 0:
            _fail(f"Inference-Header-Content-Length: {header_length!r} is not a non-negative integer")
        if header_length > size:
            _fail(f"Inference-Header-Content-Length: {header_length} is larger than the body "
                  f"({size} bytes)")
        size = header_length
    try:
        head = json.loads(bytes(body[:size]), parse_constant=_no_constant)
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        _fail(f"request body is not valid JSON: {e}")
    if not isinstance(head, dict):
        _fail(f"request body: must be a JSON object, not {type(head).__name__}")
    return head, size


def _datatype(value, where: str, info) -> np.dtype:
    if value == "BYTES":
        _fail(f"{where}.datatype: BYTES (string tensors) is not supported: ember graphs take "
              f"numeric and bool tensors only")
    if value == "BF16" and _BF16 is None:
        _fail(f"{where}.datatype: BF16 needs the ml_dtypes package (pip install ml_dtypes)")
    if not isinstance(value, str) or value not in DATATYPES:
        _fail(f"{where}.datatype: {value!r} is not one of {', '.join(DATATYPES)}")
    want = _BY_NAME.get(info.dtype) if info.dtype else None
    if want is not None and value != want:
        _fail(f"{where} ({info.name!r}): datatype {value}, the model expects {want}")
    return DATATYPES[value]


def _shape(value, where: str, info, max_elements: int) -> tuple:
    if not isinstance(value, list) or any(type(d) is not int for d in value):
        _fail(f"{where}.shape: must be a list of integers, not {value!r}")
    for k, d in enumerate(value):
        if d < 0:
            _fail(f"{where}.shape[{k}]: {d} is negative")
    declared = info.shape
    if declared is not None:
        if len(value) != len(declared):
            _fail(f"{where}.shape: {value} has rank {len(value)}, the model's input {info.name!r} "
                  f"has rank {len(declared)} {_dims(declared)}")
        for k, (d, want) in enumerate(zip(value, declared)):
            if isinstance(want, int) and want >= 0 and d != want:
                _fail(f"{where}.shape[{k}]: {d}, the model's input {info.name!r} fixes it at {want}")
    count = math.prod(value)
    if count > max_elements:
        _fail(f"{where}.shape: {value} holds {count} elements, over the limit of {max_elements}")
    return tuple(value)


def _dims(shape) -> list:
    return [d if isinstance(d, int) and d >= 0 else -1 for d in shape]


def _binary_tensor(body: memoryview, offset: int, size, dtype: np.dtype, shape: tuple,
                   where: str, has_header: bool):
    if type(size) is not int or size < 0:
        _fail(f"{where}.parameters.binary_data_size: {size!r} is not a non-negative integer")
    if not has_header:
        _fail(f"{where}.parameters.binary_data_size: binary data needs the "
              f"Inference-Header-Content-Length header")
    want = math.prod(shape) * dtype.itemsize
    if size != want:
        _fail(f"{where}.parameters.binary_data_size: {size} bytes, shape {list(shape)} of "
              f"{datatype_of(dtype)} needs {want}")
    if offset + size > len(body):
        _fail(f"{where}: binary data runs past the end of the body ({size} bytes needed, "
              f"{len(body) - offset} left)")
    arr = np.frombuffer(body[offset:offset + size], dtype=dtype.newbyteorder("<")).reshape(shape)
    if dtype.kind == "b" and arr.size and arr.view(np.uint8).max() > 1:
        _fail(f"{where}: BOOL binary data holds bytes other than 0 and 1")
    return arr, offset + size


def _flatten(data: list) -> list:
    flat, stack = [], [iter(data)]
    while stack:  # iterative: deep nesting must not hit the recursion limit
        for v in stack[-1]:
            if isinstance(v, list):
                stack.append(iter(v))
                break
            flat.append(v)
        else:
            stack.pop()
    return flat


def _first(flat: list, bad) -> int | None:
    return next((i for i, v in enumerate(flat) if bad(v)), None)


def _json_tensor(data, dtype: np.dtype, shape: tuple, where: str) -> np.ndarray:
    if not isinstance(data, list):
        _fail(f"{where}.data: must be a list (flat row-major or nested), not {type(data).__name__}")
    flat, datatype = _flatten(data), datatype_of(dtype)
    if len(flat) != math.prod(shape):
        _fail(f"{where}.data: {len(flat)} values, shape {list(shape)} needs {math.prod(shape)}")
    if dtype.kind == "b":
        i = _first(flat, lambda v: type(v) is not bool)
        if i is not None:
            _fail(f"{where}.data: element {i} ({flat[i]!r}) is not true/false (BOOL)")
        return np.array(flat, dtype=dtype).reshape(shape)
    if dtype.kind in "iu":
        i = _first(flat, lambda v: type(v) is not int)
        if i is not None:
            _fail(f"{where}.data: element {i} ({flat[i]!r}) is not an integer ({datatype})")
        lo, hi = int(np.iinfo(dtype).min), int(np.iinfo(dtype).max)
        if flat and (min(flat) < lo or max(flat) > hi):
            i = _first(flat, lambda v: v < lo or v > hi)
            _fail(f"{where}.data: element {i} ({flat[i]}) is out of range for {datatype} [{lo}, {hi}]")
        return np.array(flat, dtype=dtype).reshape(shape)
    i = _first(flat, lambda v: type(v) not in (int, float))
    if i is not None:
        _fail(f"{where}.data: element {i} ({flat[i]!r}) is not a number ({datatype})")
    try:
        wide = np.array(flat, dtype=np.float64)
    except OverflowError:
        _fail(f"{where}.data: an integer is too large for {datatype}")
    with np.errstate(over="ignore"):
        arr = wide.astype(dtype)
    finite = np.isfinite(arr.astype(np.float64))
    if not finite.all():
        i = int(np.argmin(finite))
        _fail(f"{where}.data: element {i} ({flat[i]!r}) does not fit {datatype}")
    return arr.reshape(shape)


def parse_infer_request(body: bytes, header_length, inputs: list, outputs: list,
                        max_elements: int = 1 << 28) -> InferRequest:
    """A POST /v2/models/{name}/infer body -> InferRequest; InputError names the bad field.

    header_length: the Inference-Header-Content-Length header (int or its text), None when
    absent (the whole body is JSON). inputs/outputs: the model's TensorInfo lists.
    """
    try:
        view = memoryview(body).cast("B")
    except TypeError:
        _fail(f"request body: must be bytes, not {type(body).__name__}")
    head, offset = _header(view, header_length)
    req_id = head.get("id")
    if req_id is not None and not isinstance(req_id, str):
        _fail(f"id: must be a string, not {type(req_id).__name__}")
    params = _dict(head.get("parameters"), "parameters")
    binary_all = _bool(params.get("binary_data_output", False), "parameters.binary_data_output")

    raw_inputs = head.get("inputs")
    if not isinstance(raw_inputs, list):
        _fail("inputs: must be a list of tensors")
    declared = {t.name: t for t in inputs}
    feeds = {}
    for i, spec in enumerate(raw_inputs):
        where = f"inputs[{i}]"
        name = _name(spec, where)
        info = declared.get(name)
        if info is None:
            _fail(f"{where}: unknown input {name!r}; the model takes {', '.join(declared) or 'none'}")
        if name in feeds:
            _fail(f"{where}: input {name!r} appears twice")
        dtype = _datatype(spec.get("datatype"), where, info)
        shape = _shape(spec.get("shape"), where, info, max_elements)
        size = _dict(spec.get("parameters"), f"{where}.parameters").get("binary_data_size")
        if size is not None and "data" in spec:
            _fail(f"{where}: has both data and parameters.binary_data_size")
        if size is not None:
            feeds[name], offset = _binary_tensor(view, offset, size, dtype, shape, where,
                                                 header_length is not None)
        elif "data" in spec:
            feeds[name] = _json_tensor(spec["data"], dtype, shape, where)
        else:
            _fail(f"{where} ({name!r}): no data and no parameters.binary_data_size")
    if offset != len(view):
        _fail(f"body: {len(view) - offset} bytes left over after the JSON header and binary "
              f"tensors (check binary_data_size and Inference-Header-Content-Length)")
    missing = [t.name for t in inputs if t.name not in feeds]
    if missing:
        _fail(f"inputs: missing {', '.join(map(repr, missing))}")

    names, binary = _outputs(head.get("outputs"), outputs, binary_all)
    return InferRequest(req_id, feeds, names, binary, params)


def _outputs(raw, outputs: list, binary_all: bool):
    known = [t.name for t in outputs]
    if raw is None or raw == []:  # absent or empty: every output
        return None, set(known) if binary_all else set()
    if not isinstance(raw, list):
        _fail("outputs: must be a list of {\"name\": ...} objects")
    names, binary = [], set()
    for i, spec in enumerate(raw):
        where = f"outputs[{i}]"
        name = _name(spec, where)
        if name not in known:
            _fail(f"{where}: unknown output {name!r}; the model has {', '.join(known) or 'none'}")
        if name in names:
            _fail(f"{where}: output {name!r} is requested twice")
        params = _dict(spec.get("parameters"), f"{where}.parameters")
        if "classification" in params:
            _fail(f"{where}.parameters.classification: the classification extension is not supported")
        if _bool(params.get("binary_data", binary_all), f"{where}.parameters.binary_data"):
            binary.add(name)
        names.append(name)
    return names, binary


def _json_data(arr: np.ndarray, name: str, datatype: str) -> list:
    if arr.dtype.kind in "iub":
        return arr.ravel().tolist()
    wide = arr.astype(np.float64).ravel()  # FP16/BF16 too: JSON numbers are doubles
    if not np.isfinite(wide).all():
        _fail(f"output {name!r}: holds NaN or Inf, which JSON cannot carry; request it with "
              f"\"parameters\": {{\"binary_data\": true}}")
    return wide.tolist()


def encode_infer_response(model_name: str, model_version: str | None, request_id: str | None,
                          results: dict, binary_outputs: set) -> tuple[bytes, dict]:
    """Results -> (body, headers). Outputs named in binary_outputs go as raw bytes after the JSON."""
    head = {"model_name": model_name}
    if model_version is not None:
        head["model_version"] = model_version
    if request_id is not None:
        head["id"] = request_id
    entries, chunks = [], []
    for name, value in results.items():
        arr = np.asarray(value)
        datatype = datatype_of(arr.dtype)
        entry = {"name": name, "datatype": datatype, "shape": list(arr.shape)}
        if name in binary_outputs:
            raw = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = _json_data(arr, name, datatype)
        entries.append(entry)
    head["outputs"] = entries
    text = json.dumps(head, separators=(",", ":"), allow_nan=False).encode()
    if not chunks:
        return text, {"content-type": "application/json"}
    return b"".join([text, *chunks]), {"content-type": "application/octet-stream",
                                       "Inference-Header-Content-Length": str(len(text))}


def model_metadata(name: str, versions: list, platform: str, inputs: list, outputs: list) -> dict:
    """The GET /v2/models/{name} body."""
    def tensor(t):
        shape = [-1] if t.shape is None else _dims(t.shape)
        return {"name": t.name, "datatype": _BY_NAME.get(t.dtype, "UNKNOWN"), "shape": shape}
    return {"name": name, "versions": [str(v) for v in versions], "platform": platform,
            "inputs": [tensor(t) for t in inputs], "outputs": [tensor(t) for t in outputs]}
