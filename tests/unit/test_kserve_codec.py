"""KServe v2 codec: round trips of every datatype through JSON and binary, request options, every
validation error (the message must name the field), and a fuzz of mutated binary bodies."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ember.engine import TensorInfo
from ember.errors import InputError
from ember.serve import kserve_codec as kc
from ember.serve.kserve_codec import (DATATYPES, datatype_of, encode_infer_response, model_metadata,
                                      parse_infer_request)

INPUTS = [TensorInfo("input_ids", "int64", ["batch", "seq"]),
          TensorInfo("mask", "bool", ["batch", 4]),
          TensorInfo("scale", "float32", [3])]
OUTPUTS = [TensorInfo("logits", "float32", ["batch", "seq", 5]), TensorInfo("pooled", "float16", None)]


def random_array(rng, dtype: np.dtype, shape) -> np.ndarray:
    if dtype.kind == "b":
        return rng.integers(0, 2, shape).astype(bool)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)  # the full range, extremes included
        arr = rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
        arr.flat[:2] = [info.min, info.max][: arr.size]
        return arr
    return (rng.standard_normal(shape) * 100).astype(dtype)


def json_values(arr: np.ndarray) -> list:
    """What a client sends: Python numbers (bf16 through float64, which holds it exactly)."""
    return (arr.astype(np.float64) if arr.dtype.kind in "fV" else arr).tolist()


def body_of(head: dict, chunks=()) -> tuple[bytes, int | None]:
    text = json.dumps(head).encode()
    return text + b"".join(chunks), len(text) if chunks else None


def tensor_json(name, arr, nested=False):
    data = json_values(arr) if nested else json_values(arr.ravel())
    return {"name": name, "shape": list(arr.shape), "datatype": datatype_of(arr.dtype), "data": data}


def tensor_bin(name, arr):
    raw = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
    return {"name": name, "shape": list(arr.shape), "datatype": datatype_of(arr.dtype),
            "parameters": {"binary_data_size": len(raw)}}, raw


def decode_response(body: bytes, headers: dict) -> tuple[dict, dict]:
    """A client's view of a response: (JSON header, {name: array})."""
    n = int(headers.get("Inference-Header-Content-Length", len(body)))
    head, offset, arrays = json.loads(body[:n]), n, {}
    for out in head["outputs"]:
        dtype = DATATYPES[out["datatype"]]
        if "data" in out:
            wide = np.float64 if dtype.kind == "V" else dtype  # bf16 arrives as doubles
            arrays[out["name"]] = np.array(out["data"], wide).astype(dtype).reshape(out["shape"])
        else:
            size = out["parameters"]["binary_data_size"]
            arrays[out["name"]] = np.frombuffer(body[offset:offset + size], dtype).reshape(out["shape"])
            offset += size
    assert offset == len(body)
    return head, arrays


def valid_request(rng):
    """A mixed request (binary, JSON, binary) and the arrays it carries."""
    ids = rng.integers(-2**40, 2**40, (2, 7))
    mask = rng.integers(0, 2, (2, 4)).astype(bool)
    scale = rng.standard_normal(3).astype(np.float32)
    t_ids, raw_ids = tensor_bin("input_ids", ids)
    t_scale, raw_scale = tensor_bin("scale", scale)
    head = {"id": "r1", "inputs": [t_ids, tensor_json("mask", mask, nested=True), t_scale],
            "outputs": [{"name": "logits", "parameters": {"binary_data": True}}]}
    body, n = body_of(head, [raw_ids, raw_scale])
    return body, n, {"input_ids": ids, "mask": mask, "scale": scale}


# ---- round trips ----

@pytest.mark.parametrize("datatype", sorted(DATATYPES))
@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_round_trip_every_datatype(rng, datatype, binary):
    dtype = DATATYPES[datatype]
    arr = random_array(rng, dtype, (3, 5))
    info = [TensorInfo("x", dtype.name, ["n", 5])]
    if binary:
        t, raw = tensor_bin("x", arr)
        body, n = body_of({"inputs": [t]}, [raw])
    else:
        body, n = body_of({"inputs": [tensor_json("x", arr)]})
    req = parse_infer_request(body, n, info, info)
    got = req.feeds["x"]
    assert got.dtype == dtype and got.shape == arr.shape
    np.testing.assert_array_equal(got.view(np.uint8), arr.view(np.uint8))  # bit-exact

    out, headers = encode_infer_response("m", "1", "abc", {"y": arr}, {"y"} if binary else set())
    head, arrays = decode_response(out, headers)
    assert headers["content-type"] == ("application/octet-stream" if binary else "application/json")
    assert head["outputs"][0]["datatype"] == datatype and head["outputs"][0]["shape"] == [3, 5]
    np.testing.assert_array_equal(arrays["y"].view(np.uint8), arr.view(np.uint8))


