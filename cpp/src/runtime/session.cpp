// Session: load-time passes, feed validation, the plan cache and the executor loop.
#include "ember/session.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <tuple>
#include <unordered_map>

#include "ember/thread_pool.h"
#include "graph/fold.h"
#include "graph/fuse.h"
#include "runtime/plan.h"
#include "runtime/trace.h"

namespace ember {
namespace {

int debug_level() {
  static const int level = [] {
    const char* env = std::getenv("EMBER_DEBUG");
    return env ? std::atoi(env) : 0;
  }();
  return level;
}

// EMBER_WINOGRAD=0: 3x3 convolutions keep their direct sums (read per session).
bool winograd_enabled() {
  const char* env = std::getenv("EMBER_WINOGRAD");
  return !env || std::string(env) != "0";
}

// EMBER_FUSED_CONV=0: Conv and Relu stay apart, on Conv's GEMM (read per session; A/B timing).
bool fused_conv_enabled() {
  const char* env = std::getenv("EMBER_FUSED_CONV");
  return !env || std::string(env) != "0";
}

// precision="bf16" on a CPU session whose CPU has AVX512_BF16 (not lowered by EMBER_CPU_ISA):
// weights are packed as bf16 and matmuls run on vdpbf16ps. Elsewhere the CPU runs fp32.
bool cpu_bf16(const SessionOptions& options) {
  return options.device_options.precision == Precision::BF16 &&
         (options.device.empty() || options.device == "cpu") && cpu_bf16_dot();
}

// Whether the CPU's FusedConv kernel reads patches in place (GemmMicro::taps2: the AVX-512
// one), so that packed weights pay off for every FusedConv, not only wide ones.
bool cpu_conv_gathers() { return cpu_isa() == Isa::Avx512 || cpu_isa() == Isa::Avx512Bf16; }

}  // namespace

// Values of one run across the parts of an eagerly split plan: per value id, the tensor,
// whether the run owns it (an output buffer or an eager result, never arena memory) and
// whether it is in device memory.
struct RunState {
  std::vector<Tensor> env;
  std::vector<char> owned;
  std::vector<char> on_device;
  size_t bytes = 0;  // planned bytes of the parts run so far, for memory_limit
  RunTrace* trace = nullptr;  // spans go here when set (a profiled run, EMBER_DEBUG >= 2)
};

struct Session::Impl : SubgraphRunner {
  Graph graph;
  SessionOptions options;
  Isa isa;
  int threads;
  mutable std::mutex cache_mu;
  std::unique_ptr<PlanCache> cache;
  std::mutex children_mu;
  std::unordered_map<const Graph*, std::unique_ptr<Session>> children;  // per subgraph
  std::vector<std::pair<std::string, std::string>> quant_fallbacks;
  std::shared_ptr<Device> device;  // null: CPU only
  // Graph constants copied to the device once, shared by every plan (by value id and the
  // device kernel's repacking, DeviceKernel::prepare).
  std::mutex device_mu;
  std::map<std::pair<int, DevicePrepareFn>, Tensor> device_constants;
  PreparedConstants prepared;  // constants repacked for device kernels
  std::vector<std::pair<std::string, std::string>> device_fallbacks;

  std::vector<int> resolve_outputs(const std::vector<std::string>& names) const {
    if (names.empty()) return graph.outputs;
    std::vector<int> ids;
    for (const std::string& name : names) {
      int found = -1;
      for (int id : graph.outputs) if (graph.values[id].name == name) found = id;
      if (found < 0) {
        std::string known;
        for (int id : graph.outputs) known += (known.empty() ? "" : ", ") + graph.values[id].name;
        fail(ErrorKind::Input, "[run] unknown output '", name, "'; outputs are: ", known);
      }
      ids.push_back(found);
    }
    return ids;
  }

