"""Hostile models: mutated ONNX models and feeds never crash, hang or exhaust memory.

Small valid models covering the shape and index ops (a BERT-like block, a graph of constant
shape parameters, a graph whose shape parameters are fed) are mutated structurally (extreme
attribute values, shape initializers with huge or negative entries, wrong dtypes and ranks,
missing or extra inputs and outputs, swapped ops) and byte by byte (random flips of the
serialized model, with a fixed seed printed on failure). Every variant is loaded and run in a
child process under RLIMIT_AS, many variants per child; one that kills the child, hangs, or
raises anything but a typed ember error fails the test, and the child restarts after it.

Pass: the variant runs (and where onnx's reference evaluator runs it too, the outputs agree), or
raises ModelError / InputError / UnsupportedOpError under a memory_limit that ember must enforce
before allocating. Fail: any other exception type (users must be able to catch EmberError
alone), an InternalError (a bug by its own definition), an allocation that failed (no size
check guarded it), a signal, or a hang.
"""
from __future__ import annotations

import copy
import json
import os
import pickle
import queue
import random
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import ember

pytestmark = pytest.mark.timeout(300)

SEED = int(os.environ.get("EMBER_FUZZ_SEED", "20240917"))
BYTE_VARIANTS = 600
RLIMIT_AS = 4 << 30             # address space of the child
ENGINE_MEMORY_LIMIT = 1 << 30   # Engine(memory_limit=): ember must refuse more before allocating
VARIANT_TIMEOUT_S = 20.0        # a variant that takes longer hangs
KERNELS = os.environ.get("EMBER_FUZZ_KERNELS", "auto")  # "reference": fuzz the references

I64_EXTREMES = [-2**63, -2**62, -2**31 - 1, -2**31, -1, 0, 2**31, 2**40, 2**62, 2**63 - 1]


# ---- base models --------------------------------------------------------------------------

def _h():
    from onnx import helper, numpy_helper
    return helper, numpy_helper


def _model(nodes, inputs, outputs, inits, opset=18):
    from onnx import TensorProto
    helper, numpy_helper = _h()
    g = helper.make_graph(
        nodes, "hostile",
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(np.dtype(dt)), shape)
         for n, dt, shape in inputs],
        [helper.make_tensor_value_info(o, TensorProto.UNDEFINED, None) for o in outputs],
        initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)],
                             producer_name="ember-hostile", ir_version=8)


def bert_block():
    """A BERT-like block: embeddings + positions (Shape/Gather/Range), LayerNorm, attention
    with Reshape/Transpose/MatMul/Softmax, a causal mask (Concat/ConstantOfShape/Trilu/Cast/
    Where), padding mask (Cast/Unsqueeze/Sub/Mul), Split/Concat, Slice, CumSum, Expand,
    GatherND and ReduceMean."""
    from onnx import TensorProto
    helper, numpy_helper = _h()
    r = np.random.default_rng(0)
    H, V, P = 8, 16, 12
    f = lambda *s: r.standard_normal(s).astype(np.float32)  # noqa: E731
    i64 = lambda v: np.array(v, np.int64)  # noqa: E731
    inits = {
        "W_tok": f(V, H), "W_pos": f(P, H), "gamma": f(H), "beta": f(H),
        "Wq": f(H, H), "Wk": f(H, H), "Wv": f(H, H), "bias": f(H),
        "one_idx": i64(1), "zero": i64(0), "one": i64(1), "axes0": i64([0]), "axes12": i64([1, 2]),
        "shape4": i64([0, 0, 2, 4]), "shape3": i64([0, 0, -1]), "tri_k": i64(0),
        "scale": np.array(2.0, np.float32), "neg_big": np.array(-1e4, np.float32),
        "one_f": np.array(1.0, np.float32), "split_sizes": i64([4, 4]),
        "sl_starts": i64([0]), "sl_ends": i64([2**62]), "sl_axes": i64([1]), "sl_steps": i64([1]),
        "cum_axis": i64(1), "gnd_idx": i64([[0, 0]]), "rm_axes": i64([-1]),
    }
    N = helper.make_node
    nodes = [
        N("Gather", ["W_tok", "ids"], ["tok"], name="emb"),
        N("Shape", ["ids"], ["ids_shape"], name="shape"),
        N("Gather", ["ids_shape", "one_idx"], ["seq"], name="seq", axis=0),
        N("Range", ["zero", "seq", "one"], ["pos"], name="range"),
        N("Gather", ["W_pos", "pos"], ["pe"], name="pos_emb"),
        N("Add", ["tok", "pe"], ["x0"], name="add0"),
        N("LayerNormalization", ["x0", "gamma", "beta"], ["x"], name="ln", axis=-1, epsilon=1e-5),
        N("MatMul", ["x", "Wq"], ["q"], name="q"),
        N("MatMul", ["x", "Wk"], ["k"], name="k"),
        N("MatMul", ["x", "Wv"], ["v"], name="v"),
        N("Reshape", ["q", "shape4"], ["q4"], name="q_reshape"),
        N("Transpose", ["q4"], ["qt"], name="q_t", perm=[0, 2, 1, 3]),
        N("Reshape", ["k", "shape4"], ["k4"], name="k_reshape"),
        N("Transpose", ["k4"], ["kt"], name="k_t", perm=[0, 2, 3, 1]),
        N("Reshape", ["v", "shape4"], ["v4"], name="v_reshape"),
        N("Transpose", ["v4"], ["vt"], name="v_t", perm=[0, 2, 1, 3]),
        N("MatMul", ["qt", "kt"], ["s0"], name="scores"),
        N("Div", ["s0", "scale"], ["s1"], name="scale_div"),
        N("Unsqueeze", ["seq", "axes0"], ["seq1"], name="seq1"),
        N("Concat", ["seq1", "seq1"], ["ss"], name="ss", axis=0),
        N("ConstantOfShape", ["ss"], ["ones"], name="ones",
          value=numpy_helper.from_array(np.array([1], np.int64))),
        N("Trilu", ["ones", "tri_k"], ["tri"], name="tril", upper=0),
        N("Cast", ["tri"], ["trib"], name="tri_bool", to=TensorProto.BOOL),
        N("Where", ["trib", "s1", "neg_big"], ["s2"], name="causal"),
        N("Cast", ["mask"], ["mf"], name="mask_f", to=TensorProto.FLOAT),
        N("Unsqueeze", ["mf", "axes12"], ["m4"], name="mask4"),
        N("Sub", ["one_f", "m4"], ["inv"], name="mask_inv"),
        N("Mul", ["inv", "neg_big"], ["madd"], name="mask_add"),
        N("Add", ["s2", "madd"], ["s3"], name="masked"),
        N("Softmax", ["s3"], ["p"], name="softmax", axis=-1),
        N("MatMul", ["p", "vt"], ["c"], name="ctx"),
        N("Transpose", ["c"], ["ct"], name="ctx_t", perm=[0, 2, 1, 3]),
        N("Reshape", ["ct", "shape3"], ["c3"], name="ctx_reshape"),
        N("Split", ["c3", "split_sizes"], ["c_a", "c_b"], name="split", axis=2),
        N("Concat", ["c_b", "c_a"], ["c4"], name="swap", axis=2),
        N("Slice", ["c4", "sl_starts", "sl_ends", "sl_axes", "sl_steps"], ["c5"], name="slice"),
        N("CumSum", ["c5", "cum_axis"], ["c6"], name="cumsum"),
        N("Shape", ["c6"], ["c6_shape"], name="c6_shape"),
        N("Expand", ["bias", "c6_shape"], ["bexp"], name="expand"),
        N("Add", ["c6", "bexp"], ["out"], name="add_bias"),
        N("GatherND", ["out", "gnd_idx"], ["row"], name="gather_nd"),
        N("ReduceMean", ["out", "rm_axes"], ["mean"], name="reduce_mean", keepdims=1),
    ]
    ids = np.array([[3, 7, 1, 0], [2, 5, 9, 15]], np.int64)
    feeds = {"ids": ids, "mask": np.array([[1, 1, 1, 0], [1, 1, 1, 1]], np.int64)}
    model = _model(nodes, [("ids", np.int64, ["batch", "seq"]), ("mask", np.int64, ["batch", "seq"])],
                   ["out", "row", "mean"], inits)
    return model, feeds


