"""Every row of the op case table on every kernel path, against onnx.reference.

Each case runs as a one-node ONNX model through ember.Engine twice: kernels="reference" (the
scalar reference kernels, the specification) and the default (fast kernels where registered).
Both must match onnx.reference.ReferenceEvaluator (numpy where it falls short) within the
case's tolerance, match each other, keep the feeds unchanged, and give the same answer when
run again. Subprocess reruns cover the lower ISA dispatch paths and an odd thread count.
Below the table: shape-time values computed from a runtime shape or fed at run time, and the
errors a caller can provoke (bad feeds, out-of-range indices, impossible reshapes, memory_limit).
"""
from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import ember
from ember import _core

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # cases.py, in any import mode
from case_types import ABSENT, Case, generate, lay_out  # noqa: E402
from cases import CASES  # noqa: E402

# One-node models of QuantizeLinear & co. are unfused by nature: their fallback warning is noise here.
pytestmark = pytest.mark.filterwarnings("ignore::ember.QuantFallbackWarning")

FLOATS = ("float32", "float16", "bfloat16", "float64")


# ---- building and running a case ------------------------------------------------------------

def case_model(case: Case, rng: np.random.Generator, make_model):
    """Case -> (one-node ModelProto, feeds {name: array, possibly a non-contiguous view})."""
    inputs, feeds, inits = [], {}, {}
    for k, spec in enumerate(case.inputs):
        if spec is ABSENT:
            inputs.append("")
        elif spec.is_const:
            inits[f"c{k}"] = generate(rng, spec)
            inputs.append(f"c{k}")
        else:
            feeds[f"x{k}"] = lay_out(rng, spec)
            inputs.append((f"x{k}", feeds[f"x{k}"].dtype, spec.shape))
    outputs = list(case.out_names) or [f"y{k}" for k in range(case.outputs)]
    model = make_model(case.op, inputs, outputs, case.attrs, case.opset, inits)
    return model, feeds


def _mean(*xs):
    # onnx.reference's Mean adds in place into its first input, which fails when that input
    # is the smaller side of a broadcast (onnx 1.23): the same arithmetic, out of place.
    acc = xs[0]
    for x in xs[1:]:
        acc = acc + x
    return (acc / np.array(len(xs), acc.dtype)).astype(xs[0].dtype)


def _softmax_legacy(log):
    # Before opset 13, (Log)Softmax coerced the input to 2-D at `axis` (default 1) and
    # normalised each row; onnx.reference (1.23) implements only the opset-13 form.
    def run(x, axis=1):
        rows = x.astype(np.float64).reshape(int(np.prod(x.shape[:axis % max(x.ndim, 1)])), -1)
        shifted = rows - rows.max(axis=1, keepdims=True)
        lse = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        y = shifted - lse if log else np.exp(shifted - lse)
        return y.reshape(x.shape).astype(x.dtype)
    return run


_erf64 = np.vectorize(math.erf, otypes=[np.float64])


def _erf(x):
    # onnx.reference evaluates erf in float32 even for float64 inputs.
    return _erf64(x.astype(np.float64)).astype(x.dtype)


def _gelu(x, approximate="none"):
    # onnx.reference's Gelu (a function body) uses float32 constants and erf.
    d = x.astype(np.float64)
    if approximate == "tanh":
        y = 0.5 * d * (1 + np.tanh(math.sqrt(2 / math.pi) * (d + 0.044715 * d ** 3)))
    else:
        y = 0.5 * d * (1 + _erf64(d / math.sqrt(2)))
    return y.astype(x.dtype)