  // A feed against its input's declared dtype and dims.
  static void check_declared(const ValueInfo& v, const Tensor& tensor) {
    EMBER_CHECK(v.dtype == DType::Count || v.dtype == tensor.dtype(), Input, "[run] input '",
                v.name, "': expected dtype ", dtype_name(v.dtype), ", got ",
                dtype_name(tensor.dtype()));
    if (!v.has_shape) return;
    bool ok = (int)v.dims.size() == tensor.rank();
    for (size_t d = 0; ok && d < v.dims.size(); d++)
      ok = v.dims[d].value < 0 || v.dims[d].value == tensor.shape()[d];
    if (ok) return;
    std::string want = "[";
    for (size_t d = 0; d < v.dims.size(); d++) {
      want += d ? ", " : "";
      want += v.dims[d].value >= 0 ? std::to_string(v.dims[d].value)
              : v.dims[d].symbol.empty() ? "?" : v.dims[d].symbol;
    }
    fail(ErrorKind::Input, "[run] input '", v.name, "': expected shape ", want, "], got ",
         shape_str(tensor.shape()));
  }

  // Orders feeds like graph.inputs and checks names, dtypes and declared dims.
  // `feed_on_device` (per feed; empty: none) marks device memory; `bound_on_device` gets the
  // same per graph input.
  std::vector<Tensor> bind_feeds(const NamedTensors& feeds, const std::vector<uint8_t>& feed_on_device = {},
                                 std::vector<uint8_t>* bound_on_device = nullptr) const {
    std::vector<Tensor> bound(graph.inputs.size());
    if (bound_on_device) bound_on_device->assign(graph.inputs.size(), 0);
    for (size_t f = 0; f < feeds.size(); f++) {
      const auto& [name, tensor] = feeds[f];
      size_t slot = graph.inputs.size();
      for (size_t i = 0; i < graph.inputs.size(); i++)
        if (graph.values[graph.inputs[i]].name == name) slot = i;
      if (slot == graph.inputs.size()) {
        std::string known;
        for (int id : graph.inputs) known += (known.empty() ? "" : ", ") + graph.values[id].name;
        fail(ErrorKind::Input, "[run] unknown input '", name, "'; inputs are: ", known);
      }
      EMBER_CHECK(!bound[slot].defined(), Input, "[run] input '", name, "' is fed twice");
      const ValueInfo& v = graph.values[graph.inputs[slot]];
      EMBER_CHECK(!dtype_info(tensor.dtype()).is_quant, Input, "[run] input '", name,
                  "': unsupported dtype ", dtype_name(tensor.dtype()));
      tensor_bytes_checked({tensor.dtype(), tensor.shape()}, ErrorKind::Input,
                           str_cat("[run] input '", name, "'"));
      check_declared(v, tensor);
      if (f < feed_on_device.size() && feed_on_device[f]) {
        EMBER_CHECK(device, Input, "[run] input '", name, "' is in device memory; this engine runs on the CPU");
        EMBER_CHECK(tensor.is_contiguous(), Input, "[run] input '", name,
                    "' is in device memory and not contiguous; pass a contiguous tensor");
        if (bound_on_device) (*bound_on_device)[slot] = 1;
        bound[slot] = tensor;
        continue;
      }
      if (!tensor.is_contiguous()) {
        // The copy is memory too: a broadcast view of a few bytes can stand for gigabytes.
        EMBER_CHECK(options.memory_limit == 0 || tensor.nbytes() <= options.memory_limit, Input,
                    "[run] input '", name, "' is not contiguous; its copy needs ", tensor.nbytes(),
                    " bytes, over memory_limit ", options.memory_limit);
      }
      bound[slot] = tensor.is_contiguous() ? tensor : tensor.contiguous();
    }
    check_symbols(bound);
    std::string missing;
    for (size_t i = 0; i < bound.size(); i++)
      if (!bound[i].defined()) missing += (missing.empty() ? "" : ", ") + graph.values[graph.inputs[i]].name;
    EMBER_CHECK(missing.empty(), Input, "[run] missing inputs: ", missing);
    return bound;
  }