def const_shapes():
    """Shape parameters as initializers: folded at load time, where a bad value must be a
    ModelError before anything is allocated."""
    from onnx import TensorProto
    helper, numpy_helper = _h()
    i64 = lambda v: np.array(v, np.int64)  # noqa: E731
    inits = {
        "r_start": i64(0), "r_limit": i64(6), "r_delta": i64(1), "rs_shape": i64([2, 3]),
        "cos_shape": i64([2, 3]), "exp_shape": i64([2, 2, 3]), "tri_k": i64(1),
        "sl_starts": i64([0, 0]), "sl_ends": i64([2, 3]), "sl_axes": i64([1, 2]),
        "sl_steps": i64([1, 1]), "split": i64([1, 1]), "cum_axis": i64(2), "g_idx": i64([1, 0, -1]),
        "gnd_idx": i64([[0, 1], [1, 0]]),
        "unsq_axes": i64([0]), "cond": np.array([[True, False], [False, True], [True, True]]),
        "fr_start": np.array(0.5, np.float32), "fr_limit": np.array(3.5, np.float32),
        "fr_delta": np.array(1.0, np.float32),
    }
    N = helper.make_node
    nodes = [
        N("Range", ["r_start", "r_limit", "r_delta"], ["r"], name="range"),
        N("Cast", ["r"], ["rf"], name="cast", to=TensorProto.FLOAT),
        N("Reshape", ["rf", "rs_shape"], ["rr"], name="reshape"),
        N("Add", ["x", "rr"], ["a"], name="add"),
        N("ConstantOfShape", ["cos_shape"], ["c"], name="const_of_shape",
          value=numpy_helper.from_array(np.array([1.0], np.float32))),
        N("Mul", ["a", "c"], ["b"], name="mul"),
        N("Expand", ["b", "exp_shape"], ["e"], name="expand"),
        N("Trilu", ["e", "tri_k"], ["t"], name="trilu", upper=1),
        N("Slice", ["t", "sl_starts", "sl_ends", "sl_axes", "sl_steps"], ["sl"], name="slice"),
        N("Split", ["sl", "split"], ["s1", "s2"], name="split", axis=0),
        N("Concat", ["s2", "s1"], ["cc"], name="concat", axis=0),
        N("CumSum", ["cc", "cum_axis"], ["cs"], name="cumsum", exclusive=0, reverse=0),
        N("Gather", ["cs", "g_idx"], ["g"], name="gather", axis=1),
        N("GatherND", ["g", "gnd_idx"], ["gn"], name="gather_nd", batch_dims=0),
        N("Unsqueeze", ["gn", "unsq_axes"], ["u"], name="unsqueeze"),
        N("Squeeze", ["u", "unsq_axes"], ["sq"], name="squeeze"),
        N("Transpose", ["sq"], ["tr"], name="transpose", perm=[1, 0]),
        N("Flatten", ["tr"], ["fl"], name="flatten", axis=1),
        N("Where", ["cond", "tr", "fl"], ["w"], name="where"),
        N("Softmax", ["w"], ["out"], name="softmax", axis=1),
        N("Range", ["fr_start", "fr_limit", "fr_delta"], ["fr"], name="range_f"),
        N("ReduceSum", ["fr"], ["frs"], name="reduce_sum", keepdims=0),
        N("Add", ["out", "frs"], ["out2"], name="add_frs"),
    ]
    feeds = {"x": np.arange(6, dtype=np.float32).reshape(2, 3) / 7}
    return _model(nodes, [("x", np.float32, [2, 3])], ["out2"], inits), feeds