def _layer_norm(x, scale, bias=None, axis=-1, epsilon=1e-5, stash_type=1):
    # In float64: onnx.reference accumulates in float32, which is less accurate than ember's
    # reference kernel when the mean is large against the spread.
    axes = tuple(range(axis % x.ndim, x.ndim))
    d = x.astype(np.float64)
    mean = d.mean(axis=axes, keepdims=True)
    inv_std = 1 / np.sqrt(((d - mean) ** 2).mean(axis=axes, keepdims=True) + epsilon)
    y = (d - mean) * inv_std * scale.astype(np.float64)
    if bias is not None:
        y = y + bias.astype(np.float64)
    stash = np.float32 if stash_type == 1 else x.dtype
    return y.astype(x.dtype), mean.astype(stash), inv_std.astype(stash)


def _loop(m=None, cond=None, *v_initial, body):
    # onnx.reference (1.23) joins scan outputs with np.vstack, which concatenates rank >= 2
    # outputs instead of stacking them (onnxruntime and the spec stack): run the body with it,
    # stack here.
    run = ReferenceEvaluator(body, opsets={"": 18}).run
    n_carried = len(v_initial)
    carried, scans, i = list(v_initial), None, 0
    keep = True if cond is None else bool(cond)
    while keep and (m is None or i < int(m)):
        outs = run(None, dict(zip([x.name for x in body.input],
                                  [np.array(i, np.int64), np.array(keep)] + carried)))
        keep, carried = bool(outs[0]), list(outs[1:1 + n_carried])
        scans = [s + [y] for s, y in zip(scans or [[] for _ in outs[1 + n_carried:]],
                                         outs[1 + n_carried:])]
        i += 1
    return tuple(carried) + tuple(np.stack(s) for s in scans or [])


# op -> (opsets it applies below, or None for all; numpy implementation). Everything else
# uses onnx.reference, and Mean falls back to numpy only when the evaluator raises.
NUMPY_ORACLES = {"Softmax": (13, _softmax_legacy(False)), "LogSoftmax": (13, _softmax_legacy(True)),
                 "Erf": (None, _erf), "Gelu": (None, _gelu),
                 "LayerNormalization": (None, _layer_norm), "Loop": (None, _loop)}
NUMPY_FALLBACKS = {"Mean": _mean}


def _numpy_oracle(model, feeds, fn):
    node = model.graph.node[0]
    values = dict(feeds, **{t.name: numpy_helper.to_array(t) for t in model.graph.initializer})
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    attrs = {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}
    out = fn(*(values[i] if i else None for i in node.input), **attrs)
    out = out if isinstance(out, tuple) else (out,)
    return {name: y for name, y in zip(node.output, out) if name}


def expected(model, feeds):
    """The ONNX reference evaluator's outputs, by output name (numpy where it falls short)."""
    names = [o.name for o in model.graph.output]
    if len(model.graph.node) == 1:
        op = model.graph.node[0].op_type
        opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
        below, fn = NUMPY_ORACLES.get(op, (0, None))
        if fn is not None and (below is None or opset < below):
            return _numpy_oracle(model, feeds, fn)
    try:
        return dict(zip(names, ReferenceEvaluator(model).run(None, feeds)))
    except Exception:
        op = model.graph.node[0].op_type
        if len(model.graph.node) != 1 or op not in NUMPY_FALLBACKS:
            raise
        return _numpy_oracle(model, feeds, NUMPY_FALLBACKS[op])


def dtype_name(a: np.ndarray) -> str:
    return a.dtype.name


def assert_same(got: np.ndarray, want: np.ndarray, tol, what: str):
    """Same dtype and shape; values within tol = (rtol, atol), or equal when tol is None."""
    want = np.asarray(want)
    assert isinstance(got, np.ndarray), f"{what}: got a {type(got).__name__}, not an ndarray"
    assert dtype_name(got) == dtype_name(want), f"{what}: dtype {got.dtype}, expected {want.dtype}"
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    if tol is None or dtype_name(want) not in FLOATS:
        if dtype_name(want) in FLOATS:  # bit-exact floats: compare as float64 (NaN == NaN)
            np.testing.assert_array_equal(got.astype(np.float64), want.astype(np.float64),
                                          err_msg=what)
        else:
            np.testing.assert_array_equal(got, want, err_msg=what)
        return
    rtol, atol = tol
    np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=rtol,
                               atol=atol, err_msg=what)


