// Plan compilation: dead-node pruning for the requested outputs, a forward pass that infers
// types and folds anything computable from shapes and constants, kernel choice, the eager
// boundary (plan.h), memory plan. Also the plan cache.
#include "runtime/plan.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "graph/fold.h"
#include "graph/memory_plan.h"

namespace ember {
namespace {

// Ops whose output is their first input's bytes under another shape.
bool is_view_op(OpType op) {
  return op == OpType::Reshape || op == OpType::Squeeze || op == OpType::Unsqueeze ||
         op == OpType::Flatten || op == OpType::Identity;
}

void alias_step(const KernelCtx&) {}  // the output already is the input's memory

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

// Values the nodes from `from` on (those needed) and the requested outputs read.
std::vector<bool> read_after(const Graph& g, const std::vector<bool>& need, int from,
                             const std::vector<int>& outputs) {
  std::vector<bool> read(g.values.size(), false);
  for (int id : outputs) read[id] = true;
  for (size_t ni = from; ni < g.nodes.size(); ni++) {
    if (!need[ni]) continue;
    for (int id : g.nodes[ni].inputs) if (id >= 0) read[id] = true;
  }
  return read;
}

// The device's kernel for this node, if it has one. It sees input values only where they
// are constants or feeds: those are the inputs a device step gets host copies of
// (KernelCtx::host_in), whatever shape inference could compute ahead.
void choose_device_kernel(Plan& plan, const PlanRequest& req, InferCtx& ictx, Step& step) {
  InferCtx dctx = ictx;
  dctx.values_read = 0;
  for (size_t k = 0; k < step.in.size(); k++) {
    int id = step.in[k];
    bool host_stable = id >= 0 && (plan.kinds[id] == SlotKind::Known || plan.kinds[id] == SlotKind::Feed);
    if (!host_stable && k < dctx.values.size()) dctx.values[k] = nullptr;
  }
  DeviceKernel dk = req.device->find_kernel(dctx, req.device_options);
  ictx.values_read |= dctx.values_read;
  if (!dk.fn) {
    plan.fallbacks.push_back(&ictx.node);
    return;
  }
  step.fn = dk.fn;
  step.kernel = dk.name;
  step.isa = Isa::Generic;
  step.on_device = true;
  step.prepare = dk.prepare;
}

// A stateful node writes some of its feeds in place (PagedAttention's KV caches), so it must run
// where they are bound: elsewhere its writes would land in a copy and be lost. True when every
// feed it writes (OpDef::writes_inputs; all its feeds when unset) is bound in device memory;
// false when they all are on the host (it stays on the CPU, listed with the fallbacks); feeds
// it writes on both sides, or on the device of a device without its op, are an error.
bool stateful_on_device(const Plan& plan, const PlanRequest& req, const Node& node) {
  const uint32_t writes = op_def(node.op).writes_inputs;
  bool host = false, device = false;
  for (size_t k = 0; k < node.inputs.size(); k++) {
    const int id = node.inputs[k];
    if (id < 0 || plan.kinds[id] != SlotKind::Feed || (writes && (k >= 32 || !(writes >> k & 1))))
      continue;
    const size_t i = std::find(req.bound.begin(), req.bound.end(), id) - req.bound.begin();
    const bool on = i < req.bound_on_device.size() && req.bound_on_device[i];
    (on ? device : host) = true;
  }
  EMBER_CHECK(!(host && device), Input, "[plan] node '", node.name, "' (", op_def(node.op).name,
              ") writes its inputs in place, and they are bound partly on the host, partly on ",
              "the device: bind them all on one side");
  return device;
}

void copy_to_device_step(const KernelCtx& ctx) {
  ctx.device->copy_to_device(ctx.output(0).data(), ctx.input(0).data(), ctx.input(0).nbytes());
}

void copy_to_host_step(const KernelCtx& ctx) {
  ctx.device->copy_to_host(ctx.output(0).data(), ctx.input(0).data(), ctx.input(0).nbytes());
}

// Rewrites the steps so each reads values on its own side: a copy slot and a copy step
// before the first use on the other side (constants: a device slot filled at bind). Then the
// values read on the host after the steps (outputs, carried values) get host slots.
void place_copies(Plan& plan, const PlanRequest& req) {
  const Graph& g = *req.graph;
  size_t nv = plan.types.size();
  plan.on_device.assign(nv, 0);
  for (size_t i = 0; i < req.bound_on_device.size(); i++) plan.on_device[req.bound[i]] = req.bound_on_device[i];
  for (const Step& s : plan.steps)
    for (int id : s.out) if (id >= 0) plan.on_device[id] = s.on_device;
  std::vector<int> on_dev(nv, -1), on_host(nv, -1);
  std::map<std::pair<int, DevicePrepareFn>, int> repacked;  // (constant, prepare) -> device slot
  std::vector<Step> steps;
  auto add_slot = [&](int like, const TensorType& type, SlotKind kind, bool device) {
    int slot = (int)plan.types.size();
    plan.types.push_back(type);
    plan.kinds.push_back(kind);
    plan.offsets.push_back(0);
    plan.known.push_back(kind == SlotKind::Known ? plan.known[like] : Tensor());
    plan.on_device.push_back(device);
    plan.source.push_back(like);
    plan.prepared.push_back(nullptr);
    return slot;
  };
  // A constant input of a device step, repacked by the kernel's prepare (or -1: as it is).
  auto repacked_of = [&](const Step& s, int k, int id) -> int {
    if (!s.prepare || plan.kinds[id] != SlotKind::Known) return -1;
    auto key = std::make_pair(id, s.prepare);
    if (auto it = repacked.find(key); it != repacked.end()) return it->second;
    Tensor packed = req.prepared && g.constants.count(id)
                        ? req.prepared->get(id, s.prepare, *s.node, k, plan.known[id])
                        : s.prepare(*s.node, k, plan.known[id]);
    if (!packed.defined()) return -1;
    int slot = add_slot(id, {packed.dtype(), packed.shape()}, SlotKind::Known, true);
    plan.known[slot] = packed;
    plan.prepared[slot] = s.prepare;
    repacked[key] = slot;
    return slot;
  };
  auto copy_of = [&](int id, bool to_device) -> int {
    int have = to_device ? on_dev[id] : on_host[id];
    if (have >= 0) return have;
    // Constants get a Known slot: bind uploads the host tensor.
    SlotKind kind = plan.kinds[id] == SlotKind::Known ? SlotKind::Known : SlotKind::Arena;
    int slot = add_slot(id, plan.types[id], kind, to_device);
    (to_device ? on_dev : on_host)[id] = slot;
    if (kind == SlotKind::Known) return slot;
    Node& copy = plan.copy_nodes.emplace_back();
    copy.op = OpType::Identity;
    copy.name = str_cat(to_device ? "copy to " : "copy from ", req.device->name(), ": ", g.values[id].name);
    copy.inputs = {id};
    copy.outputs = {slot};
    Step step{&copy, to_device ? copy_to_device_step : copy_to_host_step,
              to_device ? "copy_to_device" : "copy_to_host", Isa::Generic, {id}, {slot}, true, true};
    steps.push_back(step);
    plan.info.push_back({copy.name, "Copy", step.kernel, "-", req.device->name()});
    return slot;
  };
  for (Step s : plan.steps) {
    s.host_in.assign(s.in.size(), -1);
    for (size_t k = 0; k < s.in.size(); k++) {
      int& id = s.in[k];
      if (id < 0 || plan.kinds[id] == SlotKind::Unused || plan.on_device[id] == s.on_device) continue;
      if (s.on_device && (plan.kinds[id] == SlotKind::Known || plan.kinds[id] == SlotKind::Feed))
        s.host_in[k] = id;
      int packed = s.on_device ? repacked_of(s, (int)k, id) : -1;
      id = packed >= 0 ? packed : copy_of(id, s.on_device);
    }
    steps.push_back(std::move(s));
  }
  auto read_on_host = [&](int id) {
    if (!plan.on_device[id]) return;
    int slot = copy_of(id, false);
    plan.host_slot[id] = slot;
    if (plan.kinds[id] == SlotKind::Output) {  // the device writes its arena; the copy is the output
      plan.kinds[id] = SlotKind::Arena;
      plan.kinds[slot] = SlotKind::Output;
    }
  };
  // Outputs left on the device stay where they are made; the executor moves the rest.
  if (!req.outputs_on_device)
    for (int id : req.outputs) read_on_host(id);
  for (int id : plan.carried) read_on_host(id);
  plan.steps = std::move(steps);
}

}  // namespace

PlanRequest plan_request(const Graph& graph, const std::vector<int>& bound,
                         const std::vector<Tensor>& tensors, const std::vector<int>& outputs,
                         const std::vector<uint8_t>& on_device) {
  PlanRequest req{&graph, bound, {}, {}, {}, outputs, 0, false, Isa::Generic};
  req.bound_on_device = on_device;
  for (size_t i = 0; i < tensors.size(); i++) {
    const Tensor& t = tensors[i];
    bool device = i < on_device.size() && on_device[i];
    req.types.push_back({t.dtype(), t.shape()});
    req.values.push_back(t.numel() <= kMaxValueFeed && !device ? &t : nullptr);
  }
  return req;
}

std::shared_ptr<Plan> plan_compile(const PlanRequest& req) {
  const Graph& g = *req.graph;
  auto plan = std::make_shared<Plan>();
  size_t nv = g.values.size();
  plan->bound = req.bound;
  plan->outputs_on_device = req.outputs_on_device;
  plan->types.assign(nv, TensorType{});
  plan->kinds.assign(nv, SlotKind::Unused);
  plan->offsets.assign(nv, 0);
  plan->known.assign(nv, Tensor());
  plan->outputs = req.outputs;

  auto set_known = [&](int id, const Tensor& t) {
    plan->types[id] = {t.dtype(), t.shape()};
    plan->kinds[id] = SlotKind::Known;
    plan->known[id] = t;
  };
  for (const auto& [id, t] : g.constants) set_known(id, t);
  for (const auto& [id, t] : req.known) set_known(id, t);
  // Small values computed from bound values (a fed shape, its Cast, ...), offered to shape
  // inference; `deps` holds the bound slots each derives from. A plan that reads one is keyed
  // on those values. The nodes still run at run time.
  std::vector<Tensor> tentative(nv);
  std::vector<uint64_t> deps(nv, 0);
  for (size_t i = 0; i < req.bound.size(); i++) {
    plan->types[req.bound[i]] = req.types[i];
    plan->kinds[req.bound[i]] = SlotKind::Feed;
    if (i < 64 && req.values[i]) {
      tentative[req.bound[i]] = *req.values[i];
      deps[req.bound[i]] = 1ull << i;
    }
  }

  std::vector<bool> need = needed_nodes(g, req.outputs);
  size_t fold_left = kFoldBudgetBytes;  // big folds past this run from the arena instead
  for (size_t ni = req.first_node; ni < g.nodes.size(); ni++) {
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
    // Checked types (sizes, ranks) before anything is allocated for this node. A dynamic op,
    // or shape inference that needs a value only running can give, ends the plan here.
    std::vector<TensorType> out_types;
    try {
      out_types = op_infer(ictx);
    } catch (const Error&) {
      if (!ictx.value_missing) throw;
    }
    if ((def.flags & kOpDynamic) || ictx.value_missing) {
      plan->eager_node = (int)ni;
      plan->info.push_back({node.name, def.name, "eager", "-"});
      break;
    }
    if (all_known && !(def.flags & kOpStateful) && fold_budget_take(out_types, &fold_left)) {
      std::vector<Tensor> outs = evaluate_node(node, ictx.values, ErrorKind::Input);
      for (size_t k = 0; k < node.outputs.size(); k++) {
        int id = node.outputs[k];
        if (id < 0) continue;
        set_known(id, outs[k]);
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
    Step step{&node, def.reference, "reference", Isa::Generic, node.inputs, node.outputs};
    if (!req.reference_kernels) {
      if (const KernelEntry* e = cpu_kernel_find(ictx, req.isa)) {
        step.fn = e->fn;
        step.kernel = e->name;
        step.isa = e->isa;
      }
    }
    if (req.device) {
      if (!(def.flags & kOpStateful)) {
        choose_device_kernel(*plan, req, ictx, step);
      } else if (stateful_on_device(*plan, req, node)) {
        choose_device_kernel(*plan, req, ictx, step);
        EMBER_CHECK(step.on_device, Input, "[plan] node '", node.name, "' (", def.name,
                    ") writes inputs bound in device memory, and ", req.device->name(),
                    " has no kernel for it: bind them on the host");
      } else {
        plan->fallbacks.push_back(&node);  // its state is on the host
      }
    }
    plan->steps.push_back(step);
    const char* where = step.on_device ? req.device->name().c_str() : "cpu";
    plan->info.push_back({node.name, def.name, step.kernel, step.on_device ? "-" : isa_name(step.isa), where});
    if (debug_level() >= 3)
      std::fprintf(stderr, "[ember] %s (%s): %s/%s on %s\n", node.name.c_str(), def.name,
                   step.kernel, isa_name(step.isa), where);
  }

  // Values read after this part (the eager node's inputs and later nodes'): carried to the
  // continuation, or handed off as constants.
  if (plan->eager_node >= 0) {
    const Node& eager = g.nodes[plan->eager_node];
    for (int id : eager.outputs) if (id >= 0) plan->carried.push_back(id);
    std::vector<bool> read = read_after(g, need, plan->eager_node, req.outputs);
    for (size_t id = 0; id < nv; id++) {
      if (!read[id] || g.constants.count((int)id)) continue;
      SlotKind k = plan->kinds[id];
      if (k == SlotKind::Known) plan->handoff.push_back((int)id);
      if (k == SlotKind::Feed || k == SlotKind::Arena || k == SlotKind::Output)
        plan->carried.push_back((int)id);
    }
    plan->continuations = std::make_unique<PlanCache>(8);
    for (size_t ni = plan->eager_node + 1; ni < g.nodes.size(); ni++)
      if (need[ni]) plan->info.push_back({g.nodes[ni].name, op_name(g.nodes[ni].op), "after eager", "-", ""});
  }

  // Requested outputs get their own buffers; everything else computed goes in the arena.
  for (int id : req.outputs) {
    SlotKind& k = plan->kinds[id];
    if (k == SlotKind::Arena) k = SlotKind::Output;
  }
  plan->host_slot.resize(nv);
  for (size_t id = 0; id < nv; id++) plan->host_slot[id] = (int)id;
  plan->source.assign(nv, -1);
  plan->prepared.assign(nv, nullptr);
  if (req.device) place_copies(*plan, req);
  for (int id : req.outputs) {
    int slot = plan->host_slot[id];
    SlotKind k = plan->kinds[slot];
    if (k != SlotKind::Output && k != SlotKind::Known) continue;
    const TensorType& t = plan->types[slot];
    plan->output_bytes += (size_t)shape_numel(t.shape) * dtype_size(t.dtype);
  }

  size_t slots = plan->types.size();
  int nsteps = (int)plan->steps.size();
  std::vector<int> first(slots, -1), last(slots, -1);
  for (int s = 0; s < nsteps; s++) {
    for (int id : plan->steps[s].out) if (id >= 0) first[id] = last[id] = s;
    for (int id : plan->steps[s].in) if (id >= 0) last[id] = s;
  }
  for (int id : plan->carried) last[plan->host_slot[id]] = nsteps;  // kept to the end of this part
  // A view op (Reshape, Squeeze, ...) from one host arena intermediate to another of the same
  // size aliases: the output slot is the input's memory (one buffer living as long as either),
  // and the step does nothing. Values are written once, so neither changes under the other.
  std::vector<int> alias(slots, -1);  // per slot: the slot whose buffer it shares, or -1
  for (Step& st : plan->steps) {
    if (req.reference_kernels || !is_view_op(st.node->op) || st.on_device || st.is_copy ||
        st.in.empty() || st.out.size() != 1)
      continue;
    const int a = st.in[0], b = st.out[0];
    if (a < 0 || b < 0 || plan->kinds[a] != SlotKind::Arena || plan->kinds[b] != SlotKind::Arena ||
        (req.device && (plan->on_device[a] || plan->on_device[b])))
      continue;
    const TensorType &ta = plan->types[a], &tb = plan->types[b];
    if (shape_numel(ta.shape) * dtype_size(ta.dtype) != shape_numel(tb.shape) * dtype_size(tb.dtype))
      continue;
    const int root = alias[a] >= 0 ? alias[a] : a;
    alias[b] = root;
    last[root] = std::max(last[root], last[b]);
    for (NodePlanInfo& ni : plan->info)
      if (ni.name == st.node->name && ni.kernel == st.kernel) ni.kernel = "alias";
    st.fn = alias_step;
    st.kernel = "alias";
  }
  // Each side's intermediates in its own arena.
  for (int side = 0; side < (req.device ? 2 : 1); side++) {
    std::vector<BufferLife> lives;
    std::vector<int> life_ids;
    for (size_t id = 0; id < slots; id++) {
      if (plan->kinds[id] != SlotKind::Arena || alias[id] >= 0) continue;
      if (req.device && plan->on_device[id] != side) continue;
      const TensorType& t = plan->types[id];
      lives.push_back({(size_t)shape_numel(t.shape) * dtype_size(t.dtype), first[id], last[id]});
      life_ids.push_back((int)id);
    }
    MemoryPlan mp = memory_plan(lives);
    for (size_t i = 0; i < life_ids.size(); i++) plan->offsets[life_ids[i]] = mp.offsets[i];
    for (size_t id = 0; id < slots; id++)
      if (alias[id] >= 0 && (!req.device || plan->on_device[id] == side))
        plan->offsets[id] = plan->offsets[alias[id]];
    (side ? plan->device_arena_bytes : plan->arena_bytes) = mp.peak_bytes;
  }
  return plan;
}

Tensor PreparedConstants::get(int id, DevicePrepareFn fn, const Node& node, int input,
                              const Tensor& host) {
  std::lock_guard<std::mutex> lock(mu_);
  auto key = std::make_pair(id, fn);
  auto it = packed_.find(key);
  if (it != packed_.end()) return it->second;
  Tensor t = fn(node, input, host);
  packed_[key] = t;
  return t;
}

// ---- cache ----------------------------------------------------------------------------------

PlanCache::Key PlanCache::key(const std::vector<Tensor>& bound, const std::vector<int>& outputs,
                              const std::vector<uint8_t>& on_device, bool outputs_on_device) const {
  Key key;
  for (size_t i = 0; i < bound.size(); i++) {
    const Tensor& t = bound[i];
    bool device = i < on_device.size() && on_device[i];
    key.push_back((int64_t)t.dtype() + (device ? 1000 : 0));
    key.push_back(t.rank());
    key.insert(key.end(), t.shape().begin(), t.shape().end());
  }
  key.push_back(outputs_on_device ? -3 : -1);
  key.insert(key.end(), outputs.begin(), outputs.end());
  for (size_t i = 0; i < bound.size() && i < value_inputs_.size(); i++) {
    if (!value_inputs_[i] || (i < on_device.size() && on_device[i])) continue;
    key.push_back(-2 - (int64_t)i);
    const char* p = static_cast<const char*>(bound[i].data());
    for (size_t b = 0; b < bound[i].nbytes(); b += 8) {
      int64_t word = 0;
      std::memcpy(&word, p + b, std::min<size_t>(8, bound[i].nbytes() - b));
      key.push_back(word);
    }
  }
  return key;
}

std::shared_ptr<Plan> PlanCache::find(const std::vector<Tensor>& bound, const std::vector<int>& outputs,
                                      const std::vector<uint8_t>& on_device, bool outputs_on_device) {
  Key k = key(bound, outputs, on_device, outputs_on_device);
  for (auto it = entries_.begin(); it != entries_.end(); ++it) {
    if (it->first != k) continue;
    entries_.splice(entries_.begin(), entries_, it);
    return entries_.front().second;
  }
  return nullptr;
}

void PlanCache::insert(const std::vector<Tensor>& bound, const std::vector<int>& outputs,
                       std::shared_ptr<Plan> plan, const std::vector<uint8_t>& on_device,
                       bool outputs_on_device) {
  if (value_inputs_.size() < bound.size()) value_inputs_.resize(bound.size(), false);
  for (int slot : plan->value_feeds) value_inputs_[slot] = true;
  entries_.emplace_front(key(bound, outputs, on_device, outputs_on_device), std::move(plan));
  while ((int)entries_.size() > capacity_) entries_.pop_back();
}

}  // namespace ember