  // A symbolic dim ("seq") must have one value across all feeds that declare it.
  void check_symbols(const std::vector<Tensor>& bound) const {
    std::vector<std::tuple<std::string, int64_t, std::string>> seen;  // symbol, value, input
    for (size_t i = 0; i < bound.size(); i++) {
      const ValueInfo& v = graph.values[graph.inputs[i]];
      if (!bound[i].defined() || !v.has_shape) continue;
      for (size_t d = 0; d < v.dims.size(); d++) {
        if (v.dims[d].value >= 0 || v.dims[d].symbol.empty()) continue;
        int64_t got = bound[i].shape()[d];
        bool found = false;
        for (const auto& [sym, value, input] : seen) {
          if (sym != v.dims[d].symbol) continue;
          found = true;
          EMBER_CHECK(value == got, Input, "[run] input '", v.name, "': dim ", d, " ('", sym,
                      "') is ", got, ", but input '", input, "' set '", sym, "' to ", value);
        }
        if (!found) seen.emplace_back(v.dims[d].symbol, got, v.name);
      }
    }
  }

  std::shared_ptr<Plan> compile(PlanRequest req) {
    req.reference_kernels = options.reference_kernels;
    req.isa = isa;
    req.device = device.get();
    req.device_options = options.device_options;
    req.prepared = &prepared;
    auto t0 = std::chrono::steady_clock::now();
    std::shared_ptr<Plan> plan = plan_compile(req);
    if (!plan->fallbacks.empty()) {
      std::lock_guard<std::mutex> lock(device_mu);
      for (const Node* n : plan->fallbacks) {
        std::pair<std::string, std::string> entry{n->name, op_name(n->op)};
        if (std::find(device_fallbacks.begin(), device_fallbacks.end(), entry) == device_fallbacks.end())
          device_fallbacks.push_back(std::move(entry));
      }
    }
    if (debug_level() >= 1) {
      double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      std::fprintf(stderr, "[ember] plan compiled in %.2f ms: %zu steps, arena %zu bytes%s\n", ms,
                   plan->steps.size(), plan->arena_bytes,
                   req.first_node ? " (continuation)" : "");
    }
    return plan;
  }

  std::shared_ptr<Plan> get_plan(const std::vector<Tensor>& feeds, const std::vector<int>& outputs,
                                 const std::vector<uint8_t>& on_device = {}, bool outputs_on_device = false) {
    {
      std::lock_guard<std::mutex> lock(cache_mu);
      if (std::shared_ptr<Plan> plan = cache->find(feeds, outputs, on_device, outputs_on_device)) return plan;
    }
    PlanRequest req = plan_request(graph, graph.inputs, feeds, outputs, on_device);
    req.outputs_on_device = outputs_on_device;
    std::shared_ptr<Plan> plan = compile(std::move(req));
    std::lock_guard<std::mutex> lock(cache_mu);
    cache->insert(feeds, outputs, plan, on_device, outputs_on_device);
    return plan;
  }

  // The plan after `parent`'s eager node for this run's carried values (parent's lock held).
  std::shared_ptr<Plan> continuation(Plan& parent, const RunState& rs) {
    std::vector<Tensor> bound;
    for (int id : parent.carried) bound.push_back(rs.env[id]);
    if (std::shared_ptr<Plan> plan = parent.continuations->find(bound, parent.outputs)) return plan;
    PlanRequest req = plan_request(graph, parent.carried, bound, parent.outputs);
    req.first_node = parent.eager_node + 1;
    req.outputs_on_device = parent.outputs_on_device;
    for (int id : parent.handoff) req.known.emplace_back(id, parent.known[id]);
    std::shared_ptr<Plan> plan = compile(std::move(req));
    parent.continuations->insert(bound, parent.outputs, plan);
    return plan;
  }

  void check_memory(const Plan& plan, size_t before) const {
    // Plan-time folds are already allocated, but bounded (kFoldBudgetBytes beyond small values).
    size_t need = before + plan.arena_bytes + plan.output_bytes + plan.folded_bytes;
    EMBER_CHECK(options.memory_limit == 0 || need <= options.memory_limit, Input,
                "[run] these feeds need ", need, " bytes (arena ", plan.arena_bytes,
                " + outputs ", plan.output_bytes, " + folded at plan time ", plan.folded_bytes,
                before ? str_cat(" + earlier parts and eager results ", before) : std::string(),
                "), over memory_limit ", options.memory_limit);
  }