# A test device holding every op (ember/device.h): each case also runs there, through the
# placement, copy steps and residency checks a GPU engine uses.
FAKE_DEVICE = "fake-all-ops"
_core.register_fake_device(FAKE_DEVICE, _core.op_names(fused=True))


def run_ember(model, feeds, kernels, device="cpu"):
    with ember.Engine(model, kernels=kernels, device=device) as eng:
        first = eng.run(feeds)
        again = eng.run(feeds)
    for name in first:  # a second run over reused arena memory gives the same values
        assert_same(again[name], first[name], None, f"{kernels}: output '{name}' on a second run")
    return first


# ---- the table ----------------------------------------------------------------------------

# EMBER_OPS_ONLY=<file of case ids, one a line> narrows the table (test_lower_isa uses it).
def _only():
    path = os.environ.get("EMBER_OPS_ONLY")
    if not path:
        return None
    with open(path) as f:
        return set(f.read().split())


_ONLY = _only()
TABLE = [c for c in CASES if _ONLY is None or c.id in _ONLY]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy on NaN/inf/overflow: intended
@pytest.mark.parametrize("case", TABLE, ids=[c.id for c in TABLE])
def test_op(case: Case, rng, make_model):
    model, feeds = case_model(case, rng, make_model)
    snapshot = {k: v.copy() for k, v in feeds.items()}
    want = expected(model, feeds)
    results = {}
    for kernels in ("reference", "auto"):
        got = run_ember(model, feeds, kernels)
        assert sorted(got) == sorted(want), f"{kernels}: outputs {sorted(got)}, not {sorted(want)}"
        for name, w in want.items():
            assert_same(got[name], w, case.tolerance(dtype_name(np.asarray(w))),
                        f"{case.id} [{kernels} kernels] output '{name}'")
        results[kernels] = got
    for name, w in want.items():
        assert_same(results["auto"][name], results["reference"][name],
                    case.tolerance(dtype_name(np.asarray(w))),
                    f"{case.id}: fast vs reference kernels, output '{name}'")
    on_device = run_ember(model, feeds, "auto", FAKE_DEVICE)
    for name, w in want.items():
        assert_same(on_device[name], results["auto"][name],
                    case.tolerance(dtype_name(np.asarray(w))),
                    f"{case.id}: on a device (fake) vs the CPU, output '{name}'")
    for k, v in feeds.items():  # ember never writes into a caller's arrays
        assert v.tobytes() == snapshot[k].tobytes(), f"feed '{k}' was modified"


ISAS = ("generic", "avx2", "avx512", "avx512bf16")  # x86 order; ARM has generic and neon


def _rerun_cases(tmp_path, ids, **env):
    """Runs test_op for these case ids in a fresh process with these environment variables
    (the ISA and the thread pool are fixed per process); returns a failure message or None."""
    only = tmp_path / "ids.txt"
    only.write_text("\n".join(ids))
    setting = " ".join(f"{k}={v}" for k, v in env.items())
    # the child imports the same ember as this process, wherever that came from
    path = os.pathsep.join(p for p in (os.path.dirname(os.path.dirname(ember.__file__)),
                                       os.environ.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           f"{__file__}::test_op"], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=path, EMBER_OPS_ONLY=str(only), **env))
    if proc.returncode != 0:
        return f"{setting}:\n{proc.stdout[-6000:]}{proc.stderr[-2000:]}"
    return None