def test_nested_and_flat_data_agree(rng):
    arr = rng.integers(-100, 100, (2, 3, 4))
    info = [TensorInfo("x", "int64", [2, 3, 4])]
    flat = parse_infer_request(body_of({"inputs": [tensor_json("x", arr)]})[0], None, info, info)
    nested = parse_infer_request(body_of({"inputs": [tensor_json("x", arr, nested=True)]})[0],
                                 None, info, info)
    np.testing.assert_array_equal(flat.feeds["x"], arr)
    np.testing.assert_array_equal(nested.feeds["x"], arr)


def test_mixed_binary_and_json_inputs(rng):
    body, n, arrays = valid_request(rng)
    req = parse_infer_request(body, str(n), INPUTS, OUTPUTS)  # the header's text works too
    assert req.id == "r1" and req.outputs == ["logits"] and req.binary_outputs == {"logits"}
    for name, arr in arrays.items():
        np.testing.assert_array_equal(req.feeds[name], arr)
        assert req.feeds[name].dtype == arr.dtype


def test_binary_data_output_parameter(rng):
    feeds = [tensor_json("scale", rng.standard_normal(3).astype(np.float32)),
             tensor_json("input_ids", rng.integers(0, 9, (1, 2))),
             tensor_json("mask", np.ones((1, 4), bool))]
    head = {"parameters": {"binary_data_output": True}, "inputs": feeds}
    req = parse_infer_request(body_of(head)[0], None, INPUTS, OUTPUTS)
    assert req.outputs is None and req.binary_outputs == {"logits", "pooled"}
    assert req.parameters == {"binary_data_output": True}
    head["outputs"] = [{"name": "pooled", "parameters": {"binary_data": False}}, {"name": "logits"}]
    req = parse_infer_request(body_of(head)[0], None, INPUTS, OUTPUTS)
    assert req.outputs == ["pooled", "logits"] and req.binary_outputs == {"logits"}
    del head["parameters"]
    req = parse_infer_request(body_of(head)[0], None, INPUTS, OUTPUTS)
    assert req.binary_outputs == set()


def test_response_mixes_json_and_binary_in_order(rng):
    a = rng.standard_normal((2, 3)).astype(np.float32)
    b = rng.integers(0, 5, 4).astype(np.int32)
    c = rng.standard_normal(2).astype(np.float64)
    body, headers = encode_infer_response("m", None, None, {"a": a, "b": b, "c": c}, {"a", "c"})
    head, arrays = decode_response(body, headers)
    assert "model_version" not in head and "id" not in head and head["model_name"] == "m"
    assert [o["name"] for o in head["outputs"]] == ["a", "b", "c"]
    assert "data" not in head["outputs"][0] and head["outputs"][1]["data"] == b.tolist()
    for name, arr in {"a": a, "b": b, "c": c}.items():
        np.testing.assert_array_equal(arrays[name], arr)


def test_non_finite_outputs_need_binary():
    arr = np.array([1.0, np.nan, np.inf], np.float32)
    with pytest.raises(InputError, match=r"\[kserve\] output 'y'.*binary_data"):
        encode_infer_response("m", "1", None, {"y": arr}, set())
    body, headers = encode_infer_response("m", "1", None, {"y": arr}, {"y"})
    np.testing.assert_array_equal(decode_response(body, headers)[1]["y"], arr)


def test_model_metadata():
    meta = model_metadata("bert", ["1", "3"], "ember_onnx", INPUTS, OUTPUTS)
    assert meta == {"name": "bert", "versions": ["1", "3"], "platform": "ember_onnx",
                    "inputs": [{"name": "input_ids", "datatype": "INT64", "shape": [-1, -1]},
                               {"name": "mask", "datatype": "BOOL", "shape": [-1, 4]},
                               {"name": "scale", "datatype": "FP32", "shape": [3]}],
                    "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, -1, 5]},
                                {"name": "pooled", "datatype": "FP16", "shape": [-1]}]}
    json.dumps(meta)