  // A device copy of a host tensor, freed with its last reference.
  Tensor upload(const Tensor& host) {
    std::shared_ptr<Device> dev = device;
    void* p = dev->alloc(host.nbytes());
    std::shared_ptr<void> owner(p, [dev](void* q) { dev->free(q); });
    if (host.nbytes()) dev->copy_to_device(p, host.data(), host.nbytes());
    return Tensor::borrow(host.dtype(), host.shape(), p, owner);
  }

  // A constant's device slot: graph constants are uploaded once per session (once per
  // layout: as they are, and as each device kernel's prepare repacked them).
  Tensor device_constant(int source, DevicePrepareFn prepared, const Tensor& host) {
    if (!graph.constants.count(source)) return upload(host);
    std::lock_guard<std::mutex> lock(device_mu);
    Tensor& t = device_constants[{source, prepared}];
    if (!t.defined()) t = upload(host);
    return t;
  }

  void bind_arena(Plan& plan) {
    if (plan.arena) return;
    size_t slots = plan.types.size();
    size_t bytes = std::max<size_t>(plan.arena_bytes, 64);
    void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
    EMBER_CHECK(p, Input, "[run] out of memory allocating a ", bytes, "-byte arena");
    std::shared_ptr<void> arena(p, [](void* q) { std::free(q); });
    char* dp = nullptr;
    if (device) {
      std::shared_ptr<Device> dev = device;
      dp = static_cast<char*>(dev->alloc(std::max<size_t>(plan.device_arena_bytes, 256)));
      plan.device_arena = std::shared_ptr<void>(dp, [dev](void* q) { dev->free(q); });
    }
    plan.arena = arena;
    plan.slots.assign(slots, Tensor());
    for (size_t id = 0; id < slots; id++) {
      const TensorType& t = plan.types[id];
      bool on_device = device && plan.on_device[id];
      if (plan.kinds[id] == SlotKind::Known)
        plan.slots[id] = on_device ? device_constant(plan.source[id], plan.prepared[id], plan.known[id])
                                   : plan.known[id];
      if (plan.kinds[id] == SlotKind::Arena)
        plan.slots[id] = Tensor::borrow(t.dtype, t.shape, (on_device ? dp : (char*)p) + plan.offsets[id]);
    }
  }

  // Debug devices: a step must read and write only memory on its own side.
  void check_residency(const Step& step, const KernelCtx& ctx) const {
    auto check = [&](const Tensor* t, const char* what) {
      if (!t || !t->data() || t->nbytes() == 0) return;
      EMBER_CHECK(device->owns(t->data()) == step.on_device, Internal, "[run] node '",
                  step.node->name, "' on ", step.on_device ? device->name() : "cpu", ": its ",
                  what, " is in ", step.on_device ? "host" : "device", " memory");
    };
    for (const Tensor* t : ctx.in) check(t, "input");
    for (const Tensor* t : ctx.out) check(t, "output");
  }

  void run_step(const Step& step, Plan& plan, RunTrace* trace) {
    const Node& node = *step.node;
    KernelCtx ctx{node, {}, {}, threads};
    for (int id : step.in) ctx.in.push_back(id >= 0 ? &plan.slots[id] : nullptr);
    for (int id : step.out) ctx.out.push_back(id >= 0 ? &plan.slots[id] : nullptr);
    if (step.on_device) {
      ctx.device = device.get();
      ctx.device_options = &options.device_options;
      for (int id : step.host_in) ctx.host_in.push_back(id >= 0 ? &plan.slots[id] : nullptr);
    }
    if (device && device->checks_residency() && !step.is_copy) check_residency(step, ctx);
    struct Range {  // the device profiler's span for this step
      Device* device;
      Range(Device* d, const std::string& name) : device(d) { if (device) device->range_push(name.c_str()); }
      ~Range() { if (device) device->range_pop(); }
    } range{step.on_device ? device.get() : nullptr, node.name};
    if (!trace) return step.fn(ctx);
    if (step.on_device) device->timer_start();
    int64_t t0 = trace_now_ns();
    step.fn(ctx);
    // Device work is asynchronous: the span is the device's own time for it where it keeps a
    // clock (placed at the launch), else the host's time up to a synchronize.
    const int64_t device_ns = step.on_device ? device->timer_stop_ns() : -1;
    int64_t t1 = device_ns >= 0 ? t0 + device_ns : trace_now_ns();
    // An aliasing view step (plan.cpp) moves no bytes.
    const bool alias = std::strcmp(step.kernel, "alias") == 0;
    trace_record(*trace, node, step.kernel, step.isa, t0, t1, alias ? NodeCost{} : node_cost(ctx));
  }