def test_lower_isa(tmp_path, seed, make_model):
    """Cases whose fast kernel needs an ISA above generic, rerun in a subprocess with
    EMBER_CPU_ISA lowered to each lower ISA, so every dispatch path is checked on this CPU."""
    from ember import _core
    best = _core.cpu_isa()
    lower = list(ISAS[:ISAS.index(best)]) if best in ISAS else ["generic"]
    if not lower:
        pytest.skip(f"this CPU's best ISA is {best}: the in-process run is the only path")
    rng = np.random.default_rng(seed)
    ids = []
    for c in CASES:
        model, feeds = case_model(c, rng, make_model)
        with ember.Engine(model) as eng:
            if any(isa not in ("generic", "-") for _, _, _, isa, _ in eng.plan_info(feeds)["nodes"]):
                ids.append(c.id)
    if not ids:
        pytest.skip(f"no kernel in this build needs more than generic: the in-process run "
                    f"({best}) already ran every kernel")
    for isa in lower:
        failure = _rerun_cases(tmp_path, ids, EMBER_CPU_ISA=isa, EMBER_TEST_SEED=str(seed))
        assert failure is None, failure


def test_odd_thread_count(tmp_path, seed):
    """The big cases (work split across threads) with a pool of 5 threads: chunk boundaries
    land elsewhere than with this machine's default pool."""
    ids = [c.id for c in CASES if any(t in c.id for t in ("big", "decode", "long-k", "blocks"))]
    assert ids
    for threads in ("5",):
        failure = _rerun_cases(tmp_path, ids, EMBER_NUM_THREADS=threads, EMBER_TEST_SEED=str(seed))
        assert failure is None, failure


def test_table_covers_every_ember_op():
    """Every op with an OpDef row has cases (a new op needs rows in cases.py). Ops that only
    graph passes make (op_names(fused=True)) are tested in tests/cpp/test_gemm.cpp and
    tests/runtime/test_fusion.py: no one-node ONNX case can reach them. com.microsoft ops
    (onnx.reference has none) are tested against onnxruntime in tests/unit/test_matmulnbits.py."""
    from ember import _core
    from ember.onnx_ops import supported_ops
    missing = sorted(set(_core.op_names()) - {c.op for c in CASES} - set(supported_ops("com.microsoft")))
    assert not missing, f"ops without cases in tests/ops/cases.py: {missing}"


# ---- shape values computed at run time -----------------------------------------------------

def shape_subgraph_model(finish_model):
    """x [N, 6, 4] -> Reshape(x, Concat(Gather(Shape(x), [0]), [-1])) -> [N, 24], plus the
    Range over Size(x) and a ConstantOfShape from Shape(x): shape-time values that come from a
    runtime input's shape, not from initializers."""
    i64 = lambda name, v: numpy_helper.from_array(np.asarray(v, np.int64), name)  # noqa: E731
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"], name="shape"),
        helper.make_node("Gather", ["shape", "zero"], ["n"], name="gather", axis=0),
        helper.make_node("Concat", ["n", "minus_one"], ["target"], name="concat", axis=0),
        helper.make_node("Reshape", ["x", "target"], ["flat"], name="reshape"),
        helper.make_node("Size", ["x"], ["size"], name="size"),
        helper.make_node("Range", ["zero_scalar", "size", "one_scalar"], ["iota"], name="range"),
        helper.make_node("Slice", ["shape", "one", "three"], ["tail_dims"], name="slice"),
        helper.make_node("ConstantOfShape", ["tail_dims"], ["fill"], name="fill",
                         value=numpy_helper.from_array(np.array([2.0], np.float32))),
        helper.make_node("Mul", ["flat", "two"], ["y"], name="mul"),
    ]
    graph = helper.make_graph(
        nodes, "shape_subgraph",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 6, 4])],
        [helper.make_empty_tensor_value_info(n) for n in ("y", "iota", "fill")],
        initializer=[i64("zero", [0]), i64("minus_one", [-1]), i64("zero_scalar", 0),
                     i64("one_scalar", 1), i64("one", [1]), i64("three", [3]),
                     numpy_helper.from_array(np.array(2.0, np.float32), "two")])
    return finish_model(graph, 18)