def test_datatype_of():
    assert datatype_of(np.float32) == "FP32" and datatype_of(np.dtype(">i8")) == "INT64"
    with pytest.raises(InputError, match=r"\[kserve\] dtype complex64"):
        datatype_of(np.complex64)


# ---- errors ----

def _x(**over):
    t = {"name": "x", "shape": [2, 3], "datatype": "INT64", "data": [1, 2, 3, 4, 5, 6]}
    t.update(over)
    return t


X = [TensorInfo("x", "int64", ["n", 3])]
F = [TensorInfo("x", "float32", ["n", 3])]
ERRORS = [  # (inputs declared, request JSON, expected message part)
    (X, {"inputs": [_x(datatype="FP32")]}, r"inputs\[0\] \('x'\): datatype FP32, the model expects INT64"),
    (X, {"inputs": [_x(datatype="BYTES")]}, r"inputs\[0\]\.datatype: BYTES .*not supported"),
    (X, {"inputs": [_x(datatype="FP8")]}, r"inputs\[0\]\.datatype: 'FP8' is not one of"),
    (X, {"inputs": [_x(datatype=None)]}, r"inputs\[0\]\.datatype"),
    (X, {"inputs": [_x(name="y")]}, r"inputs\[0\]: unknown input 'y'; the model takes x"),
    (X, {"inputs": [_x(name=3)]}, r"inputs\[0\]\.name: must be a string"),
    (X, {"inputs": [_x(), _x()]}, r"inputs\[1\]: input 'x' appears twice"),
    (X, {"inputs": []}, r"inputs: missing 'x'"),
    (X, {"inputs": {"x": 1}}, r"inputs: must be a list"),
    (X, {"inputs": ["x"]}, r"inputs\[0\]: must be a JSON object"),
    (X, {}, r"inputs: must be a list"),
    (X, {"inputs": [_x(shape=[6])]}, r"inputs\[0\]\.shape: \[6\] has rank 1, .*'x' has rank 2"),
    (X, {"inputs": [_x(shape=[3, 2])]}, r"inputs\[0\]\.shape\[1\]: 2, .*fixes it at 3"),
    (X, {"inputs": [_x(shape=[-2, 3])]}, r"inputs\[0\]\.shape\[0\]: -2 is negative"),
    (X, {"inputs": [_x(shape=[2.0, 3])]}, r"inputs\[0\]\.shape: must be a list of integers"),
    (X, {"inputs": [_x(shape="2,3")]}, r"inputs\[0\]\.shape: must be a list of integers"),
    (X, {"inputs": [_x(shape=[True, 3])]}, r"inputs\[0\]\.shape: must be a list of integers"),
    (X, {"inputs": [_x(shape=[2**40, 3])]}, r"inputs\[0\]\.shape: .* over the limit of 1000"),
    (X, {"inputs": [_x(data=[1, 2, 3])]}, r"inputs\[0\]\.data: 3 values, shape \[2, 3\] needs 6"),
    (X, {"inputs": [_x(data=5)]}, r"inputs\[0\]\.data: must be a list"),
    (X, {"inputs": [_x(data=[1, 2, 3, 4, 5, 1.5])]}, r"inputs\[0\]\.data: element 5 \(1\.5\) is not an integer"),
    (X, {"inputs": [_x(data=[1, 2, 3, 4, 5, 2.0])]}, r"inputs\[0\]\.data: element 5 .*not an integer"),
    (X, {"inputs": [_x(data=[1, "x", 3, 4, 5, 6])]}, r"inputs\[0\]\.data: element 1 \('x'\)"),
    (X, {"inputs": [_x(data=[1, True, 3, 4, 5, 6])]}, r"inputs\[0\]\.data: element 1 \(True\)"),
    (X, {"inputs": [_x(data=[[1, 2, 3], [4, 5, 2**63]])]}, r"inputs\[0\]\.data: element 5 .*out of range"),
    (X, {"inputs": [_x(data=[1, 2, 3, 4, 5, {"a": 1}])]}, r"inputs\[0\]\.data: element 5"),
    (X, {"inputs": [_x(data=None)]}, r"inputs\[0\]\.data: must be a list"),
    (X, {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "INT64"}]}, r"inputs\[0\] \('x'\): no data"),
    (X, {"inputs": [_x(parameters={"binary_data_size": 48})]}, r"inputs\[0\]: has both data and"),
    (X, {"inputs": [_x(parameters=[1])]}, r"inputs\[0\]\.parameters: must be a JSON object"),
    ([TensorInfo("x", "uint8", [2])], {"inputs": [_x(datatype="UINT8", shape=[2], data=[1, 300])]},
     r"inputs\[0\]\.data: element 1 \(300\) is out of range for UINT8 \[0, 255\]"),
    ([TensorInfo("x", "uint8", [2])], {"inputs": [_x(datatype="UINT8", shape=[2], data=[-1, 3])]},
     r"element 0 \(-1\) is out of range"),
    ([TensorInfo("x", "bool", [2])], {"inputs": [_x(datatype="BOOL", shape=[2], data=[1, 0])]},
     r"inputs\[0\]\.data: element 0 \(1\) is not true/false"),
    (F, {"inputs": [_x(datatype="FP32", data=[1, 2.5, 3, 4, 5, True])]}, r"element 5 \(True\) is not a number"),
    (F, {"inputs": [_x(datatype="FP32", data=[1, 2, 3, 4, 5, 1e39])]}, r"element 5 .* does not fit FP32"),
    (F, {"inputs": [_x(datatype="FP32", data=[1, 2, 3, 4, 5, 10**400])]}, r"inputs\[0\]\.data: an integer is too large"),
    ([TensorInfo("x", "float16", [1])], {"inputs": [_x(datatype="FP16", shape=[1], data=[70000.0])]},
     r"element 0 \(70000\.0\) does not fit FP16"),
    (X, {"id": 7, "inputs": [_x()]}, r"id: must be a string"),
    (X, {"parameters": [], "inputs": [_x()]}, r"parameters: must be a JSON object"),
    (X, {"parameters": {"binary_data_output": 1}, "inputs": [_x()]}, r"parameters\.binary_data_output: must be true or false"),
    (X, {"inputs": [_x()], "outputs": [{"name": "zz"}]}, r"outputs\[0\]: unknown output 'zz'; the model has y"),
    (X, {"inputs": [_x()], "outputs": [{"name": "y"}, {"name": "y"}]}, r"outputs\[1\]: output 'y' is requested twice"),
    (X, {"inputs": [_x()], "outputs": [{"name": "y", "parameters": {"binary_data": "yes"}}]},
     r"outputs\[0\]\.parameters\.binary_data: must be true or false"),
    (X, {"inputs": [_x()], "outputs": [{"name": "y", "parameters": {"classification": 2}}]},
     r"outputs\[0\]\.parameters\.classification"),
    (X, {"inputs": [_x()], "outputs": "y"}, r"outputs: must be a list"),
    (X, {"inputs": [_x()], "outputs": [{}]}, r"outputs\[0\]\.name: must be a string"),
    (X, [1, 2], r"request body: must be a JSON object"),
]


