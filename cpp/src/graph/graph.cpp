#include "ember/graph.h"

#include <unordered_set>

namespace ember {

int Graph::add_value(const std::string& name, DType dtype) {
  ValueInfo v;
  v.name = name;
  v.dtype = dtype;
  values.push_back(std::move(v));
  return (int)values.size() - 1;
}

int Graph::find_value(const std::string& name) const {
  for (size_t i = 0; i < values.size(); i++) if (values[i].name == name) return (int)i;
  return -1;
}

size_t Graph::constant_bytes() const {
  size_t n = 0;
  for (const auto& [id, t] : constants) n += t.nbytes();
  return n;
}

void Graph::validate() const {
  int nv = (int)values.size();
  auto check_id = [&](int id, const std::string& where) {
    EMBER_CHECK(id >= 0 && id < nv, Model, "[graph] ", where, " refers to value id ", id,
                " of ", nv);
  };
  std::vector<uint8_t> defined(nv, 0);
  for (int id : inputs) {
    check_id(id, "graph input");
    EMBER_CHECK(!defined[id], Model, "[graph] value '", values[id].name, "' is defined twice");
    defined[id] = 1;
  }
  for (const auto& [id, t] : constants) {
    check_id(id, "constant");
    EMBER_CHECK(!defined[id], Model, "[graph] value '", values[id].name,
                "' is both a graph input and a constant");
    defined[id] = 1;
  }
  for (const Node& node : nodes) {
    EMBER_CHECK(op_has_def(node.op), Model, "[graph] node '", node.name, "' has an unknown op");
    op_validate(node);
    for (const auto& [name, value] : node.attrs.items()) {
      if (auto sub = std::get_if<std::shared_ptr<const Graph>>(&value)) (*sub)->validate();
    }
    for (int id : node.inputs) {
      if (id < 0) continue;
      check_id(id, "node '" + node.name + "'");
      EMBER_CHECK(defined[id], Model, "[graph] node '", node.name, "' reads '", values[id].name,
                  "' before anything defines it");
    }
    for (int id : node.outputs) {
      if (id < 0) continue;
      check_id(id, "node '" + node.name + "'");
      EMBER_CHECK(!defined[id], Model, "[graph] value '", values[id].name,
                  "' is defined twice (node '", node.name, "')");
      defined[id] = 1;
    }
  }
  EMBER_CHECK(!outputs.empty(), Model, "[graph] the graph has no outputs");
  for (int id : outputs) {
    check_id(id, "graph output");
    EMBER_CHECK(defined[id], Model, "[graph] output '", values[id].name, "' is never computed");
  }
}

}  // namespace ember
