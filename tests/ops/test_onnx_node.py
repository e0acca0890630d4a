"""The ONNX backend node tests (onnx.backend.test.case.node) that ember claims to support.

A case is selected when its opset is one ember reads (onnx_import.MIN_OPSET and up), every
node's op type and version is one ember accepts (ember.onnx_import.supported_ops()) and every
graph input and output is a tensor of an ember dtype; nothing else is skipped. An exception
from ember on a selected case is a failure. test_onnx_node_cases runs them all, prints the
tally and each failure with its reason, and requires a pass rate of at least MIN_PASS_RATE.
EMBER_ONNX_NODE_EACH=1 also runs one pytest test per case (collection then costs the ~20 s
of generating the ONNX cases).
"""
from __future__ import annotations

import functools
import os
import warnings

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import ember
from ember import onnx_import
from ember.onnx_import import supported_ops

# One-node models of QuantizeLinear & co. are unfused by nature: their fallback warning is noise here.
pytestmark = pytest.mark.filterwarnings("ignore::ember.QuantFallbackWarning")

MIN_OPSET = getattr(onnx_import, "MIN_OPSET", 1)  # the oldest default-domain opset ember reads

MIN_PASS_RATE = 0.95
EMBER_DTYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16,
                onnx.TensorProto.DOUBLE, onnx.TensorProto.INT8, onnx.TensorProto.UINT8,
                onnx.TensorProto.INT16, onnx.TensorProto.INT32, onnx.TensorProto.INT64,
                onnx.TensorProto.BOOL}
FLOATS = ("float32", "float16", "bfloat16", "float64")


@functools.lru_cache(maxsize=None)
def all_cases():
    """Every ONNX node test case (generating them runs numpy; ~20 s)."""
    from onnx.backend.test.case.node import collect_testcases
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tuple(collect_testcases())


def skip_reason(case) -> str | None:
    """Why ember does not claim this case (None: selected)."""
    model = case.model
    supported = supported_ops()
    opset = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    if opset.get("ai.onnx", MIN_OPSET) < MIN_OPSET:  # ember refuses the whole model
        return f"opset {opset['ai.onnx']} is below ember's floor {MIN_OPSET}"
    for node in model.graph.node:
        domain = node.domain or "ai.onnx"
        if domain != "ai.onnx":
            return f"domain {node.domain}"
        if node.op_type not in supported:
            return f"op {node.op_type}"
        try:
            since = onnx.defs.get_schema(node.op_type, opset.get("ai.onnx", 1), "").since_version
        except onnx.defs.SchemaError:
            return f"op {node.op_type} has no schema at opset {opset.get('ai.onnx')}"
        if since not in supported[node.op_type]:
            return f"op {node.op_type}-{since}"
    for vi in list(model.graph.input) + list(model.graph.output):
        t = vi.type
        if t.WhichOneof("value") != "tensor_type":
            return f"'{vi.name}' is a {t.WhichOneof('value')}"
        if t.tensor_type.elem_type not in EMBER_DTYPES:
            return f"'{vi.name}' is {onnx.TensorProto.DataType.Name(t.tensor_type.elem_type)}"
    return None


@functools.lru_cache(maxsize=None)
def selected_cases():
    return tuple(c for c in all_cases() if skip_reason(c) is None)


def _array(x):
    return numpy_helper.to_array(x) if isinstance(x, onnx.TensorProto) else np.asarray(x)


def _float64(a):
    return a.astype(np.float64)


def check_outputs(got, want, rtol, atol):
    """None when ember's outputs match, else the reason (the first output that differs)."""
    for name, w in want.items():
        if name not in got:
            return f"output '{name}' missing"
        g = got[name]
        if g.dtype.name != w.dtype.name:
            return f"output '{name}': dtype {g.dtype}, expected {w.dtype}"
        if g.shape != w.shape:
            return f"output '{name}': shape {g.shape}, expected {w.shape}"
        if w.dtype.name in FLOATS:
            gf, wf = _float64(g), _float64(w)
            if not np.array_equal(np.isnan(gf), np.isnan(wf)):
                return f"output '{name}': NaN at different positions"
            try:
                np.testing.assert_allclose(gf, wf, rtol=rtol, atol=atol)
            except AssertionError:
                ok = ~np.isnan(wf)
                err = np.abs(gf[ok] - wf[ok])
                worst = int(np.argmax(err - atol - rtol * np.abs(wf[ok]))) if err.size else 0
                return (f"output '{name}': max abs error {err.max():.3g} (got {gf[ok][worst]:.6g}, "
                        f"expected {wf[ok][worst]:.6g}; rtol {rtol:g}, atol {atol:g})")
        elif not np.array_equal(g, w):
            bad = int(np.count_nonzero(g != w))
            return f"output '{name}': {bad} of {w.size} elements differ"
    return None


def run_case(case) -> str | None:
    """Runs one node test on ember: None when it passes, else the reason."""
    model = case.model
    in_names = [vi.name for vi in model.graph.input]
    out_names = [vi.name for vi in model.graph.output]
    try:
        with ember.Engine(model) as eng:
            for k, (inputs, outputs) in enumerate(case.data_sets):
                feeds = {n: _array(x) for n, x in zip(in_names, inputs)}
                want = {n: _array(y) for n, y in zip(out_names, outputs)}
                got = eng.run(feeds)
                reason = check_outputs(got, want, case.rtol, case.atol)
                if reason:
                    return reason if len(case.data_sets) == 1 else f"data set {k}: {reason}"
    except Exception as e:  # noqa: BLE001 - every ember exception is a failure, with its reason
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return f"{type(e).__name__}: {first[:300]}"
    return None


def test_onnx_node_cases():
    total = len(all_cases())
    cases = selected_cases()
    assert cases, "no ONNX node test is selected: supported_ops() or the dtype table is empty"
    failures = [(c.name, r) for c in cases if (r := run_case(c)) is not None]
    passed = len(cases) - len(failures)
    rate = passed / len(cases)
    print(f"\nONNX node tests: {passed} passed / {len(cases)} selected (of {total} total), "
          f"pass rate {rate:.1%}")
    for name, reason in failures:
        print(f"  FAIL {name}: {reason}")
    assert rate >= MIN_PASS_RATE, (
        f"ONNX node tests: {passed}/{len(cases)} passed ({rate:.1%} < {MIN_PASS_RATE:.0%}); "
        f"failures:\n" + "\n".join(f"  {n}: {r}" for n, r in failures))


def _each_params():
    if os.environ.get("EMBER_ONNX_NODE_EACH") != "1":
        return [pytest.param(None, marks=pytest.mark.skip(
            reason="one test per ONNX node case runs with EMBER_ONNX_NODE_EACH=1 "
                   "(test_onnx_node_cases covers them all in one test)"), id="all")]
    return [pytest.param(c, id=c.name) for c in selected_cases()]


@pytest.mark.parametrize("case", _each_params())
def test_onnx_node_case(case):
    reason = run_case(case)
    assert reason is None, f"{case.name}: {reason}"