def fed_shapes():
    """Shape parameters fed at run time: read by shape inference at plan time."""
    helper, _ = _h()
    i64 = lambda v: np.array(v, np.int64)  # noqa: E731
    N = helper.make_node
    inits = {"zero": i64(0), "one": i64(1)}
    nodes = [
        N("Range", ["zero", "n", "one"], ["r"], name="range"),
        N("ConstantOfShape", ["shp"], ["c"], name="const_of_shape"),
        N("Reshape", ["x", "shp"], ["xr"], name="reshape"),
        N("Expand", ["x", "shp"], ["xe"], name="expand"),
        N("Trilu", ["x", "k"], ["t"], name="trilu"),
        N("CumSum", ["x", "axis"], ["cs"], name="cumsum"),
        N("Gather", ["x", "idx"], ["g"], name="gather", axis=1),
        N("Slice", ["x", "st", "en", "ax", "sp"], ["sl"], name="slice"),
        N("Split", ["x", "split"], ["s1", "s2"], name="split", axis=1),
        N("GatherND", ["x", "gidx"], ["gn"], name="gather_nd"),
        N("Div", ["xi", "yi"], ["q"], name="int_div"),
        N("Reshape", ["xz", "zshp"], ["xzr"], name="reshape_allowzero", allowzero=1),
    ]
    inputs = [("x", np.float32, [2, 3]), ("n", np.int64, []), ("shp", np.int64, [2]),
              ("k", np.int64, []), ("axis", np.int64, []), ("idx", np.int64, [2]),
              ("st", np.int64, [1]), ("en", np.int64, [1]), ("ax", np.int64, [1]),
              ("sp", np.int64, [1]), ("split", np.int64, [2]), ("gidx", np.int64, [None, None]),
              ("xi", np.int64, [3]), ("yi", np.int64, [3]), ("xz", np.float32, [None, 3]),
              ("zshp", np.int64, [3])]
    feeds = {"x": np.arange(6, dtype=np.float32).reshape(2, 3), "n": i64(5), "shp": i64([2, 3]),
             "k": i64(0), "axis": i64(1), "idx": i64([2, -1]), "st": i64([0]), "en": i64([2]),
             "ax": i64([1]), "sp": i64([1]), "split": i64([1, 2]), "gidx": i64([[1, 2], [0, 0]]),
             "xi": i64([7, -8, 9]), "yi": i64([-1, 2, -3]), "xz": np.zeros((0, 3), np.float32),
             "zshp": i64([3, 0, 5])}
    outs = ["r", "c", "xr", "xe", "t", "cs", "g", "sl", "s1", "s2", "gn", "q", "xzr"]
    return _model(nodes, inputs, outs, inits), feeds


def legacy_opset11():
    """Opset 11 forms the importer rewrites (axes/split attributes, Softmax's 2-D coercion,
    Dropout's ratio attribute) plus Gemm, Clip, reductions, IsInf and unary maths."""
    from onnx import TensorProto
    helper, _ = _h()
    r = np.random.default_rng(1)
    N = helper.make_node
    inits = {"w": r.standard_normal((4, 5)).astype(np.float32),
             "bias": r.standard_normal(5).astype(np.float32),
             "lo": np.array(-1.0, np.float32), "hi": np.array(1.0, np.float32),
             "two": np.array(2.0, np.float32)}
    nodes = [
        N("Unsqueeze", ["x"], ["u"], name="unsqueeze", axes=[0]),
        N("Squeeze", ["u"], ["sq"], name="squeeze", axes=[0]),
        N("Flatten", ["sq"], ["fl"], name="flatten", axis=2),
        N("Gemm", ["fl", "w", "bias"], ["g"], name="gemm", alpha=0.5, beta=2.0, transA=0, transB=0),
        N("Split", ["g"], ["g1", "g2"], name="split", axis=1, split=[2, 3]),
        N("Concat", ["g2", "g1"], ["gc"], name="concat", axis=1),
        N("Clip", ["gc", "lo", "hi"], ["cl"], name="clip"),
        N("Softmax", ["cl"], ["sm"], name="softmax", axis=1),
        N("LogSoftmax", ["cl"], ["lsm"], name="log_softmax", axis=-1),
        N("ReduceSum", ["lsm"], ["rs"], name="reduce_sum", axes=[1], keepdims=1),
        N("ReduceMean", ["sm"], ["rm"], name="reduce_mean", axes=[0], keepdims=0),
        N("ReduceMax", ["cl"], ["rx"], name="reduce_max", axes=[1], keepdims=0),
        N("Dropout", ["rx"], ["dr"], name="dropout", ratio=0.3),
        N("IsInf", ["rs"], ["inf"], name="is_inf", detect_positive=1, detect_negative=0),
        N("Abs", ["dr"], ["ab"], name="abs"),
        N("Sqrt", ["ab"], ["sr"], name="sqrt"),
        N("Pow", ["sr", "two"], ["pw"], name="pow"),
        N("Transpose", ["sm"], ["tr"], name="transpose", perm=[1, 0]),
        N("MatMul", ["tr", "g"], ["mm"], name="matmul"),
        N("Cast", ["rx"], ["rxi"], name="cast", to=TensorProto.INT64),
        N("Equal", ["rxi", "rxi"], ["eq"], name="equal"),
        N("Not", ["eq"], ["neq"], name="not"),
    ]
    feeds = {"x": r.standard_normal((2, 3, 4)).astype(np.float32)}
    model = _model(nodes, [("x", np.float32, [2, 3, 4])], ["mm", "rm", "pw", "inf", "neq"], inits,
                   opset=11)
    return model, feeds


BASES = {"bert": bert_block, "const": const_shapes, "fed": fed_shapes, "opset11": legacy_opset11}


# ---- structural mutations -----------------------------------------------------------------

def _set_attr(node, name, value, attr_type=None):
    from onnx import helper
    for k, a in enumerate(node.attribute):
        if a.name == name:
            del node.attribute[k]
            break
    node.attribute.append(helper.make_attribute(name, value, attr_type=attr_type))