  // Runs the plan's eager node on the plan's slots; its outputs go to the run state.
  void run_eager(const Plan& plan, RunState& rs) {
    const Node& node = graph.nodes[plan.eager_node];
    const OpDef& def = op_def(node.op);
    std::vector<const Tensor*> in;
    for (int id : node.inputs) in.push_back(id >= 0 ? &plan.slots[plan.host_slot[id]] : nullptr);
    std::vector<Tensor> outs(node.outputs.size());
    KernelCtx ctx{node, in, {}, threads, this};
    KernelFn fn = def.reference;
    const char* kernel = "reference";
    Isa kernel_isa = Isa::Generic;
    if (!(def.flags & kOpDynamic)) {
      // Shape inference with every input value at hand, then outputs sized before the kernel.
      InferCtx ictx{node, {}, in, ErrorKind::Input};
      for (const Tensor* t : in) ictx.in.push_back(t ? TensorType{t->dtype(), t->shape()} : TensorType{});
      std::vector<TensorType> types = op_infer(ictx);
      size_t bytes = 0;
      for (size_t k = 0; k < node.outputs.size(); k++) bytes += shape_numel(types[k].shape) * dtype_size(types[k].dtype);
      EMBER_CHECK(options.memory_limit == 0 || rs.bytes + bytes <= options.memory_limit, Input,
                  "[run] node '", node.name, "' (", def.name, ") needs ", bytes,
                  " bytes for its outputs after ", rs.bytes, " bytes, over memory_limit ",
                  options.memory_limit);
      for (size_t k = 0; k < node.outputs.size(); k++)
        if (node.outputs[k] >= 0) outs[k] = Tensor::empty(types[k].dtype, types[k].shape);
      const KernelEntry* e = options.reference_kernels ? nullptr : cpu_kernel_find(ictx, isa);
      if (e) {
        fn = e->fn;
        kernel = e->name;
        kernel_isa = e->isa;
      }
    }
    for (size_t k = 0; k < node.outputs.size(); k++) ctx.out.push_back(node.outputs[k] >= 0 ? &outs[k] : nullptr);
    int64_t t0 = rs.trace ? trace_now_ns() : 0;
    fn(ctx);
    if (rs.trace) {
      int64_t t1 = trace_now_ns();
      trace_record(*rs.trace, node, kernel, kernel_isa, t0, t1, node_cost(ctx));
    }
    for (size_t k = 0; k < node.outputs.size(); k++) {
      int id = node.outputs[k];
      if (id < 0) continue;
      EMBER_CHECK(outs[k].defined(), Internal, "[run] eager node '", node.name, "' left output ", k, " unset");
      rs.env[id] = outs[k];
      rs.owned[id] = 1;
      rs.bytes += outs[k].nbytes();
    }
    EMBER_CHECK(options.memory_limit == 0 || rs.bytes <= options.memory_limit, Input, "[run] node '",
                node.name, "' (", def.name, ") results bring this run to ", rs.bytes,
                " bytes, over memory_limit ", options.memory_limit);
  }

