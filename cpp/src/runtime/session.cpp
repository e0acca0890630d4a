// Session: load-time passes, feed validation, the plan cache and the executor loop.
#include "ember/session.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <list>
#include <tuple>

#include "ember/thread_pool.h"
#include "graph/fold.h"
#include "runtime/plan.h"

namespace ember {
namespace {

int debug_level() {
  static const int level = [] {
    const char* env = std::getenv("EMBER_DEBUG");
    return env ? std::atoi(env) : 0;
  }();
  return level;
}

// Cache key: dtype, rank and dims of each feed, the requested outputs, then the values of
// the feeds that shape inference reads (value_inputs).
using PlanKey = std::vector<int64_t>;

}  // namespace

struct Session::Impl {
  Graph graph;
  SessionOptions options;
  Isa isa;
  int threads;
  std::mutex cache_mu;
  std::list<std::pair<PlanKey, std::shared_ptr<Plan>>> cache;  // most recent first
  std::vector<bool> value_inputs;  // per graph input: plans depend on its value (cache_mu)

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

  // Orders feeds like graph.inputs and checks names, dtypes and declared dims.
  std::vector<Tensor> bind_feeds(const NamedTensors& feeds) const {
    std::vector<Tensor> bound(graph.inputs.size());
    for (const auto& [name, tensor] : feeds) {
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
      EMBER_CHECK(v.dtype == DType::Count || v.dtype == tensor.dtype(), Input, "[run] input '",
                  name, "': expected dtype ", dtype_name(v.dtype), ", got ",
                  dtype_name(tensor.dtype()));
      if (v.has_shape) {
        bool ok = (int)v.dims.size() == tensor.rank();
        for (size_t d = 0; ok && d < v.dims.size(); d++)
          ok = v.dims[d].value < 0 || v.dims[d].value == tensor.shape()[d];
        if (!ok) {
          std::string want = "[";
          for (size_t d = 0; d < v.dims.size(); d++) {
            want += d ? ", " : "";
            want += v.dims[d].value >= 0 ? std::to_string(v.dims[d].value)
                    : v.dims[d].symbol.empty() ? "?" : v.dims[d].symbol;
          }
          fail(ErrorKind::Input, "[run] input '", name, "': expected shape ", want, "], got ",
               shape_str(tensor.shape()));
        }
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

  PlanKey plan_key(const std::vector<Tensor>& feeds, const std::vector<int>& outputs) const {
    PlanKey key;
    for (const Tensor& t : feeds) {
      key.push_back((int64_t)t.dtype());
      key.push_back(t.rank());
      key.insert(key.end(), t.shape().begin(), t.shape().end());
    }
    key.push_back(-1);
    key.insert(key.end(), outputs.begin(), outputs.end());
    for (size_t i = 0; i < feeds.size(); i++) {
      if (!value_inputs[i]) continue;
      key.push_back(-2 - (int64_t)i);
      const char* p = static_cast<const char*>(feeds[i].data());
      for (size_t b = 0; b < feeds[i].nbytes(); b += 8) {
        int64_t word = 0;
        std::memcpy(&word, p + b, std::min<size_t>(8, feeds[i].nbytes() - b));
        key.push_back(word);
      }
    }
    return key;
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

  std::shared_ptr<Plan> get_plan(const std::vector<Tensor>& feeds, const std::vector<int>& outputs) {
    PlanKey key;
    {
      std::lock_guard<std::mutex> lock(cache_mu);
      key = plan_key(feeds, outputs);
      for (auto it = cache.begin(); it != cache.end(); ++it) {
        if (it->first == key) {
          cache.splice(cache.begin(), cache, it);
          return cache.front().second;
        }
      }
    }
    PlanRequest req{&graph, {}, {}, outputs, options.reference_kernels, isa};
    for (const Tensor& t : feeds) {
      req.feeds.push_back({t.dtype(), t.shape()});
      req.feed_values.push_back(t.numel() <= kMaxValueFeed ? &t : nullptr);
    }
    auto t0 = std::chrono::steady_clock::now();
    std::shared_ptr<Plan> plan = plan_compile(req);
    if (debug_level() >= 1) {
      double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      std::fprintf(stderr, "[ember] plan compiled in %.2f ms: %zu steps, arena %zu bytes\n", ms,
                   plan->steps.size(), plan->arena_bytes);
    }
    std::lock_guard<std::mutex> lock(cache_mu);
    if (!plan->value_feeds.empty()) {
      for (int slot : plan->value_feeds) value_inputs[slot] = true;
      key = plan_key(feeds, outputs);
    }
    cache.emplace_front(key, plan);
    while ((int)cache.size() > std::max(options.plan_cache_size, 1)) cache.pop_back();
    return plan;
  }

  void check_memory(const Plan& plan) const {
    // Plan-time folds are already allocated, but bounded (kFoldBudgetBytes beyond small values).
    size_t need = plan.arena_bytes + plan.output_bytes + plan.folded_bytes;
    EMBER_CHECK(options.memory_limit == 0 || need <= options.memory_limit, Input,
                "[run] these feeds need ", need, " bytes (arena ", plan.arena_bytes,
                " + outputs ", plan.output_bytes, " + folded at plan time ", plan.folded_bytes,
                "), over memory_limit ", options.memory_limit);
  }

  NamedTensors execute(Plan& plan, const std::vector<Tensor>& feeds) {
    std::lock_guard<std::mutex> lock(plan.mu);
    size_t nv = graph.values.size();
    if (!plan.arena) {
      size_t bytes = std::max<size_t>(plan.arena_bytes, 64);
      void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
      EMBER_CHECK(p, Input, "[run] out of memory allocating a ", bytes, "-byte arena");
      plan.arena = std::shared_ptr<void>(p, [](void* q) { std::free(q); });
      plan.slots.assign(nv, Tensor());
      for (size_t id = 0; id < nv; id++) {
        const TensorType& t = plan.types[id];
        if (plan.kinds[id] == SlotKind::Known) plan.slots[id] = plan.known[id];
        if (plan.kinds[id] == SlotKind::Arena)
          plan.slots[id] = Tensor::borrow(t.dtype, t.shape, (char*)p + plan.offsets[id]);
      }
    }
    for (size_t i = 0; i < graph.inputs.size(); i++) plan.slots[graph.inputs[i]] = feeds[i];
    for (int id : plan.outputs) {
      if (plan.kinds[id] == SlotKind::Output)
        plan.slots[id] = Tensor::empty(plan.types[id].dtype, plan.types[id].shape);
    }
    struct Unbind {  // drop feeds and outputs from the plan whatever happens
      Plan& plan;
      const Graph& graph;
      ~Unbind() {
        for (int id : graph.inputs) plan.slots[id] = Tensor();
        for (int id : plan.outputs)
          if (plan.kinds[id] == SlotKind::Output) plan.slots[id] = Tensor();
      }
    } unbind{plan, graph};

    for (const Step& step : plan.steps) {
      const Node& node = *step.node;
      KernelCtx ctx{node, {}, {}, threads};
      for (int id : node.inputs) ctx.in.push_back(id >= 0 ? &plan.slots[id] : nullptr);
      for (int id : node.outputs) ctx.out.push_back(id >= 0 ? &plan.slots[id] : nullptr);
      if (debug_level() >= 2) {
        auto t0 = std::chrono::steady_clock::now();
        step.fn(ctx);
        double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
        std::fprintf(stderr, "[ember] %-40s %-20s %-28s %10.1f us\n", node.name.c_str(),
                     op_name(node.op), step.kernel, us);
      } else {
        step.fn(ctx);
      }
    }
    NamedTensors out;
    for (int id : plan.outputs) {
      // Outputs never alias the arena, the plan's constants or the caller's feeds.
      Tensor t = plan.kinds[id] == SlotKind::Output ? plan.slots[id] : plan.slots[id].clone();
      out.emplace_back(graph.values[id].name, t);
    }
    for (size_t i = 0; i < out.size(); i++) {
      for (size_t j = 0; j < i; j++)
        if (out[j].second.data() == out[i].second.data()) out[i].second = out[i].second.clone();
    }
    return out;
  }
};

Session::Session(Graph graph, SessionOptions options) : impl_(std::make_unique<Impl>()) {
  graph.validate();
  fold_constants(graph);
  impl_->graph = std::move(graph);
  impl_->options = options;
  impl_->isa = cpu_isa();
  impl_->value_inputs.assign(impl_->graph.inputs.size(), false);
  int pool = thread_pool_size();
  impl_->threads = options.threads > 0 ? std::min(options.threads, pool) : pool;
}

Session::~Session() = default;

const Graph& Session::graph() const { return impl_->graph; }
const SessionOptions& Session::options() const { return impl_->options; }

NamedTensors Session::run(const NamedTensors& feeds, const std::vector<std::string>& outputs) {
  std::vector<int> out_ids = impl_->resolve_outputs(outputs);
  std::vector<Tensor> bound = impl_->bind_feeds(feeds);
  std::shared_ptr<Plan> plan = impl_->get_plan(bound, out_ids);
  impl_->check_memory(*plan);
  auto t0 = std::chrono::steady_clock::now();
  NamedTensors result = impl_->execute(*plan, bound);
  if (debug_level() >= 1) {
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    std::fprintf(stderr, "[ember] run: %.3f ms\n", ms);
  }
  return result;
}

PlanInfo Session::plan_info(const NamedTensors& feeds) {
  std::vector<Tensor> bound = impl_->bind_feeds(feeds);
  std::shared_ptr<Plan> plan = impl_->get_plan(bound, impl_->graph.outputs);
  PlanInfo info;
  info.arena_bytes = plan->arena_bytes;
  info.output_bytes = plan->output_bytes;
  info.folded_bytes = plan->folded_bytes;
  info.nodes = plan->info;
  return info;
}

size_t Session::plans_cached() const {
  std::lock_guard<std::mutex> lock(impl_->cache_mu);
  return impl_->cache.size();
}

}  // namespace ember