def _attr_mutations(model):
    """Every int/ints/float attribute of every node (and every int attribute its schema allows
    but the node leaves out) set to extreme values."""
    import onnx
    from onnx import AttributeProto, helper, numpy_helper

    opset = model.opset_import[0].version
    for ni, node in enumerate(model.graph.node):
        schema = onnx.defs.get_schema(node.op_type, opset, "")
        present = {a.name: a for a in node.attribute}
        for name, spec in schema.attributes.items():
            a = present.get(name)
            t = int(spec.type)
            values = []
            if t == AttributeProto.INT:
                values = [v for v in I64_EXTREMES + [2, 3, 8, 17] if a is None or v != a.i]
            elif t == AttributeProto.INTS:
                cur = list(a.ints) if a is not None else [0, 1]
                values = [[v] * len(cur) for v in (-2**63, -2**62, -1, 2**62)]
                values += [cur + cur[:1], cur[:-1], [], cur[::-1] + [len(cur)], [cur[0]] * len(cur)]
            elif t == AttributeProto.FLOAT:
                values = [float("nan"), float("inf"), -1e38]
            elif t == AttributeProto.TENSOR:
                values = [numpy_helper.from_array(np.array([], np.float32)),
                          numpy_helper.from_array(np.ones((2, 2), np.float32)),
                          numpy_helper.from_array(np.array(7, np.int64)),
                          numpy_helper.from_array(np.array([1.5], np.float64))]
            elif t == AttributeProto.STRING:
                values = [b"", b"\xff\xfe", b"x" * 300]
            for k, v in enumerate(values):
                m = copy.deepcopy(model)
                _set_attr(m.graph.node[ni], name, v, t)
                yield f"attr/{node.name}.{name}#{k}={_short(v)}", m
        # An attribute the op does not have.
        m = copy.deepcopy(model)
        m.graph.node[ni].attribute.append(helper.make_attribute("bogus", 1))
        yield f"attr/{node.name}.bogus", m


def _short(v):
    s = repr(v) if not hasattr(v, "dims") else f"tensor{list(v.dims)}"
    return s if len(s) < 40 else s[:37] + "..."


def _init_mutations(model):
    """Initializers with extreme entries, the wrong dtype, rank or size."""
    from onnx import numpy_helper

    for ii, t in enumerate(model.graph.initializer):
        arr = numpy_helper.to_array(t)
        forms = []
        if arr.dtype == np.int64 and arr.size <= 8:
            for j in range(arr.size):
                for v in I64_EXTREMES:
                    a = arr.copy().reshape(-1)
                    if a[j] == v:
                        continue
                    a[j] = v
                    forms.append((f"[{j}]={v}", a.reshape(arr.shape)))
            forms.append(("all=2^31", np.full(arr.shape, 2**31, np.int64)))
            if arr.size >= 2:  # an empty shape with a huge dim: numel 0 hides the overflow
                forms.append(("0,2^62", np.array([0] + [2**62] * (arr.size - 1)).reshape(arr.shape)))
            forms.append(("ones_x100", np.ones(100, np.int64)))   # rank 100 shapes
            forms.append(("all=-2", np.full(arr.shape, -2, np.int64)))
            forms.append(("float", arr.astype(np.float32)))
            forms.append(("int32", arr.astype(np.int32)))
            forms.append(("bool", arr.astype(bool)))
        else:
            forms.append(("float64", arr.astype(np.float64)))
            forms.append(("int64", arr.astype(np.int64)))
        forms.append(("empty", np.zeros((0,), arr.dtype)))
        forms.append(("rank0", arr.reshape(-1)[:1].reshape(()) if arr.size
                      else np.zeros((), arr.dtype)))
        forms.append(("rank+1", arr[None]))
        forms.append(("rank+2", arr[None, None]))
        forms.append(("twice", np.concatenate([arr.reshape(-1)] * 2)))
        forms.append(("empty2d", np.zeros((0, 3), arr.dtype)))
        for what, a in forms:
            m = copy.deepcopy(model)
            m.graph.initializer[ii].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(a), t.name))
            yield f"init/{t.name}:{what}", m
        # Raw data that does not match the declared dims; dims that overflow when multiplied.
        m = copy.deepcopy(model)
        m.graph.initializer[ii].dims[:] = [2**31, 2**31, 2**31]
        yield f"init/{t.name}:dims2^93", m
        m = copy.deepcopy(model)
        m.graph.initializer[ii].dims[:] = [0, 2**47]
        yield f"init/{t.name}:dims0x2^47", m


def _node_mutations(model):
    """Nodes with missing, extra, absent or swapped inputs and outputs, or another op type."""
    ops = sorted({n.op_type for n in model.graph.node})
    for ni, node in enumerate(model.graph.node):
        def variant(tag, fn):
            m = copy.deepcopy(model)
            fn(m.graph.node[ni])
            return f"node/{node.name}:{tag}", m

        yield variant("drop_last_input", lambda n: n.input.pop())
        yield variant("no_inputs", lambda n: n.input[:] and n.ClearField("input"))
        yield variant("extra_input", lambda n: n.input.append(n.input[0]))
        yield variant("many_inputs", lambda n: n.input.extend([n.input[0]] * 9))
        yield variant("absent_input0", lambda n: n.input.__setitem__(0, ""))
        yield variant("reversed_inputs", lambda n: n.input.reverse())
        yield variant("extra_output", lambda n: n.output.append(f"{n.name}_extra"))
        yield variant("no_outputs", lambda n: n.ClearField("output"))
        yield variant("absent_output", lambda n: n.output.__setitem__(0, ""))
        yield variant("foreign_domain", lambda n: setattr(n, "domain", "com.example"))
        # Another op of the same model: its inputs and attributes now make no sense.
        other = ops[(ops.index(node.op_type) + 1) % len(ops)]
        yield variant(f"op={other}", lambda n: setattr(n, "op_type", other))