  // Runs one part (a plan, then its eager node and continuation). Caller holds the root's lock.
  void run_part(Plan& plan, RunState& rs) {
    check_memory(plan, rs.bytes);
    rs.bytes += plan.arena_bytes + plan.output_bytes;
    bind_arena(plan);
    for (int id : plan.bound) plan.slots[id] = rs.env[id];
    for (int id : plan.outputs) {
      int slot = plan.host_slot[id];
      if (plan.kinds[slot] != SlotKind::Output) continue;
      const TensorType& t = plan.types[slot];
      plan.slots[slot] = device && plan.on_device[slot] ? device_empty(t) : Tensor::empty(t.dtype, t.shape);
    }
    struct Unbind {  // drop bound values and outputs from the plan whatever happens
      Plan& plan;
      ~Unbind() {
        for (int id : plan.bound) plan.slots[id] = Tensor();
        for (int id : plan.outputs) {
          int slot = plan.host_slot[id];
          if (plan.kinds[slot] == SlotKind::Output) plan.slots[slot] = Tensor();
        }
      }
    } unbind{plan};

    for (const Step& step : plan.steps) run_step(step, plan, rs.trace);
    for (int id : plan.outputs) {
      int slot = plan.host_slot[id];
      SlotKind k = plan.kinds[slot];
      if (k == SlotKind::Unused || k == SlotKind::Feed) continue;  // made in another part
      rs.env[id] = plan.slots[slot];
      rs.owned[id] = k == SlotKind::Output;
      rs.on_device[id] = device && plan.on_device[slot];
    }
    if (plan.eager_node < 0) return;
    for (int id : plan.carried) {
      if (plan.kinds[id] == SlotKind::Unused) continue;
      EMBER_CHECK(!rs.on_device[id] || !written_after(plan.eager_node, id), Input, "[run] '",
                  graph.values[id].name, "' is in device memory and written in place after the ",
                  "eager node '", graph.nodes[plan.eager_node].name, "': it would be written in ",
                  "a host copy; bind it on the host");
      rs.env[id] = plan.slots[plan.host_slot[id]];
      rs.on_device[id] = 0;
    }
    run_eager(plan, rs);
    run_part(*continuation(plan, rs), rs);
  }

  // Whether a stateful node after graph node `from` writes value `id` in place
  // (OpDef::writes_inputs): a carried value that must not become a host copy.
  bool written_after(int from, int id) const {
    for (size_t n = from + 1; n < graph.nodes.size(); n++) {
      const Node& node = graph.nodes[n];
      const OpDef& def = op_def(node.op);
      if (!(def.flags & kOpStateful)) continue;
      for (size_t k = 0; k < node.inputs.size(); k++)
        if (node.inputs[k] == id && (!def.writes_inputs || (k < 32 && def.writes_inputs >> k & 1)))
          return true;
    }
    return false;
  }

  // Uninitialised device memory for an output left on the device.
  Tensor device_empty(const TensorType& t) {
    std::shared_ptr<Device> dev = device;
    void* p = dev->alloc((size_t)shape_numel(t.shape) * dtype_size(t.dtype));
    return Tensor::borrow(t.dtype, t.shape, p, std::shared_ptr<void>(p, [dev](void* q) { dev->free(q); }));
  }

  // A device copy of a device tensor (an output the run does not own).
  Tensor clone_on_device(const Tensor& t) {
    std::shared_ptr<Device> dev = device;
    void* p = dev->alloc(t.nbytes());
    std::shared_ptr<void> owner(p, [dev](void* q) { dev->free(q); });
    if (t.nbytes()) dev->copy_on_device(p, t.data(), t.nbytes());
    return Tensor::borrow(t.dtype(), t.shape(), p, owner);
  }

  // Outputs in plan.outputs order; they never alias an arena, the plan's constants, the
  // caller's feeds or each other (with outputs_on_device: all in device memory). Spans go to
  // `trace` when set; EMBER_DEBUG >= 2 prints them.
  std::vector<Tensor> execute(Plan& plan, const std::vector<Tensor>& feeds,
                              RunTrace* trace = nullptr, const std::vector<uint8_t>& feed_on_device = {}) {
    std::lock_guard<std::mutex> lock(plan.mu);
    RunState rs;
    RunTrace echo_only;
    rs.trace = trace ? trace : debug_level() >= 2 ? &echo_only : nullptr;
    if (rs.trace) {
      rs.trace->echo = debug_level() >= 2;
      rs.trace->origin_ns = trace_now_ns();
    }
    rs.env.resize(graph.values.size());
    rs.owned.assign(graph.values.size(), 0);
    rs.on_device.assign(graph.values.size(), 0);
    for (size_t i = 0; i < graph.inputs.size(); i++) {
      rs.env[graph.inputs[i]] = feeds[i];
      rs.on_device[graph.inputs[i]] = i < feed_on_device.size() && feed_on_device[i];
    }
    run_part(plan, rs);
    std::vector<Tensor> out;
    if (plan.outputs_on_device) {  // every output in device memory the caller owns
      for (int id : plan.outputs) {
        bool unique = rs.owned[id] && rs.on_device[id];
        for (const Tensor& t : out) unique = unique && t.data() != rs.env[id].data();
        out.push_back(!rs.on_device[id] ? upload(rs.env[id]) : unique ? rs.env[id] : clone_on_device(rs.env[id]));
      }
      return out;
    }
    for (int id : plan.outputs) out.push_back(rs.owned[id] ? rs.env[id] : rs.env[id].clone());
    for (size_t i = 0; i < out.size(); i++) {
      for (size_t j = 0; j < i; j++)
        if (out[j].data() == out[i].data()) out[i] = out[i].clone();
    }
    return out;
  }