@pytest.mark.parametrize("kernels", ["reference", "auto"])
def test_shape_values_from_runtime_shape(kernels, rng, finish_model_fn):
    model = shape_subgraph_model(finish_model_fn)
    with ember.Engine(model, kernels=kernels) as eng:
        for n in (1, 7, 5):  # a new N means new shape values and a new plan
            x = rng.standard_normal((n, 6, 4)).astype(np.float32)
            got = eng.run({"x": x})
            want = expected(model, {"x": x})
            for name in ("y", "iota", "fill"):
                assert_same(got[name], want[name], None, f"N={n} output '{name}'")
            assert got["y"].shape == (n, 24)


FED_SHAPE_VALUES = [  # (op, attrs, opset, x shape, tolerance, values fed in turn)
    ("Reshape", {}, 14, (7, 15), None, [[15, 7], [5, 21], [-1, 3], [0, 15], [105]]),
    ("ReduceSum", {"keepdims": 0}, 13, (7, 15), (1e-5, 1e-5), [[0], [1], [-1], [0, 1]]),
    ("Trilu", {}, 14, (7, 15), None, [0, 2, -3, 20]),
    ("Expand", {}, 13, (7, 1), None, [[7, 5], [2, 7, 1], [7, 1]]),
    ("Unsqueeze", {}, 13, (7, 15), None, [[0], [-1], [1, 3]]),
]


@pytest.mark.parametrize("op,attrs,opset,shape,tol,values", FED_SHAPE_VALUES,
                         ids=[v[0] for v in FED_SHAPE_VALUES])
def test_fed_shape_values_change_between_runs(op, attrs, opset, shape, tol, values, rng,
                                              make_model):
    """A shape-time input fed at run time may change, with or without its own shape changing:
    each run must plan with the value it was given, never reuse a plan made for another."""
    v_shape = [] if np.ndim(values[0]) == 0 else ["k"]
    model = make_model(op, [("x", np.float32, shape), ("v", np.int64, v_shape)], ["y"], attrs,
                       opset)
    x = rng.standard_normal(shape).astype(np.float32)
    with ember.Engine(model) as eng:
        for _ in range(2):  # and again, now that every plan is cached
            for v in values:
                feeds = {"x": x, "v": np.asarray(v, np.int64)}
                assert_same(eng.run(feeds)["y"], expected(model, feeds)["y"], tol, f"{op} {v}")


# ---- errors ---------------------------------------------------------------------------------

def _add_model(make_model, shape=(7, 769)):
    return make_model("Add", [("lhs", np.float32, shape), ("rhs", np.float32, shape)], ["sum"])


def test_gather_index_out_of_range(make_model, rng):
    model = make_model("Gather", [("data", np.float32, (5, 3)), ("idx", np.int64, (2,))], ["y"],
                       {"axis": 0})
    data = rng.standard_normal((5, 3)).astype(np.float32)
    for kernels in ("reference", "auto"):
        with ember.Engine(model, kernels=kernels) as eng:
            for bad in (7, -6):
                with pytest.raises(ember.InputError, match=str(bad)):
                    eng.run({"data": data, "idx": np.array([1, bad], np.int64)})
            # the engine is still usable afterwards
            got = eng.run({"data": data, "idx": np.array([4, -5], np.int64)})["y"]
            np.testing.assert_array_equal(got, data[[4, 0]])


def test_feed_wrong_dtype(make_model):
    with ember.Engine(_add_model(make_model)) as eng:
        a = np.ones((7, 769), np.float32)
        with pytest.raises(ember.InputError) as e:
            eng.run({"lhs": a, "rhs": np.ones((7, 769), np.float64)})
        msg = str(e.value)
        assert "rhs" in msg and "float32" in msg and "float64" in msg, msg
        with pytest.raises(ember.InputError, match="lhs"):
            eng.run({"lhs": np.ones((7, 769), np.int64), "rhs": a})


