// Graph building from Python: the ONNX importer and model builders call these.
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cstring>

#include "convert.h"
#include "ember/graph.h"

namespace ember::py {

namespace {

Tensor owned_copy(const Array& a, const std::string& dtype_override, const std::string& what) {
  return tensor_from_array(a, dtype_override, what).clone();
}

AttrValue attr_from_python(const nb::handle& v, const std::string& name) {
  if (nb::isinstance<nb::bool_>(v)) return (int64_t)nb::cast<bool>(v);
  if (nb::isinstance<nb::int_>(v)) return nb::cast<int64_t>(v);
  if (nb::isinstance<nb::float_>(v)) return nb::cast<double>(v);
  if (nb::isinstance<nb::str>(v)) return nb::cast<std::string>(v);
  if (nb::isinstance<nb::list>(v) || nb::isinstance<nb::tuple>(v)) {
    bool any_float = false;
    for (nb::handle x : v) any_float = any_float || nb::isinstance<nb::float_>(x);
    if (any_float) {
      std::vector<double> out;
      for (nb::handle x : v) out.push_back(nb::cast<double>(x));
      return out;
    }
    std::vector<int64_t> out;
    for (nb::handle x : v) out.push_back(nb::cast<int64_t>(x));
    return out;
  }
  Graph* sub = nullptr;
  if (nb::try_cast(v, sub) && sub) return std::shared_ptr<const Graph>(std::make_shared<Graph>(*sub));
  Array a;
  if (nb::try_cast(v, a)) return owned_copy(a, "", "attribute " + name);
  fail(ErrorKind::Model, "[graph] attribute '", name, "' has an unsupported Python type");
}

// Declared dtype (a name, or None) and dims (ints, symbol strings or None each; None: rank
// unknown) of a value.
void declare_value(ValueInfo& v, nb::handle dtype, nb::handle dims) {
  if (!dtype.is_none()) {
    std::string s = nb::cast<std::string>(dtype);
    EMBER_CHECK(dtype_from_name(s, &v.dtype), Model, "[graph] value '", v.name,
                "': unsupported dtype ", s);
  }
  if (dims.is_none()) return;
  v.has_shape = true;
  v.dims.clear();
  for (nb::handle d : dims) {
    Dim dim;
    if (nb::isinstance<nb::int_>(d)) dim.value = nb::cast<int64_t>(d);
    else if (nb::isinstance<nb::str>(d)) dim.symbol = nb::cast<std::string>(d);
    v.dims.push_back(dim);
  }
}

}  // namespace

void init_graph(nb::module_& m) {
  nb::class_<Graph>(m, "Graph")
      .def(nb::init<>())
      .def(
          "add_value",
          [](Graph& g, const std::string& name, nb::object dtype, nb::object dims) {
            int id = g.add_value(name);
            declare_value(g.values[id], dtype, dims);
            return id;
          },
          nb::arg("name"), nb::arg("dtype") = nb::none(), nb::arg("dims") = nb::none())
      .def(
          "declare",
          [](Graph& g, int id, nb::object dtype, nb::object dims) {
            EMBER_CHECK(id >= 0 && id < (int)g.values.size(), Model, "[graph] bad value id ", id);
            declare_value(g.values[id], dtype, dims);
          },
          nb::arg("id"), nb::arg("dtype") = nb::none(), nb::arg("dims") = nb::none())
      .def("find_value", &Graph::find_value)
      .def("add_input", [](Graph& g, int id) { g.inputs.push_back(id); })
      .def("add_output", [](Graph& g, int id) { g.outputs.push_back(id); })
      .def(
          "set_constant",
          [](Graph& g, int id, const Array& a, const std::string& dtype) {
            EMBER_CHECK(id >= 0 && id < (int)g.values.size(), Model, "[graph] bad value id ", id);
            g.constants[id] = owned_copy(a, dtype, "constant " + g.values[id].name);
          },
          nb::arg("id"), nb::arg("array"), nb::arg("dtype") = "")
      .def(
          "add_node",
          [](Graph& g, const std::string& op, const std::string& name, std::vector<int> inputs,
             std::vector<int> outputs, nb::dict attrs) {
            Node node;
            EMBER_CHECK(op_from_name(op, &node.op), UnsupportedOp, "[graph] node '", name,
                        "': ember has no op '", op, "'");
            node.name = name;
            node.inputs = std::move(inputs);
            node.outputs = std::move(outputs);
            for (auto [k, v] : attrs) {
              std::string key = nb::cast<std::string>(k);
              node.attrs.set(key, attr_from_python(v, key));
            }
            g.nodes.push_back(std::move(node));
          },
          nb::arg("op"), nb::arg("name"), nb::arg("inputs"), nb::arg("outputs"),
          nb::arg("attrs") = nb::dict())
      .def_prop_ro("num_nodes", [](const Graph& g) { return g.nodes.size(); })
      .def_prop_ro("num_values", [](const Graph& g) { return g.values.size(); });
}

}  // namespace ember::py