  std::vector<Tensor> run_subgraph(const Graph& g, const std::vector<Tensor>& feeds) override {
    Session* child;
    {
      std::lock_guard<std::mutex> lock(children_mu);
      std::unique_ptr<Session>& s = children[&g];
      if (!s) s = std::make_unique<Session>(g, options);
      child = s.get();
    }
    return child->run_positional(feeds);
  }
};

Session::Session(Graph graph, SessionOptions options) : impl_(std::make_unique<Impl>()) {
  graph.validate();
  if (!options.reference_kernels) {
    fuse_quant(graph);  // before folding dequantizes the weights
    for (const Node* n : quant_leftovers(graph)) impl_->quant_fallbacks.emplace_back(n->name, op_name(n->op));
  }
  fold_constants(graph);
  bind_constant_captures(graph);
  if (options.device != "cpu" && !options.device.empty()) {
    impl_->device = device_find(options.device);
    if (!impl_->device) {
      std::string known;
      for (const std::string& name : device_names()) known += (known.empty() ? "" : ", ") + name;
      fail(ErrorKind::Input, "[session] device '", options.device, "' is not available (registered: ",
           known.empty() ? "none" : known, ")");
    }
  }
  // The reference path runs the graph as written: it is what the fused kernels are tested
  // against. Weights are packed for the CPU's GEMM only where the CPU runs everything.
  if (!options.reference_kernels)
    fuse_graph(graph, {.pack_cpu_weights = !impl_->device,
                       .fuse_add_norm = (bool)impl_->device,
                       .winograd = winograd_enabled(),
                       .fused_conv = fused_conv_enabled(),
                       .conv_gathers = cpu_conv_gathers(),
                       .bf16 = cpu_bf16(options)});
  impl_->graph = std::move(graph);
  impl_->options = options;
  impl_->isa = cpu_isa();
  impl_->cache = std::make_unique<PlanCache>(options.plan_cache_size);
  int pool = thread_pool_size();
  impl_->threads = options.threads > 0 ? std::min(options.threads, pool) : pool;
}

Session::~Session() = default;

const std::vector<std::pair<std::string, std::string>>& Session::quant_fallbacks() const {
  return impl_->quant_fallbacks;
}

std::string Session::device_name() const { return impl_->device ? impl_->device->name() : "cpu"; }

bool Session::device_owns(const void* p) const { return impl_->device && impl_->device->owns(p); }

std::vector<std::pair<std::string, std::string>> Session::device_fallbacks() const {
  std::lock_guard<std::mutex> lock(impl_->device_mu);
  return impl_->device_fallbacks;
}

const Graph& Session::graph() const { return impl_->graph; }
const SessionOptions& Session::options() const { return impl_->options; }

NamedTensors Session::run(const NamedTensors& feeds, const std::vector<std::string>& outputs) {
  return run(feeds, outputs, nullptr);
}

NamedTensors Session::run(const NamedTensors& feeds, const std::vector<std::string>& outputs,
                          RunTiming* timing) {
  return run(feeds, outputs, timing, RunOptions{});
}

NamedTensors Session::run(const NamedTensors& feeds, const std::vector<std::string>& outputs,
                          RunTiming* timing, const RunOptions& options) {
  EMBER_CHECK(!options.outputs_on_device || impl_->device, Input,
              "[run] outputs on the device: this engine runs on the CPU");
  std::vector<int> out_ids = impl_->resolve_outputs(outputs);
  std::vector<uint8_t> on_device;
  std::vector<Tensor> bound = impl_->bind_feeds(feeds, options.feed_on_device, &on_device);
  std::shared_ptr<Plan> plan = impl_->get_plan(bound, out_ids, on_device, options.outputs_on_device);
  RunTrace trace;
  auto t0 = std::chrono::steady_clock::now();
  std::vector<Tensor> outs = impl_->execute(*plan, bound, timing ? &trace : nullptr, on_device);
  // Device outputs are read on the caller's streams, which know nothing of the device's:
  // they are complete when run returns (DLPack's stream argument is not honoured).
  if (options.outputs_on_device) impl_->device->synchronize();
  auto t1 = std::chrono::steady_clock::now();
  if (timing) {
    timing->nodes = trace_export(trace);
    timing->total_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count();
  }
  if (debug_level() >= 1) {
    double ms = std::chrono::duration<double, std::milli>(t1 - t0).count();
    std::fprintf(stderr, "[ember] run: %.3f ms\n", ms);
  }
  NamedTensors result;
  for (size_t i = 0; i < outs.size(); i++)
    result.emplace_back(impl_->graph.values[out_ids[i]].name, std::move(outs[i]));
  return result;
}

Tensor Session::device_zeros(DType dtype, const Shape& shape) {
  EMBER_CHECK(impl_->device, Input, "[session] device_zeros needs a session on a device");
  const TensorType t{dtype, shape};
  const size_t bytes = (size_t)tensor_bytes_checked(t, ErrorKind::Input, "[session] device_zeros");
  Tensor out = impl_->device_empty(t);
  const std::vector<char> zeros(std::min<size_t>(bytes, size_t(16) << 20), 0);
  for (size_t off = 0; off < bytes; off += zeros.size())
    impl_->device->copy_to_device(static_cast<char*>(out.data()) + off, zeros.data(),
                                  std::min(zeros.size(), bytes - off));
  return out;
}

std::vector<Tensor> Session::run_positional(const std::vector<Tensor>& feeds) {
  return run_positional(feeds, {});
}

std::vector<Tensor> Session::run_positional(const std::vector<Tensor>& feeds,
                                            const std::vector<uint8_t>& on_device) {
  const Graph& g = impl_->graph;
  const bool any =
      std::any_of(on_device.begin(), on_device.end(), [](uint8_t b) { return b != 0; });
  EMBER_CHECK(!any || impl_->device, Input,
              "[run] feeds in device memory need a session on a device");
  EMBER_CHECK(feeds.size() == g.inputs.size(), Input, "[run] ", feeds.size(), " feeds for ",
              g.inputs.size(), " inputs");
  for (size_t i = 0; i < feeds.size(); i++) {
    const ValueInfo& v = g.values[g.inputs[i]];
    EMBER_CHECK(feeds[i].defined() && feeds[i].is_contiguous(), Internal, "[run] input '", v.name,
                "' is not a defined contiguous tensor");
    Impl::check_declared(v, feeds[i]);
  }
  return impl_->execute(*impl_->get_plan(feeds, g.outputs, on_device), feeds, nullptr, on_device);
}

PlanInfo Session::plan_info(const NamedTensors& feeds) {
  std::vector<Tensor> bound = impl_->bind_feeds(feeds);
  std::shared_ptr<Plan> plan = impl_->get_plan(bound, impl_->graph.outputs);
  PlanInfo info;
  info.arena_bytes = plan->arena_bytes;
  info.device_arena_bytes = plan->device_arena_bytes;
  info.output_bytes = plan->output_bytes;
  info.folded_bytes = plan->folded_bytes;
  info.nodes = plan->info;
  return info;
}

size_t Session::plans_cached() const {
  std::lock_guard<std::mutex> lock(impl_->cache_mu);
  return impl_->cache->size();
}

}  // namespace ember
