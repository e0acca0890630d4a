"""ONNX -> ember graph.

The model is untrusted: it is parsed without the onnx checker, shape inference or automatic
external-data loading (they run C++ that has crashed on malformed files), and everything is
validated here in Python before ember's graph is built: opsets and op versions (all
unsupported nodes are reported at once), node arity and attributes against the ONNX schema,
tensor dtypes and data sizes, external-data paths and ranges, references between nodes,
single producers and topological order (sorted if needed, cycles refused).
ember's own shape inference (in C++) is the authority on types and shapes after that.
"""
from __future__ import annotations

import collections
import dataclasses
import heapq
import logging
import os
from collections import Counter

import numpy as np

from ember.errors import ModelError, UnsupportedOpError
from ember.onnx_ops import CONSTANT_VERSIONS, CONTRIB_OPS, OPS, check_node, supported_ops
from ember.onnx_ops_quant import contrib_schema
from ember.onnx_tensors import TensorValue, dtype_of, TensorReader

_log = logging.getLogger("ember")

__all__ = ["import_model", "supported_ops", "ModelInfo", "TensorInfo"]

MIN_OPSET = 1  # older models load where every node's since_version is one ember reviewed
_MAX_NESTING = 16  # If/Loop subgraphs inside subgraphs, this deep at most
_DEFAULT_DOMAINS = ("", "ai.onnx")


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str | None          # numpy dtype name; None when the model does not declare it
    shape: list | None         # int (fixed), str (symbol), None (unknown); None: rank unknown


@dataclasses.dataclass
class ModelInfo:
    path: str | None
    ir_version: int
    producer_name: str
    opset: dict                # domain ("ai.onnx" for the default) -> version
    op_histogram: Counter      # ONNX op type -> node count
    parameter_count: int       # elements in all initializers
    inputs: list               # [TensorInfo] (initializers are constants, not inputs)
    outputs: list              # [TensorInfo] as declared in the model


# ---- parsing ------------------------------------------------------------------------------

def _parse(model, base_dir):
    """-> (ModelProto, origin for messages, base dir for external data or None, path, lean).
    A file is parsed lean (onnx_lean.py) where its wire format allows: `lean` is then True and
    its large initializers refer to the file."""
    import onnx

    from ember.onnx_lean import lean_model_bytes

    if isinstance(model, onnx.ModelProto):
        return model, "model", base_dir, None, False
    if isinstance(model, (bytes, bytearray, memoryview)):
        return _parse_bytes(bytes(model), "model bytes"), "model bytes", base_dir, None, False
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if not os.path.exists(path):
            raise ModelError(f"[onnx] {path}: no such file")
        if os.path.isdir(path):
            raise ModelError(f"[onnx] {path}: is a directory, not an .onnx file")
        if not os.path.isfile(path):  # a FIFO would block, /dev/zero never ends
            raise ModelError(f"[onnx] {path}: not a regular file")
        if base_dir is None:
            base_dir = os.path.dirname(os.path.abspath(path))
        try:
            lean = lean_model_bytes(path)
        except (OSError, ValueError) as e:  # not mappable: read whole below
            lean, why = None, f"not mappable ({e})"
        else:
            why = "its wire format is not what ONNX writes"
        if lean is not None:
            m = onnx.ModelProto()
            try:
                m.ParseFromString(lean)
                return m, path, base_dir, path, True
            except Exception:  # the whole parse below names the problem
                why = "the lean bytes do not parse"
        # Correct either way; only the peak memory differs (weights held twice while loading).
        _log.info("[onnx] %s: parsed whole, not lean: %s", path, why)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise ModelError(f"[onnx] {path}: cannot read: {e}") from None
        return _parse_bytes(data, path), path, base_dir, path, False
    raise ModelError(f"[onnx] model must be a path, bytes or onnx.ModelProto, not {type(model).__name__}")