def _graph_mutations(model):
    """Declared types that disagree with the nodes, outputs that are inputs or nowhere, cycles,
    two producers of one value, graphs with no nodes or outputs, clashing initializer names."""
    from onnx import TensorProto

    def variant(tag, fn):
        m = copy.deepcopy(model)
        fn(m.graph)
        return f"graph/{tag}", m

    yield variant("input_declared_float", lambda g: [setattr(i.type.tensor_type, "elem_type",
                                                             TensorProto.FLOAT) for i in g.input])
    yield variant("input_declared_string", lambda g: [setattr(i.type.tensor_type, "elem_type",
                                                              TensorProto.STRING) for i in g.input])
    yield variant("input_declared_rank5", lambda g: [i.type.tensor_type.shape.dim.add()
                                                     for i in g.input for _ in range(3)])
    yield variant("output_is_input", lambda g: g.output[0].__setattr__("name", g.input[0].name))
    yield variant("output_unknown", lambda g: g.output[0].__setattr__("name", "nowhere"))
    yield variant("cycle", lambda g: g.node[0].input.append(g.node[-1].output[0]))
    yield variant("self_loop", lambda g: g.node[1].input.append(g.node[1].output[0]))
    yield variant("duplicate_producer", lambda g: g.node.append(copy.deepcopy(g.node[-1])))
    yield variant("no_nodes", lambda g: g.ClearField("node"))
    yield variant("no_outputs", lambda g: g.ClearField("output"))
    yield variant("init_shadows_input", lambda g: g.initializer.append(
        _renamed(g.initializer[0], g.input[0].name)))
    yield variant("two_inits_one_name", lambda g: g.initializer.append(copy.deepcopy(g.initializer[0])))


def _renamed(t, name):
    t = copy.deepcopy(t)
    t.name = name
    return t


def _model_level(model):
    m = copy.deepcopy(model)
    m.ClearField("opset_import")
    yield "model/no_opset", m
    for v in (1, 7, 10, 10**6, -1):
        m = copy.deepcopy(model)
        m.opset_import[0].version = v
        yield f"model/opset={v}", m
    m = copy.deepcopy(model)
    m.ir_version = 0
    yield "model/ir0", m


def _feed_mutations(feeds):
    """Wrong feeds for a model whose nodes are all valid."""
    for name, arr in feeds.items():
        def variant(tag, value):
            f = dict(feeds)
            if value is None:
                del f[name]
            else:
                f[name] = value
            return f"feed/{name}:{tag}", f

        yield variant("missing", None)
        yield variant("rank0", arr.reshape(-1)[:1].reshape(()) if arr.size else arr.reshape(-1))
        yield variant("rank+1", arr[None])
        yield variant("empty", np.zeros((0,) + arr.shape[1:], arr.dtype) if arr.ndim else arr[None][:0])
        yield variant("zeros_all_dims", np.zeros((0,) * max(arr.ndim, 1), arr.dtype))
        yield variant("float32", arr.astype(np.float32))
        yield variant("int32", arr.astype(np.int32))
        yield variant("bool", arr.astype(bool))
        yield variant("strided", np.repeat(arr, 2, axis=-1)[..., ::2] if arr.ndim else arr)
        if arr.ndim:
            # A few bytes that stand for 4 GiB: the contiguous copy must be checked. (Pickling
            # the view would copy it, so the child calls np.broadcast_to.)
            one = np.ones((1,) * arr.ndim, arr.dtype)
            shape = (1,) * (arr.ndim - 1) + (2**32 // arr.itemsize,)
            yield variant("broadcast_4GiB", ("broadcast_to", one, shape))
        if arr.dtype == np.int64:
            for v in I64_EXTREMES:
                yield variant(f"all={v}", np.full(arr.shape, v, np.int64))
                if arr.size > 1:
                    a = arr.copy().reshape(-1)
                    a[-1] = v
                    yield variant(f"last={v}", a.reshape(arr.shape))
                    a[0] = 0
                    yield variant(f"first=0,last={v}", a.reshape(arr.shape))
        if arr.ndim == 2:
            yield variant("seq300", np.ones((1, 300), arr.dtype))
            yield variant("seq20000", np.ones((1, 20000), arr.dtype))    # attention ~3 GB


def structural_variants():
    """-> [(name, model bytes, feeds)]: every structural and feed mutation of every base."""
    out = []
    for base, build in BASES.items():
        model, feeds = build()
        out.append((f"{base}/original", model.SerializeToString(), feeds))
        gens = [_attr_mutations(model), _init_mutations(model), _node_mutations(model),
                _graph_mutations(model), _model_level(model)]
        for gen in gens:
            for item in gen:
                name, m = item
                out.append((f"{base}/{name}", m.SerializeToString(), feeds))
        data = model.SerializeToString()
        for name, f in _feed_mutations(feeds):
            out.append((f"{base}/{name}", data, f))
    return out


def byte_variants(seed=SEED, count=BYTE_VARIANTS):
    """-> [(name, bytes, feeds)]: random byte changes of each serialized base model. Most
    random flips break the protobuf framing, which the parser alone refuses; so three in four
    variants are redrawn (up to 50 times) until they parse, to reach the importer and C++."""
    import onnx

    rnd = random.Random(seed)
    bases = [(b, *fn()) for b, fn in BASES.items()]
    out = []
    for i in range(count):
        base, model, feeds = bases[i % len(bases)]
        orig = model.SerializeToString()
        want_parse = i % 4 != 0
        for _ in range(50):
            data = bytearray(orig)
            nflips = rnd.choice([1, 1, 1, 2, 2, 3, 5, 8, 16, 64])
            kind = rnd.choice(["xor", "set", "bit"])
            for _ in range(nflips):
                pos = rnd.randrange(len(data))
                if kind == "xor":
                    data[pos] ^= rnd.randrange(1, 256)
                elif kind == "set":
                    data[pos] = rnd.choice([0x00, 0xff, 0x7f, 0x80, 0x01, rnd.randrange(256)])
                else:
                    data[pos] ^= 1 << rnd.randrange(8)
            if not want_parse:
                break
            try:
                onnx.ModelProto().ParseFromString(bytes(data))
                break
            except Exception:  # noqa: BLE001 - DecodeError and friends
                continue
        out.append((f"{base}/bytes#{i}:{kind}x{nflips}", bytes(data), feeds))
    return out


# ---- the child ----------------------------------------------------------------------------

_CHILD = r"""
import json, pickle, sys, traceback
import numpy as np
import ember

with open(sys.argv[1], "rb") as f:
    variants = pickle.load(f)
start, memory_limit, kernels = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]

def reference_mismatch(data, feeds, got):
    # -> a description when onnx's reference evaluator runs the variant and disagrees.
    import warnings
    import onnx
    from onnx.reference import ReferenceEvaluator
    try:
        model = onnx.load_from_string(data)
        # onnx's reference runs (Log)Softmax before opset 13 without the spec's 2-D coercion,
        # which only agrees on the last axis of 2-D inputs (all the opset-11 base has).
        if any(i.domain in ("", "ai.onnx") and i.version < 13 for i in model.opset_import) and any(
                n.op_type in ("Softmax", "LogSoftmax") and
                any(a.name == "axis" and a.i not in (1, -1) for a in n.attribute)
                for n in model.graph.node):
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want = ReferenceEvaluator(model).run(None, feeds)
    except BaseException:  # noqa: BLE001 - the reference refuses what it likes
        return None
    for (name, g), w in zip(got.items(), want):
        w = np.asarray(w)
        if g.shape != w.shape or g.dtype != w.dtype:
            return f"output {name}: {g.dtype}{list(g.shape)}, reference {w.dtype}{list(w.shape)}"
        a, b = (g, w) if g.dtype == bool else (g.astype(np.float64), w.astype(np.float64))
        if not np.allclose(a, b, rtol=1e-4, atol=1e-5, equal_nan=True):
            return f"output {name}: {g.ravel()[:6]} vs reference {w.ravel()[:6]}"
    return None

def outcome(e):
    kind = type(e).__name__
    mro = [c.__name__ for c in type(e).__mro__]
    return {"raised": kind, "ember": "EmberError" in mro, "msg": str(e)[:400]}

for i in range(start, len(variants)):
    name, data, feeds = variants[i]
    feeds = {k: np.broadcast_to(v[1], v[2]) if isinstance(v, tuple) and v[0] == "broadcast_to" else v
             for k, v in feeds.items()}
    print(json.dumps({"start": i}), flush=True)
    res = {"i": i, "raised": None}
    try:
        eng = ember.Engine(data, memory_limit=memory_limit, kernels=kernels)
        try:
            out = eng.run(feeds)
            res["shapes"] = {k: list(v.shape) for k, v in out.items()}
            res["values"] = {k: v.tolist() for k, v in out.items() if v.size <= 16}
            res["mismatch"] = reference_mismatch(data, feeds, out)
        finally:
            eng.close()
    except BaseException as e:  # noqa: BLE001 - every exception type is the point
        res.update(outcome(e))
        if not res["ember"]:
            res["trace"] = traceback.format_exc()[-1500:]
    print(json.dumps(res, default=repr), flush=True)
print(json.dumps({"done": True}), flush=True)
"""


def _limit_memory():
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (RLIMIT_AS, RLIMIT_AS))


