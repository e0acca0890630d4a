// Plan compilation: dead-node pruning for the requested outputs, a forward pass that infers
// types and folds anything computable from shapes and constants, kernel choice, memory plan.
#include "runtime/plan.h"

#include <cstdio>
#include <algorithm>
#include <cstdlib>

#include "graph/fold.h"
#include "graph/memory_plan.h"

namespace ember {
namespace {

int debug_level() {
  static const int level = [] {
    const char* env = std::getenv("EMBER_DEBUG");
    return env ? std::atoi(env) : 0;
  }();
  return level;
}

// Nodes needed for `outputs`, by index.
std::vector<bool> needed_nodes(const Graph& g, const std::vector<int>& outputs) {
  std::vector<bool> live(g.values.size(), false), need(g.nodes.size(), false);
  for (int id : outputs) live[id] = true;
  for (int i = (int)g.nodes.size() - 1; i >= 0; i--) {
    const Node& n = g.nodes[i];
    bool needed = op_def(n.op).flags & kOpStateful;
    for (int id : n.outputs) needed = needed || (id >= 0 && live[id]);
    if (!needed) continue;
    need[i] = true;
    for (int id : n.inputs) if (id >= 0) live[id] = true;
  }
  return need;
}

}  // namespace

std::shared_ptr<Plan> plan_compile(const PlanRequest& req) {
  const Graph& g = *req.graph;
  auto plan = std::make_shared<Plan>();
  size_t nv = g.values.size();
  plan->types.assign(nv, TensorType{});
  plan->kinds.assign(nv, SlotKind::Unused);
  plan->offsets.assign(nv, 0);
  plan->known.assign(nv, Tensor());
  plan->outputs = req.outputs;

  for (const auto& [id, t] : g.constants) {
    plan->types[id] = {t.dtype(), t.shape()};
    plan->kinds[id] = SlotKind::Known;
    plan->known[id] = t;
  }
  // Small values computed from feeds (a fed shape, its Cast, ...), offered to shape
  // inference; `deps` holds the feed slots each derives from. A plan that reads one is keyed
  // on those feeds' values. The nodes still run at run time.
  std::vector<Tensor> tentative(nv);
  std::vector<uint64_t> deps(nv, 0);
  for (size_t i = 0; i < g.inputs.size(); i++) {
    plan->types[g.inputs[i]] = req.feeds[i];
    plan->kinds[g.inputs[i]] = SlotKind::Feed;
    if (i < 64 && req.feed_values[i]) {
      tentative[g.inputs[i]] = *req.feed_values[i];
      deps[g.inputs[i]] = 1ull << i;
    }
  }

  std::vector<bool> need = needed_nodes(g, req.outputs);
  size_t fold_left = kFoldBudgetBytes;  // big folds past this run from the arena instead
  std::vector<int> step_node;  // node index per step
  for (size_t ni = 0; ni < g.nodes.size(); ni++) {
    if (!need[ni]) continue;
    const Node& node = g.nodes[ni];
    const OpDef& def = op_def(node.op);
    InferCtx ictx{node, {}, {}, ErrorKind::Input};
    bool all_known = true, all_values = true;
    std::vector<Tensor> shape_stubs(node.inputs.size());
    for (size_t k = 0; k < node.inputs.size(); k++) {
      int id = node.inputs[k];
      if (id < 0) {
        ictx.in.push_back({});
        ictx.values.push_back(nullptr);
        continue;
      }
      ictx.in.push_back(plan->types[id]);
      bool known = plan->kinds[id] == SlotKind::Known;
      if (!known && (def.flags & kOpShapeOnly)) {
        // Shape/Size read only the shape: stand in a data-less tensor.
        shape_stubs[k] = Tensor::borrow(plan->types[id].dtype, plan->types[id].shape, nullptr);
        ictx.values.push_back(&shape_stubs[k]);
        continue;
      }
      const Tensor* fed = tentative[id].defined() ? &tentative[id] : nullptr;
      ictx.values.push_back(known ? &plan->known[id] : fed);
      all_known = all_known && known;
      all_values = all_values && (known || fed);
    }
    // Checked types (sizes, ranks) before anything is allocated for this node.
    std::vector<TensorType> out_types = op_infer(ictx);
    if (all_known && !(def.flags & kOpStateful) && fold_budget_take(out_types, &fold_left)) {
      std::vector<Tensor> outs = evaluate_node(node, ictx.values, ErrorKind::Input);
      for (size_t k = 0; k < node.outputs.size(); k++) {
        int id = node.outputs[k];
        if (id < 0) continue;
        plan->types[id] = {outs[k].dtype(), outs[k].shape()};
        plan->kinds[id] = SlotKind::Known;
        plan->known[id] = outs[k];
        plan->folded_bytes += outs[k].nbytes();
      }
      plan->info.push_back({node.name, def.name, "folded", "-"});
      continue;
    }
    uint64_t in_deps = 0, read_deps = 0;
    for (size_t k = 0; k < node.inputs.size(); k++) {
      int id = node.inputs[k];
      if (id < 0) continue;
      in_deps |= deps[id];
      if (k < 64 && (ictx.values_read >> k & 1)) read_deps |= deps[id];
    }
    for (int slot = 0; slot < 64; slot++) {
      bool read = read_deps >> slot & 1;
      if (read && std::find(plan->value_feeds.begin(), plan->value_feeds.end(), slot) == plan->value_feeds.end())
        plan->value_feeds.push_back(slot);
    }
    if (all_values && in_deps && !(def.flags & kOpStateful)) {
      bool small = true;
      for (const TensorType& t : out_types) small = small && shape_numel(t.shape) <= kMaxValueFeed;
      if (small) {
        try {
          std::vector<Tensor> outs = evaluate_node(node, ictx.values, ErrorKind::Input);
          for (size_t k = 0; k < node.outputs.size(); k++) {
            if (node.outputs[k] < 0) continue;
            tentative[node.outputs[k]] = outs[k];
            deps[node.outputs[k]] = in_deps;
          }
        } catch (const Error&) {
          // Not computable ahead of time (e.g. a bad index): the run reports it.
        }
      }
    }
    for (size_t k = 0; k < node.outputs.size(); k++) {
      int id = node.outputs[k];
      if (id < 0) continue;
      EMBER_CHECK(k < out_types.size(), Internal, "[plan] ", def.name, " inferred ",
                  out_types.size(), " outputs, node has ", node.outputs.size());
      plan->types[id] = out_types[k];
      plan->kinds[id] = SlotKind::Arena;
    }
    Step step{&node, def.reference, "reference", Isa::Generic};
    if (!req.reference_kernels) {
      if (const KernelEntry* e = cpu_kernel_find(ictx, req.isa)) step = {&node, e->fn, e->name, e->isa};
    }
    plan->steps.push_back(step);
    step_node.push_back((int)ni);
    plan->info.push_back({node.name, def.name, step.kernel, isa_name(step.isa)});
    if (debug_level() >= 3)
      std::fprintf(stderr, "[ember] %s (%s): %s/%s\n", node.name.c_str(), def.name, step.kernel,
                   isa_name(step.isa));
  }

  // Requested outputs get their own buffers; everything else computed goes in the arena.
  for (int id : req.outputs) {
    if (plan->kinds[id] == SlotKind::Arena) plan->kinds[id] = SlotKind::Output;
    const TensorType& t = plan->types[id];
    plan->output_bytes += (size_t)shape_numel(t.shape) * dtype_size(t.dtype);
  }
  std::vector<int> first(nv, -1), last(nv, -1);
  for (int s = 0; s < (int)plan->steps.size(); s++) {
    for (int id : plan->steps[s].node->outputs) if (id >= 0) first[id] = last[id] = s;
    for (int id : plan->steps[s].node->inputs) if (id >= 0) last[id] = s;
  }
  std::vector<BufferLife> lives;
  std::vector<int> life_ids;
  for (size_t id = 0; id < nv; id++) {
    if (plan->kinds[id] != SlotKind::Arena) continue;
    const TensorType& t = plan->types[id];
    lives.push_back({(size_t)shape_numel(t.shape) * dtype_size(t.dtype), first[id], last[id]});
    life_ids.push_back((int)id);
  }
  MemoryPlan mp = memory_plan(lives);
  for (size_t i = 0; i < life_ids.size(); i++) plan->offsets[life_ids[i]] = mp.offsets[i];
  plan->arena_bytes = mp.peak_bytes;
  return plan;
}

}  // namespace ember