def _parse_bytes(data, origin):
    import onnx

    if not data:
        raise ModelError(f"[onnx] {origin}: empty file")
    m = onnx.ModelProto()
    try:
        m.ParseFromString(data)
    except Exception as e:  # DecodeError, RuntimeError from upb, ...
        raise ModelError(f"[onnx] {origin}: not a valid ONNX protobuf "
                         f"(corrupt or truncated): {type(e).__name__}: {e}") from None
    return m


def _check_text(msg, origin, path="model"):
    """Every string field of the parsed model is text. protobuf hands invalid UTF-8 in a
    `string` field back as bytes, which would reach names, op types and messages."""
    from google.protobuf.descriptor import FieldDescriptor as F

    for f in msg.DESCRIPTOR.fields:  # by descriptor: reading raw_data would copy every weight
        repeated = f.is_repeated
        if f.type == F.TYPE_STRING:
            values = getattr(msg, f.name) if repeated else [getattr(msg, f.name)]
            for k, v in enumerate(values):
                if not isinstance(v, str):
                    where = f"{path}.{f.name}" + (f"[{k}]" if repeated else "")
                    raise ModelError(f"[onnx] {origin}: {where} is not valid UTF-8: {v[:60]!r}")
        elif f.type == F.TYPE_MESSAGE:
            if f.message_type.GetOptions().map_entry:
                continue  # no map fields in ONNX protos today
            if repeated:
                for k, sub in enumerate(getattr(msg, f.name)):
                    _check_text(sub, origin, f"{path}.{f.name}[{k}]")
            elif msg.HasField(f.name):
                _check_text(getattr(msg, f.name), origin, f"{path}.{f.name}")


# ---- nodes --------------------------------------------------------------------------------

@dataclasses.dataclass
class _Node:
    proto: object
    index: int
    op_type: str
    name: str
    since: int = 0
    in_names: list = dataclasses.field(default_factory=list)
    out_names: list = dataclasses.field(default_factory=list)
    attrs: dict = dataclasses.field(default_factory=dict)
    schema: object = None                                      # onnx OpSchema once accepted
    # Names a node's subgraphs (If branches, Loop body) read from this graph or beyond it:
    # ember passes them as explicit trailing inputs (implicit_ids at build time).
    implicit: list = dataclasses.field(default_factory=list)
    inputs: list = dataclasses.field(default_factory=list)   # value ids, set at build time
    outputs: list = dataclasses.field(default_factory=list)
    implicit_ids: list = dataclasses.field(default_factory=list)

    @property
    def reads(self):
        return self.in_names + self.implicit


@dataclasses.dataclass
class _Ctx:
    """State shared by the model's graph and its subgraphs while they are checked."""
    origin: str
    opset: dict
    reader: object
    unsupported: dict = dataclasses.field(default_factory=dict)  # key -> [node names]
    first_error: object = None     # the first ModelError of a node, reported if nothing is unsupported
    histogram: Counter = dataclasses.field(default_factory=Counter)  # op type -> nodes, nested too


@dataclasses.dataclass
class _GraphParts:
    """One checked graph, ready to build."""
    order: list        # [_Node], topological
    inits: dict        # name -> TensorProto
    inputs: list       # [TensorInfo]
    outputs: list      # [TensorInfo]
    consts: dict       # Constant node output -> TensorValue
    names: set         # node names
    free: list         # names read from enclosing graphs (subgraphs), sorted
    param_count: int


def _opsets(m, origin):
    opset = {}
    for imp in m.opset_import:
        dom = "ai.onnx" if imp.domain in _DEFAULT_DOMAINS else imp.domain
        if dom in opset and opset[dom] != imp.version:
            raise ModelError(f"[onnx] {origin}: two opset versions for domain {dom}")
        opset[dom] = int(imp.version)
    return opset


