"""Reading and editing the ONNX graph being quantized: loading, opsets, fresh names, initializers,
and rebuilding the node list in topological order with the new nodes where they belong."""

from __future__ import annotations

import os

import numpy as np

from ember.errors import InputError, ModelError

MIN_OPSET = 13          # per-axis DequantizeLinear, Clip/Round/MatMulInteger as written here


def load_model(src):
    """path | bytes | onnx.ModelProto -> a ModelProto of our own (the caller's is not modified),
    external data loaded. Returns (model, base_dir or None)."""
    import onnx

    if isinstance(src, onnx.ModelProto):
        m = onnx.ModelProto()
        m.CopyFrom(src)
        return m, None
    if isinstance(src, (bytes, bytearray, memoryview)):
        m = onnx.ModelProto()
        try:
            m.ParseFromString(bytes(src))
        except Exception as e:  # DecodeError and friends
            raise ModelError(f"[quantize] model bytes are not a valid ONNX protobuf: {e}") from None
        return m, None
    if isinstance(src, (str, os.PathLike)):
        path = os.fspath(src)
        if not os.path.exists(path) and isinstance(path, str):
            from ember import hub
            if path.strip().lower() in hub.known_models():    # "minilm-l6", as Engine takes
                path = hub.resolve(path)
        if not os.path.isfile(path):
            raise InputError(f"[quantize] {path}: no such file")
        try:
            m = onnx.load(path, load_external_data=True)
        except Exception as e:  # noqa: BLE001 - protobuf, OSError, external-data errors
            raise ModelError(f"[quantize] {path}: cannot load the ONNX model: "
                             f"{type(e).__name__}: {e}") from None
        return m, os.path.dirname(os.path.abspath(path))
    raise InputError(f"[quantize] model must be a path, bytes or onnx.ModelProto, "
                     f"not {type(src).__name__}")


def save_model(model, dst) -> None:
    """Writes `model` to dst; models past protobuf's 2 GiB limit get an external data file."""
    import onnx

    if not isinstance(dst, (str, os.PathLike)):
        raise InputError(f"[quantize] dst must be a file path, not {type(dst).__name__}")
    dst = os.fspath(dst)
    folder = os.path.dirname(os.path.abspath(dst))
    if not os.path.isdir(folder):
        raise InputError(f"[quantize] {dst}: folder {folder} does not exist")
    big = model.ByteSize() > 1_800_000_000
    try:
        if big:
            onnx.save_model(model, dst, save_as_external_data=True, all_tensors_to_one_file=True,
                            location=os.path.basename(dst) + ".data", size_threshold=1024)
        else:
            onnx.save_model(model, dst)
    except OSError as e:
        raise InputError(f"[quantize] cannot write {dst}: {e}") from None


def default_opset(model) -> int:
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return int(o.version)
    raise ModelError("[quantize] the model imports no default (ai.onnx) opset")


def ensure_opset(model, minimum=MIN_OPSET):
    """The model, converted to opset `minimum` when older (onnx.version_converter)."""
    v = default_opset(model)
    if v >= minimum:
        return model
    import onnx.version_converter
    try:
        return onnx.version_converter.convert_version(model, minimum)
    except Exception as e:  # noqa: BLE001 - the converter raises a variety of errors
        raise ModelError(f"[quantize] the model uses opset {v}; quantized graphs need opset "
                         f">= {minimum} and onnx.version_converter could not upgrade it: "
                         f"{e}") from None


def set_opset(model, domain, version) -> None:
    for o in model.opset_import:
        if o.domain == domain:
            o.version = max(o.version, version)
            return
    model.opset_import.add(domain=domain, version=version)


def set_metadata(model, key, value) -> None:
    for p in model.metadata_props:
        if p.key == key:
            p.value = value
            return
    model.metadata_props.add(key=key, value=value)


def display_name(node) -> str:
    """A node's name, or `<op>(<first output>)` for unnamed nodes."""
    return node.name or f"{node.op_type}({node.output[0] if node.output else ''})"


def _all_names(graph, tensors, nodes):
    for n in graph.node:
        nodes.add(n.name)
        tensors.update(n.input)
        tensors.update(n.output)
        for a in n.attribute:
            for g in list(a.graphs) + ([a.g] if a.HasField("g") else []):
                _all_names(g, tensors, nodes)
    tensors.update(t.name for t in graph.initializer)
    tensors.update(v.name for v in graph.input)
    tensors.update(v.name for v in graph.output)
    tensors.update(v.name for v in graph.value_info)


