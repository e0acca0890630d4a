"""The vocabulary of the op case table (tests/ops/cases.py): inputs, generators, memory
layouts, tolerance classes and the Case row itself."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from onnx import TensorProto


# ---- inputs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class In:
    """One node input.

    gen: how values are drawn (see generate()). const: an initializer (baked into the model)
    rather than a feed. value: a fixed value (C(): an initializer; F(): a feed). layout: how
    a feed is laid out in memory: "c" contiguous, "t" a transposed view (last two axes), "s"
    every other element of the last axis, "r" the last axis reversed (negative strides), "b"
    a read-only np.broadcast_to view with stride 0 along the last axis (values repeat on it).
    """

    shape: tuple = ()
    dtype: str = "float32"
    gen: Any = "normal"
    const: bool = False
    value: Any = None
    layout: str = "c"

    @property
    def is_const(self) -> bool:
        return self.const


def C(value, dtype="int64") -> In:
    """A fixed-value initializer: the shape-time inputs (shape, starts, axes, sizes, k)."""
    arr = np.asarray(value, dtype=dtype)
    return In(arr.shape, dtype, "fixed", True, arr)


def F(value, dtype="int64") -> In:
    """A fixed value fed at run time: a shape-time input that the model leaves to the caller
    (ONNX allows it; the engine must plan with the fed value)."""
    arr = np.asarray(value, dtype=dtype)
    return In(arr.shape, dtype, "fixed", False, arr)


ABSENT = None  # an omitted optional input ("" in the node)

# Generators. Floats never come out zero except where zeros are the point ("small_int" for
# ties, "special" for IEEE edge values, "uniform" ranges that include 0); ints cover negatives
# unless the op needs >= 0.
GENERATORS = ("normal", "pos", "nonzero", "unit", "wide", "small_int", "special", "masked", "bool",
              "fixed")


def generate(rng: np.random.Generator, spec: In) -> np.ndarray:
    """Fresh random values for `spec`, in its dtype and shape (contiguous)."""
    if spec.value is not None:
        return np.array(spec.value, dtype=spec.dtype)
    shape, dtype, gen = spec.shape, np.dtype(_np_dtype(spec.dtype)), spec.gen
    kind = gen[0] if isinstance(gen, tuple) else gen
    if dtype == np.bool_ or kind == "bool":
        bits = rng.random(shape) < 0.5
        return bits if dtype == np.bool_ else bits.astype(dtype)
    is_int = np.issubdtype(dtype, np.integer)
    if kind == "int":  # ("int", lo, hi): integers in [lo, hi)
        x = rng.integers(gen[1], gen[2], size=shape)
    elif kind == "uniform":  # ("uniform", lo, hi)
        x = rng.uniform(gen[1], gen[2], size=shape)
    elif kind == "normal":
        x = rng.integers(-9, 10, size=shape) if is_int else rng.standard_normal(shape)
    elif kind == "pos":
        x = rng.integers(1, 10, size=shape) if is_int else rng.uniform(0.1, 4.0, size=shape)
    elif kind == "nonzero":
        mag = rng.integers(1, 10, size=shape) if is_int else rng.uniform(0.5, 2.0, size=shape)
        x = np.where(rng.random(shape) < 0.5, -mag, mag)
    elif kind == "unit":
        x = rng.uniform(-1.0, 1.0, size=shape)
    elif kind == "wide":
        x = rng.uniform(-20.0, 20.0, size=shape)
    elif kind == "small_int":  # ties and zeros on purpose (comparisons, Min/Max, Cast to bool)
        x = rng.integers(-3, 4, size=shape)
    elif kind == "special":  # IEEE edge values among normal ones: NaN, +-inf, +-0
        x = rng.standard_normal(shape)
        pick = rng.random(shape)
        x = np.where(pick < 0.05, np.nan, x)
        x = np.where((pick >= 0.05) & (pick < 0.10), np.inf, x)
        x = np.where((pick >= 0.10) & (pick < 0.15), -np.inf, x)
        x = np.where((pick >= 0.15) & (pick < 0.18), 0.0, x)
        x = np.where((pick >= 0.18) & (pick < 0.21), -0.0, x)
    elif kind == "masked":  # an attention mask: -inf in ~40% of places, never a whole row
        x = rng.standard_normal(shape)
        x = np.where(rng.random(shape) < 0.4, -np.inf, x)
        if x.ndim:
            x[..., 0] = rng.standard_normal(shape[:-1])
    else:
        raise ValueError(f"unknown generator {gen!r}")
    x = np.asarray(x)
    if is_int:
        info = np.iinfo(dtype)
        assert x.min(initial=0) >= info.min and x.max(initial=0) <= info.max, (gen, dtype)
    return x.astype(dtype)


def lay_out(rng: np.random.Generator, spec: In) -> np.ndarray:
    """generate() in the memory layout spec.layout asks for (a view sharing a bigger buffer)."""
    if spec.layout == "b":
        assert len(spec.shape) >= 1
        row = generate(rng, dataclasses.replace(spec, shape=spec.shape[:-1] + (1,), layout="c"))
        return np.broadcast_to(row, spec.shape)
    x = generate(rng, spec)
    if spec.layout == "c":
        return x
    if spec.layout == "t":
        assert x.ndim >= 2, "a transposed view needs rank >= 2"
        view = np.ascontiguousarray(np.swapaxes(x, -1, -2)).swapaxes(-1, -2)
    elif spec.layout == "s":
        assert x.ndim >= 1
        big = np.empty(x.shape[:-1] + (2 * x.shape[-1],), x.dtype)
        big[...] = generate(rng, dataclasses.replace(spec, shape=big.shape, layout="c"))
        big[..., ::2] = x
        view = big[..., ::2]
    elif spec.layout == "r":
        assert x.ndim >= 1
        view = np.ascontiguousarray(x[..., ::-1])[..., ::-1]
    else:
        raise ValueError(f"unknown layout {spec.layout!r}")
    assert not view.flags.c_contiguous or view.size <= 1
    np.testing.assert_array_equal(view, x)
    return view


def onnx_type(name: str) -> int:
    """numpy dtype name -> onnx TensorProto.DataType (for Cast's `to`)."""
    return {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16,
            "bfloat16": TensorProto.BFLOAT16, "float64": TensorProto.DOUBLE,
            "int8": TensorProto.INT8, "uint8": TensorProto.UINT8, "int16": TensorProto.INT16,
            "int32": TensorProto.INT32, "int64": TensorProto.INT64,
            "bool": TensorProto.BOOL}[name]


def _np_dtype(name: str):
    if name == "bfloat16":
        import ml_dtypes
        return ml_dtypes.bfloat16
    return np.dtype(name)


# ---- cases --------------------------------------------------------------------------------

# Tolerance classes: (rtol, atol) by output dtype. Ints and bools always compare exactly.
TOLERANCES = {
    # one rounding per element (Add, Cast, Relu...): bit-exact in practice
    "exact": {"float32": (1e-6, 1e-7), "float16": (1e-3, 1e-3), "bfloat16": (1e-2, 1e-2),
              "float64": (1e-12, 1e-14)},
    # data movement: must be bit-identical
    "bits": {},
    # libm-style functions (exp, erf, tanh, sin...), which kernels may approximate
    "trans": {"float32": (2e-5, 2e-6), "float16": (2e-3, 2e-3), "bfloat16": (2e-2, 2e-2),
              "float64": (1e-10, 1e-12)},
    # accumulations whose summation order is the kernel's choice (MatMul, reductions, norms)
    "accum": {"float32": (1e-4, 1e-4), "float16": (1e-2, 1e-2), "bfloat16": (5e-2, 5e-2),
              "float64": (1e-10, 1e-10)},
}


@dataclass
class Case:
    op: str
    attrs: dict = field(default_factory=dict)
    inputs: list = field(default_factory=list)  # In, (shape, dtype, gen) tuples, or ABSENT
    opset: int = 18
    tol: Any = "exact"  # a TOLERANCES key or (rtol, atol)
    id: str = ""
    outputs: int = 1  # how many node outputs to ask for
    out_names: tuple = ()  # output slots; "" leaves an optional output unused

    def __post_init__(self):
        self.inputs = [x if x is None or isinstance(x, In) else In(*x) for x in self.inputs]

    def tolerance(self, dtype: str) -> tuple[float, float] | None:
        """(rtol, atol) for an output of this dtype; None means exact equality."""
        if isinstance(self.tol, tuple):
            return self.tol if dtype in ("float32", "float16", "bfloat16", "float64") else None
        return TOLERANCES[self.tol].get(dtype)