def _classify(nodes, opset, origin):
    """Sets each node's since_version; -> {unsupported key: [node names]}."""
    import onnx.defs

    max_opset = onnx.defs.onnx_opset_version()
    version = opset.get("ai.onnx")
    unsupported = {}

    def refuse(key, n):
        unsupported.setdefault(key, []).append(n.name)

    for n in nodes:
        if not n.op_type:
            raise ModelError(f"[onnx] {origin}: node '{n.name}' has no op_type")
        dom = n.proto.domain
        if dom not in _DEFAULT_DOMAINS:
            # Other domains: only the ops in CONTRIB_OPS (com.microsoft MatMulNBits), at the
            # domain version their stand-in schema describes.
            schema = contrib_schema(dom, n.op_type, opset.get(dom))
            if schema is None or schema.since_version not in CONTRIB_OPS[dom].get(n.op_type, {}):
                refuse(f"{dom}:{n.op_type}", n)
                continue
            n.since, n.schema = schema.since_version, schema
            continue
        if version is None:
            raise ModelError(f"[onnx] {origin}: node '{n.name}' ({n.op_type}) is in the default ONNX "
                             f"domain, but the model imports no opset for it (missing opset_import: "
                             f"corrupt, truncated or pre-2017 model)")
        known = n.op_type in OPS or n.op_type == "Constant"
        if version < MIN_OPSET or version > max_opset:
            refuse(f"{n.op_type}@opset{version}" if known else n.op_type, n)
            continue
        try:
            schema = onnx.defs.get_schema(n.op_type, version, "")
        except Exception:  # SchemaError: not an ONNX op, or not at this opset
            refuse(f"{n.op_type}@opset{version}" if known else n.op_type, n)
            continue
        n.since = schema.since_version
        accepted = CONSTANT_VERSIONS if n.op_type == "Constant" else OPS.get(n.op_type, {})
        if not known:
            refuse(n.op_type, n)
        elif n.since not in accepted:
            refuse(f"{n.op_type}@opset{version}", n)
        else:
            n.schema = schema
    return unsupported


def _unsupported_message(unsupported, opset, max_opset):
    parts = []
    for key, names in unsupported.items():
        shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        parts.append(f"{key} ({len(names)} node{'s' if len(names) != 1 else ''}: {shown})")
    msg = "[onnx] unsupported ops: " + ", ".join(parts)
    v = opset.get("ai.onnx", MIN_OPSET)
    if v < MIN_OPSET or v > max_opset:
        msg += f" (the model's opset {v} is outside the range ember supports, {MIN_OPSET}..{max_opset})"
    return msg


def _convert_attrs(n, ctx, visible, depth):
    """Converts attributes after checking them against the schema. -> reason if unsupported.
    A subgraph is checked here, seeing `visible` (the names of every enclosing graph)."""
    from onnx import AttributeProto

    origin, reader = ctx.origin, ctx.reader

    schema = n.schema
    for a in n.proto.attribute:
        if a.ref_attr_name:
            raise ModelError(f"[onnx] {origin}: node '{n.name}' ({n.op_type}): attribute '{a.name}' "
                             f"refers to a function attribute outside a function")
        spec = schema.attributes.get(a.name)
        if spec is None:
            raise ModelError(f"[onnx] {origin}: node '{n.name}' ({n.op_type}): unknown attribute "
                             f"'{a.name}' for opset version {n.since}")
        if a.name in n.attrs:
            raise ModelError(f"[onnx] {origin}: node '{n.name}': attribute '{a.name}' given twice")
        if int(a.type) != int(spec.type):
            raise ModelError(f"[onnx] {origin}: node '{n.name}' ({n.op_type}): attribute '{a.name}' "
                             f"is {AttributeProto.AttributeType.Name(a.type)}, expected "
                             f"{AttributeProto.AttributeType.Name(int(spec.type))}")
        t = a.type
        what = f"node '{n.name}' attribute '{a.name}'"
        if t == AttributeProto.INT:
            v = int(a.i)
        elif t == AttributeProto.FLOAT:
            v = float(a.f)
        elif t == AttributeProto.STRING:
            try:
                v = a.s.decode("utf-8")
            except UnicodeDecodeError:
                raise ModelError(f"[onnx] {origin}: {what} is not valid UTF-8") from None
        elif t == AttributeProto.STRINGS:  # e.g. LSTM activations; handlers convert them
            try:
                v = [x.decode("utf-8") for x in a.strings]
            except UnicodeDecodeError:
                raise ModelError(f"[onnx] {origin}: {what} is not valid UTF-8") from None
        elif t == AttributeProto.INTS:
            v = [int(x) for x in a.ints]
        elif t == AttributeProto.FLOATS:
            v = [float(x) for x in a.floats]
        elif t == AttributeProto.TENSOR:
            v = reader.read(a.t, what)
        elif t == AttributeProto.GRAPH:
            if depth >= _MAX_NESTING:
                raise ModelError(f"[onnx] {origin}: {what}: subgraphs nest deeper than {_MAX_NESTING}")
            v = _read_graph(a.g, ctx, visible, depth + 1)
        else:  # lists of graphs, sparse tensors, type protos
            return f"{a.name}:{AttributeProto.AttributeType.Name(t)}"
        n.attrs[a.name] = v
    n.implicit = sorted({x for v in n.attrs.values() if isinstance(v, _GraphParts) for x in v.free})
    for name, spec in schema.attributes.items():
        if spec.required and name not in n.attrs:
            raise ModelError(f"[onnx] {origin}: node '{n.name}' ({n.op_type}): missing required "
                             f"attribute '{name}'")
    return None