def run_variants(variants, tmp_path, timeout_s=VARIANT_TIMEOUT_S):
    """Runs every variant in child processes under RLIMIT_AS. -> {index: result dict}, where a
    result has "raised" (None when it ran), "msg", "ember", or "died" / "hung". A child that
    dies or hangs is blamed on the variant it was running, and the next child starts after it."""
    path = tmp_path / "variants.pkl"
    with open(path, "wb") as f:
        pickle.dump(variants, f)
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(ember.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MALLOC_ARENA_MAX="2")
    results, start = {}, 0
    while start < len(variants):
        proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(_CHILD), str(path), str(start),
                                 str(ENGINE_MEMORY_LIMIT), KERNELS],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                preexec_fn=_limit_memory)
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout] + [lines.put(None)],
                         daemon=True).start()
        err: list = []
        err_reader = threading.Thread(target=lambda: err.append(proc.stderr.read()), daemon=True)
        err_reader.start()
        current, failure = None, None
        while True:
            try:  # the first line waits for imports too
                line = lines.get(timeout=timeout_s if current is not None else 3 * timeout_s)
            except queue.Empty:
                proc.kill()
                failure = {"hung": timeout_s}
                break
            if line is None:  # stdout closed: the child exited
                failure = {"died": proc.wait()}
                break
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if "done" in row:
                break
            if "start" in row:
                current = row["start"]
            else:
                results[row["i"]] = row
        proc.wait()
        if failure is None:
            break
        err_reader.join(timeout=10)
        failure["stderr"] = "".join(err)[-2000:]
        if current is None:  # nothing ran: ember or the child script itself is broken
            for i in range(start, len(variants)):
                results[i] = dict(failure, startup=True)
            break
        if current in results:  # it reported, then died (e.g. in Engine.close)
            failure["after_result"] = True
        results[current] = failure
        start = current + 1
    return results


def failures_of(variants, results):
    """-> ["name: what went wrong"] for every variant that did not run or raise a typed error."""
    bad = []
    for i, (name, _, _) in enumerate(variants):
        r = results.get(i)
        if r is None:
            bad.append(f"{name}: never ran")
        elif "died" in r:
            rc = r["died"]
            sig = f"signal {-rc}" if isinstance(rc, int) and rc < 0 else f"exit code {rc}"
            when = " after it reported" if r.get("after_result") else ""
            when = " at start-up, before any variant" if r.get("startup") else when
            bad.append(f"{name}: killed the process ({sig}){when}\n{r.get('stderr', '')[-800:]}")
        elif "hung" in r:
            bad.append(f"{name}: hung (over {r['hung']} s)")
        elif r["raised"] is None:
            if r.get("mismatch"):
                bad.append(f"{name}: ran, but differs from onnx's reference: {r['mismatch']}")
            continue
        elif not r["ember"]:
            bad.append(f"{name}: {r['raised']} is not an EmberError: {r['msg']}\n{r.get('trace', '')}")
        elif r["raised"] == "InternalError":
            bad.append(f"{name}: InternalError (a bug in ember): {r['msg']}")
        elif "out of memory" in r["msg"]:
            # Under memory_limit, ember's own checks must refuse before allocating.
            bad.append(f"{name}: allocation failed (no size check before it): {r['msg']}")
        elif not r["msg"].strip():
            bad.append(f"{name}: {r['raised']} with an empty message")
    return bad


