// Session: a compiled graph. Load-time passes run once (validation, constant folding); a
// Plan (shapes, kernels, memory layout) is compiled per input-shape signature and cached in
// a bounded LRU. Runs are safe from several threads: each plan owns one arena and runs on
// it one at a time (a per-plan mutex), so calls with different shapes run concurrently.
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "ember/device.h"
#include "ember/graph.h"

namespace ember {

struct SessionOptions {
  int threads = 0;               // cap on this session's share of the pool; 0 = all
  size_t memory_limit = 0;       // bytes of arena + outputs (+ plan-time folds) per plan; 0 = no limit
  bool reference_kernels = false;  // run every node with its OpDef reference kernel
  int plan_cache_size = 8;       // input-shape signatures kept compiled
  // "cpu", or a registered device's name (ember/device.h): nodes it has kernels for run there.
  std::string device = "cpu";
  DeviceOptions device_options;
};

struct NodePlanInfo {
  std::string name;
  std::string op;
  std::string kernel;  // registry kernel name, "reference", or "folded"
  std::string isa;
  std::string device{};  // "cpu", the device's name, or "" (folded, eager)
};

struct PlanInfo {
  size_t arena_bytes = 0;     // peak bytes of intermediates (planned, reused)
  size_t device_arena_bytes = 0;  // the same on the device
  size_t output_bytes = 0;
  size_t folded_bytes = 0;    // constants computed at plan time (shape sub-graphs)
  std::vector<NodePlanInfo> nodes;
};

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

// One node run of a profiled Session::run: a trace span. Eager nodes (If, Loop, NonZero) are
// one span each, their subgraph runs inside it.
struct NodeTiming {
  std::string name;
  std::string op;
  std::string kernel;  // registry kernel name or "reference"
  std::string isa;
  int64_t start_ns = 0;  // steady clock, from the start of the run
  int64_t end_ns = 0;    // device steps on CUDA: start_ns + the GPU's time (CUDA events)
  double flops = 0;      // cost model (cpp/src/runtime/cost.h): work the op must do
  double bytes = 0;      // bytes read and written: inputs (constants included) + outputs
};

struct RunTiming {
  std::vector<NodeTiming> nodes;  // in execution order
  int64_t total_ns = 0;           // the whole run: the nodes plus the executor between them
};

// Device memory in and out of a run (a session with a device; zero-copy DLPack tensors).
struct RunOptions {
  std::vector<uint8_t> feed_on_device;  // per feed, in feed order: the data is device memory
  bool outputs_on_device = false;       // every output is returned in device memory
};

class Session {
 public:
  Session(Graph graph, SessionOptions options);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  const Graph& graph() const;
  const SessionOptions& options() const;
  // Runs the graph; `outputs` empty means all graph outputs, in graph order.
  NamedTensors run(const NamedTensors& feeds, const std::vector<std::string>& outputs = {});
  // The same, timing every node into `timing` (when not null; replaced, not appended to).
  NamedTensors run(const NamedTensors& feeds, const std::vector<std::string>& outputs,
                   RunTiming* timing);
  NamedTensors run(const NamedTensors& feeds, const std::vector<std::string>& outputs,
                   RunTiming* timing, const RunOptions& options);
  // The session's device ("cpu" when none), and whether `p` is memory that device allocated
  // (a fake device's pool; false for devices that cannot tell).
  std::string device_name() const;
  bool device_owns(const void* p) const;
  // A zeroed tensor in the device's memory, freed with its last reference (an Input error on a
  // CPU session): state a caller binds there, as the LLM runner's KV caches.
  Tensor device_zeros(DType dtype, const Shape& shape);
  // Runs with feeds already in graph-input order, contiguous and of the declared dtypes
  // (checked); returns every graph output in order. For subgraphs run once per iteration:
  // no name lookups.
  std::vector<Tensor> run_positional(const std::vector<Tensor>& feeds);
  // The same with feed i in the device's memory where on_device[i] (a session with a device;
  // the LLM runner's KV caches).
  std::vector<Tensor> run_positional(const std::vector<Tensor>& feeds,
                                     const std::vector<uint8_t>& on_device);
  // Compiles (or fetches) the plan for these feeds and describes it without running.
  PlanInfo plan_info(const NamedTensors& feeds);
  size_t plans_cached() const;
  // (name, op) of each quantization node no load-time pass turned into an integer kernel: it
  // runs dequantized, in float or on a reference kernel (ember.Engine warns about these).
  // Empty with reference_kernels, which runs every node as written on purpose.
  const std::vector<std::pair<std::string, std::string>>& quant_fallbacks() const;
  // (name, op) of each node that a plan compiled so far put on the CPU because the session's
  // device has no kernel for it (at that plan's types and shapes); in first-seen order.
  std::vector<std::pair<std::string, std::string>> device_fallbacks() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ember