def _check_node(n, ctx, visible, depth, consts):
    """Arity and attributes of an accepted node; -> reason string if ember cannot run it."""
    origin = ctx.origin
    _check_arity(n, origin)
    if n.op_type != "Constant":
        return _convert_attrs(n, ctx, visible, depth) or check_node(n)
    v = _constant_value(n, ctx.reader, origin)
    if isinstance(v, str):
        return v
    if len(n.out_names) != 1 or not n.out_names[0]:
        raise ModelError(f"[onnx] {origin}: Constant node '{n.name}' needs one output")
    consts[n.out_names[0]] = v
    return None


def _check_arity(n, origin):
    s = n.schema
    nin, nout = len(n.in_names), len(n.out_names)
    if not (s.min_input <= nin <= s.max_input):
        raise ModelError(f"[onnx] {origin}: node '{n.name}' ({n.op_type}) has {nin} inputs, "
                         f"expected {s.min_input}..{s.max_input}")
    if not (s.min_output <= nout <= s.max_output):
        raise ModelError(f"[onnx] {origin}: node '{n.name}' ({n.op_type}) has {nout} outputs, "
                         f"expected {s.min_output}..{s.max_output}")


# ---- constants from Constant nodes ---------------------------------------------------------

def _constant_value(n, reader, origin):
    """-> TensorValue, or an unsupported reason string."""
    attrs = list(n.proto.attribute)
    if len(attrs) != 1:
        raise ModelError(f"[onnx] {origin}: Constant node '{n.name}' must have exactly one value "
                         f"attribute, has {[a.name for a in attrs]}")
    a = attrs[0]
    what = f"Constant node '{n.name}'"
    if a.name == "value":
        return reader.read(a.t, what)
    if a.name == "value_float":
        return TensorValue(np.array(a.f, dtype=np.float32), "float32")
    if a.name == "value_floats":
        return TensorValue(np.array(list(a.floats), dtype=np.float32), "float32")
    if a.name == "value_int":
        return TensorValue(np.array(a.i, dtype=np.int64), "int64")
    if a.name == "value_ints":
        return TensorValue(np.array(list(a.ints), dtype=np.int64), "int64")
    if a.name in ("value_string", "value_strings", "sparse_value"):
        return a.name
    raise ModelError(f"[onnx] {origin}: {what}: unknown attribute '{a.name}'")


# ---- graph --------------------------------------------------------------------------------