# ---- tests --------------------------------------------------------------------------------

@pytest.mark.parametrize("base", list(BASES))
def test_base_models_run(base):
    """The unmutated models load and run, and match onnx's reference (the fuzz starts valid)."""
    from onnx.reference import ReferenceEvaluator

    model, feeds = BASES[base]()
    with ember.Engine(model) as eng:
        got = eng.run(feeds)
    want = ReferenceEvaluator(model).run(None, feeds)
    for (name, g), w in zip(got.items(), want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5, err_msg=f"{base}: {name}")


def test_structural_mutations(tmp_path):
    variants = structural_variants()
    t0 = time.time()
    results = run_variants(variants, tmp_path)
    bad = failures_of(variants, results)
    ran = sum(1 for r in results.values() if r.get("raised", "x") is None)
    print(f"{len(variants)} structural variants in {time.time() - t0:.1f} s: {ran} ran, "
          f"{len(variants) - ran - len(bad)} raised typed errors, {len(bad)} failed")
    assert not bad, f"{len(bad)} of {len(variants)} variants failed:\n" + "\n".join(bad[:40])


def test_byte_mutations(tmp_path):
    variants = byte_variants()
    t0 = time.time()
    results = run_variants(variants, tmp_path)
    bad = failures_of(variants, results)
    print(f"{len(variants)} byte-flipped variants (EMBER_FUZZ_SEED={SEED}) in "
          f"{time.time() - t0:.1f} s")
    assert not bad, (f"EMBER_FUZZ_SEED={SEED}: {len(bad)} of {len(variants)} variants failed:\n"
                     + "\n".join(bad[:40]))


# ---- regressions: one per bug the fuzz (or its author) found ------------------------------

def _one(op, inputs, outputs, inits=None, feeds=None, opset=18, **attrs):
    """(model bytes, feeds) of a single-node model; inputs are (name, dtype, shape) or init names."""
    from onnx import helper
    graph_inputs = [i for i in inputs if isinstance(i, tuple)]
    names = [i[0] if isinstance(i, tuple) else i for i in inputs]
    nodes = [helper.make_node(op, names, outputs, name=op.lower(), **attrs)]
    return _model(nodes, graph_inputs, outputs, inits or {}, opset).SerializeToString(), feeds or {}


def _shape_chain(n):
    """x [1, n] -> ConstantOfShape([n, n]) -> ReduceSum: a mask-sized tensor from a feed's shape."""
    from onnx import helper
    i64 = lambda v: np.array(v, np.int64)  # noqa: E731
    N = helper.make_node
    nodes = [N("Shape", ["x"], ["s"], start=1), N("Concat", ["s", "s"], ["ss"], axis=0),
             N("ConstantOfShape", ["ss"], ["c"]), N("ReduceSum", ["c"], ["y"], keepdims=0)]
    model = _model(nodes, [("x", np.int64, [1, "n"])], ["y"], {"unused": i64(0)})
    return model.SerializeToString(), {"x": np.zeros((1, n), np.int64)}


def _fill_and_sum(n):
    """ConstantOfShape([n]) -> ReduceSum: all constant, so folded at load when n is small."""
    from onnx import helper
    nodes = [helper.make_node("ConstantOfShape", ["s"], ["c"]),
             helper.make_node("ReduceSum", ["c"], ["y"], keepdims=0)]
    return _model(nodes, [], ["y"], {"s": np.array([n], np.int64)}).SerializeToString(), {}


def _regression_cases():
    i64 = lambda v: np.array(v, np.int64)  # noqa: E731
    i32 = lambda v: np.array(v, np.int32)  # noqa: E731
    f = np.float32
    return {
        # x86 traps INT_MIN / -1 (SIGFPE killed the process); numpy wraps to INT_MIN.
        "div_int64_min_by_minus_one": (
            _one("Div", [("a", np.int64, [2]), ("b", np.int64, [2])], ["y"],
                 feeds={"a": i64([-2**63, 7]), "b": i64([-1, -2])}), ("ok", {"y": [-2**63, -3]})),
        "div_int32_min_by_minus_one": (
            _one("Div", [("a", np.int32, [1]), ("b", np.int32, [1])], ["y"],
                 feeds={"a": i32([-2**31]), "b": i32([-1])}), ("ok", {"y": [-2**31]})),
        "div_min_by_minus_one_folded": (
            _one("Div", ["a", "b"], ["y"], {"a": i64([-2**63]), "b": i64([-1])}),
            ("ok", {"y": [-2**63]})),
        # Over 64 dims numpy returned a rank-0 array (a silent wrong answer); 10000 aborted.
        "rank_65_constant": (
            _one("ConstantOfShape", ["s"], ["y"], {"s": np.ones(65, np.int64)}),
            ("ModelError", "65 dims")),
        "rank_10000_constant": (
            _one("ConstantOfShape", ["s"], ["y"], {"s": np.ones(10000, np.int64)}),
            ("ModelError", "10000 dims")),
        "rank_100_fed": (
            _one("ConstantOfShape", [("s", np.int64, [100])], ["y"],
                 feeds={"s": np.ones(100, np.int64)}),
            ("InputError", "100 dims")),
        # An empty tensor with a huge dim passed every product check (numel 0), then numpy raised.
        "empty_with_huge_dim_reshape": (
            _one("Reshape", [("x", f, [0, 3]), "s"], ["y"], {"s": i64([0, 5, 2**62])},
                 feeds={"x": np.zeros((0, 3), f)}, allowzero=1), ("InputError", "2^40 bytes")),
        "empty_with_huge_dim_fed": (
            _one("ConstantOfShape", [("s", np.int64, [2])], ["y"], feeds={"s": i64([0, 2**62])}),
            ("InputError", "2^40 bytes")),
        # Load-time folding allocated whatever a shape initializer asked for (2^58 bytes here).
        "fold_2^58_bytes": (
            _one("ConstantOfShape", ["s"], ["y"], {"s": i64([2**28, 2**28])}),
            ("ModelError", "2^40 bytes")),
        "fold_range_2^38": (
            _one("Range", ["a", "b", "c"], ["y"], {"a": i64(0), "b": i64(2**38), "c": i64(1)}),
            ("ModelError", "2^40 bytes")),
        # 1.25 GiB from a few bytes of model was folded at load, outside memory_limit (1 GiB here).
        "fold_past_budget_runs_under_memory_limit": (
            _fill_and_sum(2**28 + 2**26), ("InputError", "memory_limit")),
        "fold_within_budget": (_fill_and_sum(2**20), ("ok", {"y": 0.0})),
        # A 1.6 GB mask from a [1, 20000] feed's shape was folded at plan time, outside memory_limit.
        "plan_fold_past_budget": (_shape_chain(20000), ("InputError", "memory_limit")),
        "plan_fold_small_still_folds": (_shape_chain(300), ("ok", {"y": 0.0})),
        # keepdims=2 ran as keepdims=1 where onnx's reference reads it as 0: flags are 0 or 1.
        "flag_attribute_not_0_or_1": (
            _one("ReduceSum", [("x", f, [2, 3])], ["y"], feeds={"x": np.ones((2, 3), f)}, keepdims=2),
            ("ModelError", "must be 0 or 1")),
        # A broadcast view's contiguous copy was made whatever its size.
        "broadcast_feed_copy": (
            _one("Identity", [("x", np.int64, [1, "n"])], ["y"],
                 feeds={"x": ("broadcast_to", i64([[1]]), (1, 2**29))}),
            ("InputError", "memory_limit")),
    }