def test_feed_wrong_shape(make_model):
    with ember.Engine(_add_model(make_model)) as eng:
        a = np.ones((7, 769), np.float32)
        with pytest.raises(ember.InputError) as e:
            eng.run({"lhs": a, "rhs": np.ones((7, 768), np.float32)})
        msg = str(e.value)
        assert "rhs" in msg and "769" in msg and "768" in msg, msg
        with pytest.raises(ember.InputError, match="lhs"):  # wrong rank
            eng.run({"lhs": np.ones((7, 769, 1), np.float32), "rhs": a})


def test_feed_missing_or_unknown(make_model):
    with ember.Engine(_add_model(make_model)) as eng:
        a = np.ones((7, 769), np.float32)
        with pytest.raises(ember.InputError, match="rhs"):
            eng.run({"lhs": a})
        with pytest.raises(ember.InputError, match="extra_feed"):
            eng.run({"lhs": a, "rhs": a, "extra_feed": a})
        with pytest.raises(ember.InputError, match="no_such_output"):
            eng.run({"lhs": a, "rhs": a}, outputs=["no_such_output"])


def test_symbolic_dims_must_agree(make_model):
    """Two inputs sharing the symbol N must get the same size for it, even where the sizes
    would broadcast (3 against 1)."""
    model = make_model("Add", [("a", np.float32, ("N", 5)), ("b", np.float32, ("N", 5))], ["y"])
    with ember.Engine(model) as eng:
        a = np.ones((3, 5), np.float32)
        assert eng.run({"a": a, "b": a})["y"].shape == (3, 5)
        for b in (np.ones((4, 5), np.float32), np.ones((1, 5), np.float32)):
            with pytest.raises(ember.InputError, match="N"):
                eng.run({"a": a, "b": b})


def test_broadcast_mismatch_at_run_time(make_model):
    model = make_model("Add", [("a", np.float32, ("N",)), ("b", np.float32, ("M",))], ["y"])
    with ember.Engine(model) as eng:
        with pytest.raises(ember.EmberError, match="Add"):
            eng.run({"a": np.ones(3, np.float32), "b": np.ones(4, np.float32)})
        got = eng.run({"a": np.ones(3, np.float32), "b": np.ones(1, np.float32)})["y"]
        assert got.shape == (3,)


def test_reshape_incompatible(make_model):
    # Known input shape: refused when the engine is built or first run, never a crash.
    model = make_model("Reshape", [("x", np.float32, (7, 3)), "shape"], ["y"],
                       initializers={"shape": np.array([5, -1], np.int64)})
    with pytest.raises(ember.EmberError, match="Reshape"):
        with ember.Engine(model) as eng:
            eng.run({"x": np.ones((7, 3), np.float32)})
    # Symbolic input shape: refused at run time for the bad size only.
    model = make_model("Reshape", [("x", np.float32, ("N", 3)), "shape"], ["y"],
                       initializers={"shape": np.array([5, -1], np.int64)})
    with ember.Engine(model) as eng:
        with pytest.raises(ember.EmberError, match="Reshape"):
            eng.run({"x": np.ones((7, 3), np.float32)})
        assert eng.run({"x": np.ones((5, 3), np.float32)})["y"].shape == (5, 3)


def test_memory_limit_too_small(make_model):
    model = make_model("MatMul", [("a", np.float32, ("N", "N")), ("b", np.float32, ("N", "N"))],
                       ["y"])
    with ember.Engine(model, memory_limit=64 * 1024) as eng:
        small = np.ones((8, 8), np.float32)
        np.testing.assert_array_equal(eng.run({"a": small, "b": small})["y"], small @ small)
        big = np.ones((769, 769), np.float32)  # 2.4 MB output
        with pytest.raises(ember.InputError, match="memory"):
            eng.run({"a": big, "b": big})


def test_closed_engine(make_model):
    eng = ember.Engine(_add_model(make_model))
    eng.close()
    with pytest.raises(ember.EmberError):
        eng.run({"a": np.ones((7, 769), np.float32), "b": np.ones((7, 769), np.float32)})