class GraphEditor:
    """The top-level graph of a model: its initializers as numpy arrays on demand, new
    initializers and nodes, and a rebuild step that keeps topological order.

    New nodes are attached to an original node (`before`): they are emitted just before it, in
    the order they were added. Replaced nodes are dropped; initializers no longer read by any
    node or graph output (of those the editor touched) are removed.
    """

    def __init__(self, model, base_dir=None):
        self.model = model
        self.graph = model.graph
        self.nodes = list(self.graph.node)   # held: node identity (id) is stable while we edit
        self.base_dir = base_dir
        self.inits = {t.name: t for t in self.graph.initializer}
        self.graph_inputs = {v.name for v in self.graph.input}
        self.graph_outputs = {v.name for v in self.graph.output}
        self.taken, self.node_names = set(), set()     # tensor and node names: two namespaces
        _all_names(self.graph, self.taken, self.node_names)
        self.taken.discard("")
        self._before = {}           # id(original node) -> [new NodeProto]
        self._dropped = set()       # id(original node)
        self._new_inits = []
        self._touched = set()       # initializer names whose readers changed
        self._arrays = {}

    # ---- reading ----

    def const_array(self, name):
        """The float/int array of initializer `name` (not a graph input), or None."""
        t = self.inits.get(name)
        if t is None or name in self.graph_inputs:
            return None
        if name not in self._arrays:
            from onnx import numpy_helper
            try:
                self._arrays[name] = numpy_helper.to_array(t, self.base_dir or "")
            except Exception as e:  # noqa: BLE001 - bad external data, bad sizes
                raise ModelError(f"[quantize] initializer '{name}' cannot be read: {e}") from None
        return self._arrays[name]

    def is_float_weight(self, name) -> bool:
        """True for a float32 initializer that no graph input overrides."""
        from onnx import TensorProto
        t = self.inits.get(name)
        return t is not None and name not in self.graph_inputs and t.data_type == TensorProto.FLOAT

    # ---- writing ----

    def fresh(self, hint: str, _names=None) -> str:
        """A tensor name not used anywhere in the model: hint, else hint_1, hint_2, ..."""
        taken = self.taken if _names is None else _names
        name, k = hint, 1
        while name in taken:
            name, k = f"{hint}_{k}", k + 1
        taken.add(name)
        return name

    def add_init(self, hint: str, array) -> str:
        from onnx import numpy_helper
        name = self.fresh(hint)
        self._new_inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def add_node(self, before, op_type, inputs, outputs, name_hint, domain="", **attrs) -> None:
        """Adds a node emitted just before `before` (an original node)."""
        from onnx import helper
        node = helper.make_node(op_type, list(inputs), list(outputs),
                                name=self.fresh(name_hint, self.node_names),
                                domain=domain or None, **attrs)
        self._before.setdefault(id(before), []).append(node)

    def replace(self, node) -> None:
        """Drops an original node; its replacement (added next with add_node(before=node)) may
        take over its name."""
        self._dropped.add(id(node))
        self._touched.update(node.input)
        self.node_names.discard(node.name)

    def touch(self, name) -> None:
        """A node stopped reading initializer `name`: commit removes it if nothing else does."""
        self._touched.add(name)

    def commit(self) -> None:
        nodes = []
        for n in self.nodes:
            nodes.extend(self._before.get(id(n), []))
            if id(n) not in self._dropped:
                nodes.append(n)
        self.graph.ClearField("node")
        self.graph.node.extend(nodes)
        self.graph.initializer.extend(self._new_inits)
        read = set(self.graph_outputs)
        _reads(self.graph, read)
        inits = self.graph.initializer
        for i in reversed(range(len(inits))):
            if inits[i].name in self._touched and inits[i].name not in read:
                del inits[i]
        self.inits = {t.name: t for t in inits}
        self.nodes = list(self.graph.node)
        self._before, self._dropped, self._new_inits = {}, set(), []


def _reads(graph, acc):
    """Every name a node of `graph` (or of its subgraphs) reads."""
    for n in graph.node:
        acc.update(n.input)
        for a in n.attribute:
            for g in list(a.graphs) + ([a.g] if a.HasField("g") else []):
                _reads(g, acc)
                acc.update(v.name for v in g.output)