@pytest.mark.parametrize("declared,head,match", ERRORS, ids=[str(i) for i in range(len(ERRORS))])
def test_errors_name_the_field(declared, head, match):
    with pytest.raises(InputError, match=r"^\[kserve\] .*" + match):
        parse_infer_request(json.dumps(head).encode(), None, declared, [TensorInfo("y", "int64", None)],
                            max_elements=1000)


BAD_BODIES = [  # (body, header_length, expected message part)
    (b"{not json", None, r"request body is not valid JSON"),
    (b'{"inputs": [NaN]}', None, r"NaN is not JSON"),
    (b"\xff\xfe\x00", None, r"request body is not valid JSON"),
    (b"[" * 100000 + b"]" * 100000, None, r"request body is not valid JSON|must be a JSON object"),
    (b"{}", 3, r"Inference-Header-Content-Length: 3 is larger than the body \(2 bytes\)"),
    (b"{}", -1, r"Inference-Header-Content-Length: -1 is not a non-negative integer"),
    (b"{}", "2x", r"Inference-Header-Content-Length: '2x' is not"),
    (b"{}", 1.5, r"Inference-Header-Content-Length: 1\.5 is not"),
    ("{}", None, r"request body: must be bytes"),
]


@pytest.mark.parametrize("body,n,match", BAD_BODIES, ids=[str(i) for i in range(len(BAD_BODIES))])
def test_bad_bodies(body, n, match):
    with pytest.raises(InputError, match=r"^\[kserve\] .*(" + match + ")"):
        parse_infer_request(body, n, X, X)