def test_regressions(tmp_path):
    cases = _regression_cases()
    variants = [(name, data, feeds) for name, ((data, feeds), _) in cases.items()]
    results = run_variants(variants, tmp_path)
    bad = failures_of(variants, results)
    for i, (name, (_, want)) in enumerate(cases.items()):
        r = results.get(i, {})
        if r.get("raised", "x") is None and want[0] == "ok":
            for k, v in want[1].items():
                if r["values"].get(k) != v:
                    bad.append(f"{name}: {k} = {r['values'].get(k)}, expected {v}")
        elif want[0] != "ok" and (r.get("raised") != want[0] or want[1] not in r.get("msg", "")):
            bad.append(f"{name}: expected {want[0]} mentioning {want[1]!r}, got {r}")
    assert not bad, "\n".join(bad)


def test_invalid_utf8_names_are_model_errors():
    model, _ = const_shapes()
    data = model.SerializeToString()
    # protobuf returned such `string` fields as bytes, and the binding raised TypeError.
    for good, bad in [(b"reshape", b"resh\xffpe"), (b"Reshape", b"Re\xa0hape"),
                      (b"r_start", b"r_st\xe9rt")]:
        with pytest.raises(ember.ModelError, match="not valid UTF-8"):
            ember.Engine(data.replace(good, bad, 1))


def test_external_data_path_with_nul(tmp_path):
    import onnx

    model, _ = const_shapes()
    t = model.graph.initializer[0]
    t.ClearField("raw_data")
    t.data_location = onnx.TensorProto.EXTERNAL
    t.external_data.add(key="location", value="w\0.bin")
    (tmp_path / "m.onnx").write_bytes(model.SerializeToString())
    with pytest.raises(ember.ModelError, match="NUL"):
        ember.Engine(str(tmp_path / "m.onnx"))


def test_model_path_that_is_not_a_regular_file(tmp_path):
    # /dev/zero never ends and a FIFO blocks: both hung the loader (a child, with a timeout).
    os.symlink("/dev/zero", tmp_path / "zero.onnx")
    os.mkfifo(tmp_path / "fifo.onnx")
    code = ("import ember, sys\n"
            "for p in sys.argv[1:]:\n"
            "    try:\n        ember.Engine(p)\n"
            "    except ember.ModelError as e:\n        print('ModelError', e)\n")
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(ember.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "zero.onnx"),
                           str(tmp_path / "fifo.onnx")], capture_output=True, text=True,
                          timeout=60, env=env, preexec_fn=_limit_memory)
    lines = proc.stdout.splitlines()
    assert len(lines) == 2 and all("not a regular file" in x for x in lines), proc.stdout + proc.stderr


def test_feed_and_argument_edge_cases():
    model, feeds = fed_shapes()
    eng = ember.Engine(model)
    want = eng.run(feeds)
    # Big-endian arrays (from files) raised RuntimeError(std::bad_cast); they are just data.
    big = {k: v.astype(v.dtype.newbyteorder(">")) for k, v in feeds.items()}
    for k, v in eng.run(big).items():
        np.testing.assert_array_equal(v, want[k])
    # Names that are not UTF-8 raised RuntimeError / TypeError from the binding.
    with pytest.raises(ember.InputError, match="UTF-8"):
        eng.run({**feeds, "\udc80": feeds["n"]})
    with pytest.raises(ember.InputError, match="UTF-8"):
        eng.run(feeds, outputs=["\udc80"])
    # Python ints past int64 raised OverflowError; floats and strings were truncated/parsed.
    for bad in (2**70, -2**70, 5.7, "5", float("nan")):
        with pytest.raises(ember.InputError, match="'n'"):
            eng.run({**feeds, "n": bad})
    assert eng.run({**feeds, "n": 4})["r"].tolist() == [0, 1, 2, 3]
    # plan_info skipped run's checks (AttributeError on a list).
    with pytest.raises(ember.InputError):
        eng.plan_info([1, 2])
    # Engine options past the binding's int types raised TypeError.
    for kw in ({"threads": 2**40}, {"memory_limit": 2**70}, {"plan_cache_size": 2**40},
               {"plan_cache_size": "8"}, {"plan_cache_size": 0}):
        with pytest.raises(ember.EmberError):
            ember.Engine(model, **kw)