def _value_type(vi, origin):
    """ValueInfoProto -> (dtype name | None, dims list | None); refuses non-tensor types."""
    tt = vi.type
    if not vi.HasField("type"):
        return None, None
    which = tt.WhichOneof("value")
    if which != "tensor_type":
        raise ModelError(f"[onnx] {origin}: graph value '{vi.name}' is a {which}, ember runs tensors only")
    t = tt.tensor_type
    dtype = dtype_of(t.elem_type, f"graph value '{vi.name}'", origin) if t.elem_type else None
    if not t.HasField("shape"):
        return dtype, None
    dims = []
    for d in t.shape.dim:
        kind = d.WhichOneof("value")
        if kind == "dim_value":
            if d.dim_value < 0:
                raise ModelError(f"[onnx] {origin}: graph value '{vi.name}' has a negative dim")
            dims.append(int(d.dim_value))
        elif kind == "dim_param" and d.dim_param:
            dims.append(str(d.dim_param))
        else:
            dims.append(None)
    return dtype, dims


def _topo_sort(nodes, available, origin):
    """Kahn's algorithm, keeping file order where possible. Checks references and producers."""
    producer = {}
    for n in nodes:
        for o in n.out_names:
            if not o:
                continue
            if o in available:
                raise ModelError(f"[onnx] {origin}: node '{n.name}' writes '{o}', which is already "
                                 f"a graph input or initializer")
            if o in producer:
                raise ModelError(f"[onnx] {origin}: value '{o}' is produced by two nodes: "
                                 f"'{nodes[producer[o]].name}' and '{n.name}'")
            producer[o] = n.index
    deps = []
    users = [[] for _ in nodes]
    for n in nodes:
        d = set()
        for i in n.reads:
            if not i or i in available:
                continue
            if i not in producer:
                raise ModelError(f"[onnx] {origin}: node '{n.name}' ({n.op_type}) reads '{i}', which "
                                 f"no node produces and is not a graph input or initializer")
            d.add(producer[i])
        deps.append(len(d))
        for p in d:
            users[p].append(n.index)
    ready = [n.index for n in nodes if deps[n.index] == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        k = heapq.heappop(ready)
        order.append(nodes[k])
        for u in users[k]:
            deps[u] -= 1
            if deps[u] == 0:
                heapq.heappush(ready, u)
    if len(order) != len(nodes):
        stuck = [n.name for n in nodes if deps[n.index] > 0]
        raise ModelError(f"[onnx] {origin}: the graph has a cycle through nodes "
                         f"{', '.join(stuck[:8])}{', ...' if len(stuck) > 8 else ''}")
    return order, producer


class _Builder:
    """What handlers in onnx_ops see: emits ember nodes and constants into the graph."""

    def __init__(self, g, taken, build_subgraph):
        self.g = g
        self.current = ""   # name of the node being converted: the default for emitted nodes
        self.taken = taken  # every name in use (values and node names)
        self._build_subgraph = build_subgraph

    def subgraph(self, parts, captures):
        """A checked subgraph attribute -> ember graph whose trailing inputs are `captures`."""
        return self._build_subgraph(parts, list(captures))

    def _fresh(self, hint):
        name, k = hint, 1
        while name in self.taken:
            k += 1
            name = f"{hint}_{k}"
        self.taken.add(name)
        return name

    def const(self, hint, array, dtype=""):
        vid = self.g.add_value(self._fresh(hint), dtype or str(array.dtype), list(array.shape))
        self.g.set_constant(vid, np.ascontiguousarray(array), dtype)
        return vid

    def temp(self, hint):
        return self.g.add_value(self._fresh(hint))

    def node(self, op, inputs, outputs, attrs, name=None):
        inputs = list(inputs)
        while inputs and inputs[-1] == -1:  # trailing absent inputs are simply omitted
            inputs.pop()
        attrs = {k: (v.array if isinstance(v, TensorValue) else v) for k, v in attrs.items()}
        self.g.add_node(op, name if name is not None else self.current, inputs, list(outputs), attrs)


def import_model(model, base_dir=None):
    """ONNX model (path, bytes or onnx.ModelProto) -> (ember._core.Graph, ModelInfo).

    Raises ModelError for anything malformed and UnsupportedOpError (listing every
    unsupported op type with its nodes, subgraphs included) when ember cannot run the model.
    """
    import onnx.defs

    m, origin, base_dir, path, lean = _parse(model, base_dir)
    _check_text(m, origin)
    if not m.HasField("graph"):
        raise ModelError(f"[onnx] {origin}: no graph (not an ONNX model, or truncated)")
    if m.ir_version <= 0:
        raise ModelError(f"[onnx] {origin}: no ir_version (not an ONNX model, or corrupt)")
    opset = _opsets(m, origin)
    ctx = _Ctx(origin, opset, TensorReader(origin, base_dir, self_path=path if lean else None))
    parts = _read_graph(m.graph, ctx)
    if ctx.first_error is not None and not ctx.unsupported:
        raise ctx.first_error
    if ctx.unsupported:
        err = UnsupportedOpError(
            _unsupported_message(ctx.unsupported, opset, onnx.defs.onnx_opset_version()),
            ctx.unsupported)
        err.op_histogram = ctx.histogram  # for `ember info`
        raise err

    info = ModelInfo(
        path=path, ir_version=int(m.ir_version), producer_name=m.producer_name, opset=opset,
        op_histogram=ctx.histogram, parameter_count=parts.param_count,
        inputs=parts.inputs, outputs=parts.outputs)
    return _build(parts, ctx), info


def _read_graph(graph, ctx, outer=frozenset(), depth=0):
    """Checks one graph: the model's, or a subgraph seeing the names `outer` of the graphs
    around it. -> _GraphParts, or None where a node is unsupported or malformed (recorded in
    ctx, which the caller raises once every graph has been read)."""
    origin = ctx.origin if not depth else f"{ctx.origin} (subgraph '{graph.name}')"
    # Node names: ember reports errors by node name, so make them present and unique.
    nodes, names = [], set()
    for k, p in enumerate(graph.node):
        name = p.name or f"{p.op_type}_{k}"
        while name in names:
            name = f"{name}_{k}"
        names.add(name)
        nodes.append(_Node(p, k, p.op_type, name, in_names=list(p.input), out_names=list(p.output)))
    ctx.histogram.update(n.op_type for n in nodes)

    # 1. ops: collect every unsupported node (the caller refuses them all at once). Attributes
    # can make a node unsupported too (a Cast to float8, an unsupported op in a subgraph).
    local = ({t.name for t in graph.initializer} | {vi.name for vi in graph.input}
             | {o for n in nodes for o in n.out_names if o})
    visible = frozenset(outer | local)
    problems = len(ctx.unsupported), ctx.first_error
    for key, bad in _classify(nodes, ctx.opset, origin).items():
        ctx.unsupported.setdefault(key, []).extend(bad)
    consts = {}
    for n in nodes:
        if n.schema is None:
            continue
        try:
            reason = _check_node(n, ctx, visible, depth, consts)
        except ModelError as e:
            ctx.first_error = ctx.first_error or e
            continue
        if reason:
            ctx.unsupported.setdefault(f"{n.op_type}({reason})", []).append(n.name)
    if (len(ctx.unsupported), ctx.first_error) != problems:
        return None

    # 2. initializers (checked without reading data yet), inputs, outputs.
    reader = ctx.reader
    inits, param_count = {}, 0
    used = {i for n in nodes for i in n.reads} | {vi.name for vi in graph.output}
    for k, t in enumerate(graph.initializer):
        if not t.name:
            raise ModelError(f"[onnx] {origin}: initializer #{k} has no name")
        if t.name in inits:
            raise ModelError(f"[onnx] {origin}: two initializers named '{t.name}'")
        # Used initializers have their data checked when read, in _build (one copy, not two).
        _, _, numel = reader.check(t, f"initializer '{t.name}'", data=t.name not in used)
        inits[t.name] = t
        param_count += numel
    if graph.sparse_initializer:
        raise ModelError(f"[onnx] {origin}: sparse initializers are not supported")
    inputs = []
    seen_inputs = set()
    for vi in graph.input:
        if not vi.name or vi.name in seen_inputs:
            raise ModelError(f"[onnx] {origin}: graph input with an empty or repeated name '{vi.name}'")
        seen_inputs.add(vi.name)
        if vi.name in inits:  # older exporters list initializers as inputs: constants here
            continue
        dtype, dims = _value_type(vi, origin)
        inputs.append(TensorInfo(vi.name, dtype, dims))
    outputs = []
    for vi in graph.output:
        if not vi.name:
            raise ModelError(f"[onnx] {origin}: graph output with an empty name")
        try:
            dtype, dims = _value_type(vi, origin)
        except ModelError:
            dtype, dims = None, None  # ember infers output types itself
        outputs.append(TensorInfo(vi.name, dtype, dims))

    # 3. references, producers and order.
    # Outer names are available unless this graph makes its own of the same name.
    made_here = {o for n in nodes for o in n.out_names if o}
    available = set(inits) | {i.name for i in inputs} | (set(outer) - made_here)
    order, producer = _topo_sort(nodes, available, origin)
    for o in outputs:
        if o.name not in available and o.name not in producer:
            raise ModelError(f"[onnx] {origin}: graph output '{o.name}' is never produced")
    defined = set(inits) | {i.name for i in inputs} | set(producer) | set(consts)
    free = sorted({x for x in used if x and x not in defined})  # all in `outer`: topo-checked
    return _GraphParts(order, inits, inputs, outputs, consts, names, free, param_count)


def _build(parts, ctx, captures=None):
    """_GraphParts -> ember._core.Graph. A subgraph gets `captures` (names from enclosing
    graphs it reads) as trailing inputs after its own, untyped: their types are the caller's."""
    from ember import _core

    g = _core.Graph()
    order, inits, reader = parts.order, parts.inits, ctx.reader
    taken = set(parts.names) | set(inits) | {i.name for i in parts.inputs} | set(captures or ())
    for n in order:
        taken.update(n.reads)
        taken.update(n.out_names)
    vids = {}
    used = {i for n in order for i in n.reads} | {o.name for o in parts.outputs}

    def value(name):
        if not name:
            return -1
        vid = vids.get(name)
        if vid is None:
            vid = vids[name] = g.add_value(name)
        return vid

    for name, t in inits.items():
        if name not in used:
            continue  # checked above; never read
        tv = reader.read(t, f"initializer '{name}'")
        vid = vids[name] = g.add_value(name, tv.dtype, list(tv.array.shape))
        g.set_constant(vid, tv.array, tv.dtype if tv.dtype == "bfloat16" else "")
    for i in parts.inputs:
        # A subgraph's declared input shapes are not checked: a Loop's carried values may
        # change shape between iterations, whatever the first one declared.
        dims = i.shape if captures is None else None
        vid = vids[i.name] = g.add_value(i.name, i.dtype, dims)
        g.add_input(vid)
    for name in captures or ():
        vid = vids[name] = g.add_value(name)
        g.add_input(vid)

    b = _Builder(g, taken, lambda sub, caps: _build(sub, ctx, caps))
    for n in order:
        if n.op_type == "Constant":
            tv = parts.consts[n.out_names[0]]
            vid = vids[n.out_names[0]] = g.add_value(n.out_names[0], tv.dtype, list(tv.array.shape))
            g.set_constant(vid, tv.array, tv.dtype if tv.dtype == "bfloat16" else "")
            continue
        n.inputs = [value(x) for x in n.in_names]
        n.outputs = [value(x) for x in n.out_names]
        n.implicit_ids = [value(x) for x in n.implicit]
        b.current = n.name
        table = OPS if n.proto.domain in _DEFAULT_DOMAINS else CONTRIB_OPS[n.proto.domain]
        table[n.op_type][n.since](n, b)
    for o in parts.outputs:
        vid = value(o.name)
        if captures is not None:  # a Loop that runs no iteration reads these
            g.declare(vid, o.dtype, [d if isinstance(d, int) else None for d in o.shape or []]
                      if o.shape is not None else None)
        g.add_output(vid)
    return g
