// Helpers shared by the fusion passes (fuse.cpp, fuse_quant.cpp): who reads and writes each
// value, constant lookups, and the Rewriter that replaces matched chains by one node.
#pragma once
#include <algorithm>
#include <cmath>
#include <string>
#include <unordered_map>
#include <vector>

#include "ember/graph.h"

namespace ember::fuse {

struct Uses {
  std::unordered_map<int, std::vector<int>> readers;  // value id -> node indexes reading it
  std::unordered_map<int, int> producer;              // value id -> node index writing it
  std::vector<bool> is_output;                        // per value id

  explicit Uses(const Graph& g) : is_output(g.values.size(), false) {
    for (int id : g.outputs) is_output[id] = true;
    for (size_t i = 0; i < g.nodes.size(); i++) {
      for (int id : g.nodes[i].inputs) if (id >= 0) readers[id].push_back((int)i);
      for (int id : g.nodes[i].outputs) if (id >= 0) producer[id] = (int)i;
    }
  }
  int producer_of(int id) const {
    auto it = producer.find(id);
    return it == producer.end() ? -1 : it->second;
  }
  // The one node reading `id`, or -1 (several readers, a graph output, or none).
  int single_reader(int id) const {
    auto it = readers.find(id);
    if (id < 0 || is_output[id] || it == readers.end() || it->second.size() != 1) return -1;
    return it->second[0];
  }
};

inline const Tensor* constant(const Graph& g, int id) {
  auto it = g.constants.find(id);
  return it == g.constants.end() ? nullptr : &it->second;
}

// Whether every value of the ints attribute `name` is v (true when it is absent: the ONNX
// defaults of strides, dilations and pads are all 1 or all 0).
inline bool all_equal(const Attrs& at, const char* name, int64_t v) {
  if (!at.has(name)) return true;
  for (int64_t x : at.get_ints(name))
    if (x != v) return false;
  return true;
}

// Whether value `id` is a float32 constant of shape [n] (a bias the fused kernels can read).
inline bool f32_vector_constant(const Graph& g, int id, int64_t n) {
  const Tensor* t = constant(g, id);
  return t && t->dtype() == DType::F32 && t->shape() == Shape{n};
}

// `packed` (weights repacked for a fused node) as a new constant named after the value w_id
// plus `suffix`; returns its id. The plain weights are freed now when the node being fused was
// their only reader, not at the final clean-up: the peak then holds one layer twice, not the
// model.
inline int add_packed_weights(Graph& g, const Uses& uses, int w_id, const std::string& suffix,
                              Tensor packed) {
  std::string name = g.values[w_id].name + suffix;
  int id = g.add_value(name, packed.dtype());
  g.constants[id] = std::move(packed);
  if (uses.readers.at(w_id).size() == 1 && !uses.is_output[w_id]) g.constants.erase(w_id);
  return id;
}

// A float32 constant of shape [] or [1]: broadcasting it never changes the other operand's
// shape, so the node it feeds can be rewritten without one.
inline const Tensor* scalar_constant(const Graph& g, int id) {
  const Tensor* t = constant(g, id);
  return t && t->dtype() == DType::F32 && t->numel() == 1 && t->rank() <= 1 ? t : nullptr;
}

// A scalar constant (as above) close to `want`.
inline bool is_scalar(const Graph& g, int id, double want) {
  const Tensor* t = scalar_constant(g, id);
  if (!t) return false;
  double v = t->ptr<float>()[0];
  return std::fabs(v - want) <= 1e-4 * std::fabs(want);
}

// The other input of a binary node when one of its inputs is `id`; -1 otherwise.
inline int other_input(const Node& n, int id) {
  if (n.inputs.size() != 2) return -1;
  if (n.inputs[0] == id) return n.inputs[1];
  if (n.inputs[1] == id) return n.inputs[0];
  return -1;
}

// Node `i` of op `op` reads `id` and a scalar constant `value`.
inline bool binary_with_scalar(const Graph& g, int i, OpType op, int id, double value) {
  if (i < 0 || g.nodes[i].op != op) return false;
  int other = other_input(g.nodes[i], id);
  return other >= 0 && is_scalar(g, other, value);
}

// One pass's rewrites: each fused node takes the place of the last node it replaces (its
// inputs are all defined earlier), the others are dropped when the pass finishes.
struct Rewriter {
  Graph& g;
  Uses uses;
  std::vector<bool> drop;
  int fused = 0;

  explicit Rewriter(Graph& graph) : g(graph), uses(graph), drop(graph.nodes.size(), false) {}
  // None of `nodes` (-1 entries ignored) is taken by an earlier rewrite.
  bool free(const std::vector<int>& nodes) const {
    for (int i : nodes) if (i >= 0 && drop[i]) return false;
    return true;
  }
  void replace(const std::vector<int>& nodes, Node f) {
    int last = *std::max_element(nodes.begin(), nodes.end());
    for (int i : nodes) if (i >= 0) drop[i] = i != last;
    g.nodes[last] = std::move(f);
    fused++;
  }
  int finish() {
    std::vector<Node> kept;
    for (size_t i = 0; i < g.nodes.size(); i++)
      if (!drop[i]) kept.push_back(std::move(g.nodes[i]));
    g.nodes = std::move(kept);
    return fused;
  }
};

// What follows a matmul-like node whose output `y` has N columns: optionally Add(., bias) with
// bias a constant f32 [N] (unless the node has its own bias: take_add false), then optionally
// Relu or Gelu, each the single reader of the last.
struct Epilogue {
  int bias = -1;                 // the bias value id, or -1
  std::string act = "none";      // "none" | "relu" | "gelu" | "gelu_tanh"
  std::vector<int> nodes;        // the absorbed node indexes
  int y = -1;                    // the chain's final output
};
inline Epilogue absorb_epilogue(const Graph& g, const Uses& uses, int y, int64_t N,
                                bool take_add = true) {
  Epilogue ep;
  ep.y = y;
  int add = take_add ? uses.single_reader(ep.y) : -1;
  if (add >= 0 && g.nodes[add].op == OpType::Add) {
    int b = other_input(g.nodes[add], ep.y);
    const Tensor* bt = constant(g, b);
    if (bt && bt->dtype() == DType::F32 && bt->shape() == Shape{N}) {
      ep.bias = b;
      ep.nodes.push_back(add);
      ep.y = g.nodes[add].outputs[0];
    }
  }
  int a = uses.single_reader(ep.y);
  if (a >= 0 && (g.nodes[a].op == OpType::Relu || g.nodes[a].op == OpType::Gelu)) {
    const Node& an = g.nodes[a];
    ep.act = an.op == OpType::Relu ? "relu"
             : an.attrs.get_string("approximate", "none") == "tanh" ? "gelu_tanh" : "gelu";
    ep.nodes.push_back(a);
    ep.y = an.outputs[0];
  }
  return ep;
}

}  // namespace ember::fuse