def test_binary_size_errors(rng):
    arr = rng.integers(0, 9, (2, 3))
    t, raw = tensor_bin("x", arr)
    head = {"inputs": [t]}
    body, n = body_of(head, [raw])
    assert parse_infer_request(body, n, X, X).feeds["x"].tolist() == arr.tolist()
    cases = [
        (body[:-1], n, r"inputs\[0\]: binary data runs past the end of the body \(48 bytes needed, 47 left\)"),
        (body + b"\0", n, r"body: 1 bytes left over"),
        (body_of(head)[0], None, r"inputs\[0\]\.parameters\.binary_data_size: binary data needs the "
                                 r"Inference-Header-Content-Length header"),
        (body, None, r"request body is not valid JSON"),  # no header: the binary tail is not JSON
        (body_of({"inputs": [dict(t, parameters={"binary_data_size": 40})]}, [raw[:40]])[0], n,
         r"inputs\[0\]\.parameters\.binary_data_size: 40 bytes, shape \[2, 3\] of INT64 needs 48"),
        (body_of({"inputs": [dict(t, parameters={"binary_data_size": -48})]}, [raw])[0], n + 1,
         r"inputs\[0\]\.parameters\.binary_data_size: -48 is not a non-negative integer"),
        (body_of({"inputs": [dict(t, parameters={"binary_data_size": "48"})]}, [raw])[0], n + 2,
         r"inputs\[0\]\.parameters\.binary_data_size: '48' is not"),
    ]
    for bad, length, match in cases:
        with pytest.raises(InputError, match=r"^\[kserve\] " + match):
            parse_infer_request(bad, length, X, X)


def test_binary_bool_bytes_must_be_0_or_1():
    info = [TensorInfo("m", "bool", [3])]
    head = {"inputs": [{"name": "m", "shape": [3], "datatype": "BOOL", "parameters": {"binary_data_size": 3}}]}
    body, n = body_of(head, [b"\x01\x00\x02"])
    with pytest.raises(InputError, match=r"^\[kserve\] inputs\[0\]: BOOL binary data"):
        parse_infer_request(body, n, info, info)


def test_element_limit_checked_before_allocating():
    # 2**62 elements as binary: must fail on the limit, never try to size or read a buffer.
    head = {"inputs": [{"name": "x", "shape": [2**31, 2**31], "datatype": "INT64",
                        "parameters": {"binary_data_size": 2**65}}]}
    body, n = body_of(head, [b"\0" * 8])
    info = [TensorInfo("x", "int64", ["a", None])]
    with pytest.raises(InputError, match=r"inputs\[0\]\.shape: .* over the limit of 268435456"):
        parse_infer_request(body, n, info, info)


def test_bf16_without_ml_dtypes(monkeypatch):
    monkeypatch.setattr(kc, "_BF16", None)
    info = [TensorInfo("x", "bfloat16", [1])]
    head = {"inputs": [{"name": "x", "shape": [1], "datatype": "BF16", "data": [1.0]}]}
    with pytest.raises(InputError, match=r"inputs\[0\]\.datatype: BF16 needs the ml_dtypes package"):
        parse_infer_request(body_of(head)[0], None, info, info)


def test_fuzz_mutated_binary_bodies_raise_only_input_error(rng):
    body, n, _ = valid_request(rng)
    ok = 0
    for _ in range(600):
        bad, length = bytearray(body), n
        kind = rng.integers(6)
        if kind == 0:
            bad = bad[:rng.integers(len(bad))]
        elif kind == 1:
            bad += rng.bytes(int(rng.integers(1, 40)))
        elif kind == 2:
            length = int(rng.integers(-5, len(body) + 5))
        elif kind == 3:
            length = rng.choice([None, "", "abc", str(n + 1), str(n - 1), 1.0, b"12"])
        elif kind == 4:  # flip bytes anywhere, JSON header included
            for i in rng.integers(0, len(bad), int(rng.integers(1, 4))):
                bad[i] = int(rng.integers(256))
        else:  # replace a digit in the header (sizes, shapes) with another
            digits = [i for i in range(n) if chr(bad[i]).isdigit()]
            bad[int(rng.choice(digits))] = ord(str(rng.integers(10)))
        try:
            req = parse_infer_request(bytes(bad), length, INPUTS, OUTPUTS)
        except InputError as e:
            assert str(e).startswith("[kserve] ")
            continue
        ok += 1
        assert set(req.feeds) == {"input_ids", "mask", "scale"}
    assert ok < 600  # the mutations did break some bodies
