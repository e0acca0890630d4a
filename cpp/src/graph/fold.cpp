#include "graph/fold.h"

#include <unordered_set>

namespace ember {

std::vector<Tensor> evaluate_node(const Node& node, const std::vector<const Tensor*>& inputs,
                                  ErrorKind error_kind) {
  const OpDef& def = op_def(node.op);
  InferCtx ictx{node, {}, inputs, error_kind};
  for (const Tensor* t : inputs)
    ictx.in.push_back(t ? TensorType{t->dtype(), t->shape()} : TensorType{});
  std::vector<TensorType> types = op_infer(ictx);
  std::vector<Tensor> outs(node.outputs.size());
  KernelCtx kctx{node, inputs, std::vector<Tensor*>(node.outputs.size(), nullptr), 1};
  for (size_t i = 0; i < node.outputs.size() && i < types.size(); i++) {
    if (node.outputs[i] < 0) continue;
    outs[i] = Tensor::empty(types[i].dtype, types[i].shape);
    kctx.out[i] = &outs[i];
  }
  def.reference(kctx);
  return outs;
}

bool fold_budget_take(const std::vector<TensorType>& types, size_t* budget_left) {
  size_t bytes = 0;
  bool small = true;
  for (const TensorType& t : types) {
    // op_infer checked each type: no overflow here.
    bytes += (size_t)tensor_bytes_checked(t, ErrorKind::Internal, "[fold]");
    small = small && shape_numel(t.shape) <= kFoldAlwaysElements;
  }
  if (small) return true;
  if (bytes > *budget_left) return false;
  *budget_left -= bytes;
  return true;
}

int fold_constants(Graph& graph) {
  std::vector<Node> kept;
  int folded = 0;
  size_t budget = kFoldBudgetBytes + 4 * graph.constant_bytes();
  for (Node& node : graph.nodes) {
    const OpDef& def = op_def(node.op);
    bool foldable = !(def.flags & (kOpStateful | kOpDynamic));
    std::vector<const Tensor*> in;
    for (int id : node.inputs) {
      if (id < 0) {
        in.push_back(nullptr);
        continue;
      }
      auto it = graph.constants.find(id);
      if (it == graph.constants.end()) {
        foldable = false;
        break;
      }
      in.push_back(&it->second);
    }
    if (foldable) {
      InferCtx ictx{node, {}, in, ErrorKind::Model};
      for (const Tensor* t : in) ictx.in.push_back(t ? TensorType{t->dtype(), t->shape()} : TensorType{});
      foldable = fold_budget_take(op_infer(ictx), &budget);
    }
    if (!foldable) {
      kept.push_back(std::move(node));
      continue;
    }
    std::vector<Tensor> outs = evaluate_node(node, in, ErrorKind::Model);
    for (size_t i = 0; i < node.outputs.size(); i++)
      if (node.outputs[i] >= 0) graph.constants[node.outputs[i]] = outs[i];
    folded++;
  }
  graph.nodes = std::move(kept);
  eliminate_dead_nodes(graph);
  return folded;
}

namespace {

// Node input `k` of a control-flow node is subgraph input `k - shift` of each subgraph attr.
struct CaptureSpan {
  int begin, end, shift;
};

CaptureSpan capture_span(const Node& node) {
  int n = (int)node.inputs.size();
  if (node.op == OpType::If) return {1, n, 1};
  if (node.op == OpType::Loop) return {n - (int)node.attrs.get_int("captured", 0), n, 0};
  return {0, 0, 0};
}

}  // namespace

int bind_constant_captures(Graph& graph) {
  int moved = 0;
  for (Node& node : graph.nodes) {
    CaptureSpan span = capture_span(node);
    std::vector<int> bind;  // node input indexes, ascending
    for (int k = std::max(span.begin, 0); k < span.end; k++)
      if (node.inputs[k] >= 0 && graph.constants.count(node.inputs[k])) bind.push_back(k);
    if (bind.empty()) continue;
    Attrs attrs;
    for (const auto& [name, value] : node.attrs.items()) {
      auto sub = std::get_if<std::shared_ptr<const Graph>>(&value);
      if (!sub) {
        attrs.set(name, value);
        continue;
      }
      auto g = std::make_shared<Graph>(**sub);
      for (int k : bind) g->constants[g->inputs[k - span.shift]] = graph.constants.at(node.inputs[k]);
      for (auto it = bind.rbegin(); it != bind.rend(); ++it) g->inputs.erase(g->inputs.begin() + (*it - span.shift));
      attrs.set(name, std::shared_ptr<const Graph>(std::move(g)));
    }
    for (auto it = bind.rbegin(); it != bind.rend(); ++it) node.inputs.erase(node.inputs.begin() + *it);
    if (node.op == OpType::Loop) attrs.set("captured", (int64_t)(span.end - span.begin - (int)bind.size()));
    node.attrs = std::move(attrs);
    moved += (int)bind.size();
  }
  if (moved) eliminate_dead_nodes(graph);
  return moved;
}

int eliminate_dead_nodes(Graph& graph) {
  std::unordered_set<int> live(graph.outputs.begin(), graph.outputs.end());
  std::vector<bool> keep(graph.nodes.size(), false);
  for (int i = (int)graph.nodes.size() - 1; i >= 0; i--) {
    const Node& node = graph.nodes[i];
    bool needed = op_def(node.op).flags & kOpStateful;
    for (int id : node.outputs) needed = needed || (id >= 0 && live.count(id));
    if (!needed) continue;
    keep[i] = true;
    for (int id : node.inputs) if (id >= 0) live.insert(id);
  }
  std::vector<Node> kept;
  for (size_t i = 0; i < graph.nodes.size(); i++)
    if (keep[i]) kept.push_back(std::move(graph.nodes[i]));
  int removed = (int)(graph.nodes.size() - kept.size());
  graph.nodes = std::move(kept);
  for (auto it = graph.constants.begin(); it != graph.constants.end();) {
    it = live.count(it->first) ? std::next(it) : graph.constants.erase(it);
  }
  return removed;
}

}  // namespace ember
