// Fusion passes: pattern matching over single-use chains. A node is absorbed only when its
// output feeds exactly one node and is not a graph output, so nothing else sees the change.
#include "graph/fuse.h"

#include <algorithm>
#include <cmath>
#include <unordered_map>

#include "graph/fold.h"
#include "kernels/generic/kernels_generic.h"

namespace ember {
namespace {

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

const Tensor* constant(const Graph& g, int id) {
  auto it = g.constants.find(id);
  return it == g.constants.end() ? nullptr : &it->second;
}

// A constant float32 scalar (any shape of one element) close to `want`.
bool is_scalar(const Graph& g, int id, double want) {
  const Tensor* t = constant(g, id);
  if (!t || t->dtype() != DType::F32 || t->numel() != 1) return false;
  double v = t->ptr<float>()[0];
  return std::fabs(v - want) <= 1e-4 * std::fabs(want);
}

// The other input of a binary node when one of its inputs is `id`; -1 otherwise.
int other_input(const Node& n, int id) {
  if (n.inputs.size() != 2) return -1;
  if (n.inputs[0] == id) return n.inputs[1];
  if (n.inputs[1] == id) return n.inputs[0];
  return -1;
}

// Node `i` of op `op` reads `id` and a scalar constant `value`.
bool binary_with_scalar(const Graph& g, int i, OpType op, int id, double value) {
  if (i < 0 || g.nodes[i].op != op) return false;
  int other = other_input(g.nodes[i], id);
  return other >= 0 && is_scalar(g, other, value);
}

}  // namespace

int fuse_gelu(Graph& g) {
  Uses uses(g);
  std::vector<bool> drop(g.nodes.size(), false);
  int fused = 0;
  const double inv_sqrt2 = 1.0 / std::sqrt(2.0);
  for (size_t e = 0; e < g.nodes.size(); e++) {
    if (g.nodes[e].op != OpType::Erf || drop[e]) continue;
    // u = x / sqrt2 (or x * 1/sqrt2) -> erf -> + 1
    int u = g.nodes[e].inputs[0];
    int scale = uses.producer_of(u);
    if (scale < 0 || uses.single_reader(u) != (int)e) continue;
    const Node& sn = g.nodes[scale];
    int x = -1;
    if (sn.op == OpType::Div && sn.inputs.size() == 2 && is_scalar(g, sn.inputs[1], std::sqrt(2.0)))
      x = sn.inputs[0];
    if (sn.op == OpType::Mul && (is_scalar(g, sn.inputs[1], inv_sqrt2) || is_scalar(g, sn.inputs[0], inv_sqrt2)))
      x = is_scalar(g, sn.inputs[1], inv_sqrt2) ? sn.inputs[0] : sn.inputs[1];
    if (x < 0) continue;
    int erf_out = g.nodes[e].outputs[0];
    int add = uses.single_reader(erf_out);
    if (!binary_with_scalar(g, add, OpType::Add, erf_out, 1.0)) continue;
    int s = g.nodes[add].outputs[0];
    int m1 = uses.single_reader(s);
    if (m1 < 0 || g.nodes[m1].op != OpType::Mul) continue;
    int o = other_input(g.nodes[m1], s);
    std::vector<int> chain = {scale, (int)e, add, m1};
    int result = -1;
    if (o == x) {
      // x * (1 + erf) then * 0.5
      int m2 = uses.single_reader(g.nodes[m1].outputs[0]);
      if (!binary_with_scalar(g, m2, OpType::Mul, g.nodes[m1].outputs[0], 0.5)) continue;
      chain.push_back(m2);
      result = g.nodes[m2].outputs[0];
    } else {
      // (x * 0.5) * (1 + erf)
      int half = uses.producer_of(o);
      if (half < 0 || uses.single_reader(o) != m1 || !binary_with_scalar(g, half, OpType::Mul, x, 0.5))
        continue;
      chain.push_back(half);
      result = g.nodes[m1].outputs[0];
    }
    // Rewrite: the last node of the chain (in graph order) becomes Gelu(x) -> result.
    int last = *std::max_element(chain.begin(), chain.end());
    bool clash = false;
    for (int i : chain) clash = clash || drop[i];
    if (clash) continue;
    for (int i : chain) drop[i] = true;
    drop[last] = false;
    Node gelu;
    gelu.op = OpType::Gelu;
    gelu.name = g.nodes[e].name + "/gelu";
    gelu.inputs = {x};
    gelu.outputs = {result};
    g.nodes[last] = std::move(gelu);
    fused++;
  }
  std::vector<Node> kept;
  for (size_t i = 0; i < g.nodes.size(); i++)
    if (!drop[i]) kept.push_back(std::move(g.nodes[i]));
  g.nodes = std::move(kept);
  return fused;
}

int fuse_matmul(Graph& g) {
  Uses uses(g);
  std::vector<bool> drop(g.nodes.size(), false);
  int fused = 0;
  for (size_t mi = 0; mi < g.nodes.size(); mi++) {
    Node& mm = g.nodes[mi];
    if (mm.op != OpType::MatMul || drop[mi]) continue;
    const Tensor* w = constant(g, mm.inputs[1]);
    if (!w || w->dtype() != DType::F32 || w->rank() != 2) continue;
    int64_t K = w->dim(0), N = w->dim(1);
    int y = mm.outputs[0];
    std::vector<int> absorbed = {(int)mi};
    int bias = -1;
    std::string act = "none";
    int add = uses.single_reader(y);
    if (add >= 0 && g.nodes[add].op == OpType::Add) {
      int b = other_input(g.nodes[add], y);
      const Tensor* bt = constant(g, b);
      if (bt && bt->dtype() == DType::F32 && bt->shape() == Shape{N}) {
        bias = b;
        absorbed.push_back(add);
        y = g.nodes[add].outputs[0];
      }
    }
    int a = uses.single_reader(y);
    if (a >= 0 && (g.nodes[a].op == OpType::Relu || g.nodes[a].op == OpType::Gelu)) {
      const Node& an = g.nodes[a];
      act = an.op == OpType::Relu ? "relu"
            : an.attrs.get_string("approximate", "none") == "tanh" ? "gelu_tanh" : "gelu";
      absorbed.push_back(a);
      y = an.outputs[0];
    }
    Tensor packed = Tensor::empty(DType::F32, {(N + 15) / 16, K, 16});
    cpu::sgemm_pack_b(w->ptr<float>(), N, 1, K, N, packed.ptr<float>());
    int wp = g.add_value(g.values[mm.inputs[1]].name + "/packed", DType::F32);
    g.constants[wp] = packed;
    Node f;
    f.op = OpType::FusedMatMul;
    f.name = mm.name;
    f.inputs = {mm.inputs[0], wp};
    if (bias >= 0) f.inputs.push_back(bias);
    f.outputs = {y};
    f.attrs.set("n", N);
    f.attrs.set("activation", act);
    // The fused node takes the place of the last node it absorbs (inputs are all earlier).
    int last = *std::max_element(absorbed.begin(), absorbed.end());
    for (int i : absorbed) drop[i] = i != last;
    g.nodes[last] = std::move(f);
    fused++;
  }
  std::vector<Node> kept;
  for (size_t i = 0; i < g.nodes.size(); i++)
    if (!drop[i]) kept.push_back(std::move(g.nodes[i]));
  g.nodes = std::move(kept);
  return fused;
}

int fuse_graph(Graph& graph) {
  int n = fuse_gelu(graph) + fuse_matmul(graph);
  if (n) eliminate_dead_nodes(graph);
  return n;
}

}  // namespace ember
