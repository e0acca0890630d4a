// A Plan is the graph compiled for one input-shape signature: every value's type, shape
// sub-graphs folded into constants, a kernel per remaining node, and arena offsets.
//
// Data-dependent shapes: a node whose output shapes are known only by running (a kOpDynamic
// op such as NonZero, If, Loop; or shape inference that reads a computed value, as TopK's K
// or Range's bounds) ends the plan. The executor runs that node eagerly, outputs allocated
// after it ran, then a continuation plan compiled for the actual types of the values that
// cross the boundary (and cached per those types). Each part keeps its planned arena; values
// that cross stay live to the end of the part that made them.
#pragma once
#include <algorithm>
#include <deque>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "ember/device.h"
#include "ember/session.h"
#include "runtime/registry.h"

namespace ember {

// Feeds (and values computed from them) at most this many elements are offered to shape
// inference at plan time: shape tensors, Range bounds, axes.
constexpr int64_t kMaxValueFeed = 1024;

enum class SlotKind : uint8_t { Unused, Feed, Known, Arena, Output };

struct Step {
  const Node* node;
  KernelFn fn;
  const char* kernel;  // registry name, "reference", or the device's kernel name
  Isa isa;
  std::vector<int> in, out;  // slot ids: the node's values, or their copies on the other side
  bool on_device = false;    // runs on PlanRequest::device (copy steps too)
  bool is_copy = false;      // a copy between the CPU and the device (placement)
  std::vector<int> host_in{};  // device steps: per input, the host slot it was copied from when
                             // that is a constant or a feed (KernelCtx::host_in), else -1
  DevicePrepareFn prepare = nullptr;  // device steps: repacks constant inputs (DeviceKernel)
};

// Constants a device kernel repacked (DeviceKernel::prepare), shared by a session's plans so
// each graph constant is repacked once; keyed by (value id, prepare function).
class PreparedConstants {
 public:
  Tensor get(int id, DevicePrepareFn fn, const Node& node, int input, const Tensor& host);

 private:
  std::mutex mu_;
  std::map<std::pair<int, DevicePrepareFn>, Tensor> packed_;
};

class PlanCache;

// Device placement (PlanRequest::device): a node runs on the device when the device has a
// kernel for it, else on the CPU. A value used on the side it was not made on gets a copy
// slot (an id past the graph's values) and a copy step before its first use there; constants
// get a device slot filled once at bind. Requested outputs and values the eager node or a
// continuation read are always read from the host (host_slot).
struct Plan {
  std::vector<int> bound;          // value ids set at entry: graph inputs, or carried values
  std::vector<TensorType> types;   // per slot id (graph value ids, then copies)
  std::vector<SlotKind> kinds;     // per slot id
  std::vector<size_t> offsets;     // arena offset per slot id (Arena slots, in their side's arena)
  std::vector<Tensor> known;       // values known at plan time (constants, folded)
  std::vector<uint8_t> on_device;  // per slot id; empty without a device
  std::vector<int> source;         // per slot id: the value a copy slot copies, else -1
  std::vector<DevicePrepareFn> prepared;  // per slot id: how a repacked constant slot was made
  std::vector<int> host_slot;      // per graph value id: the slot holding it on the host
  std::vector<Step> steps;
  std::vector<int> outputs;        // requested output value ids, in order
  std::vector<int> value_feeds;    // indexes into `bound` whose values shape inference read
  bool outputs_on_device = false;  // PlanRequest::outputs_on_device (continuations inherit it)
  size_t arena_bytes = 0;
  size_t device_arena_bytes = 0;
  size_t output_bytes = 0;
  size_t folded_bytes = 0;
  std::vector<NodePlanInfo> info;
  std::deque<Node> copy_nodes;           // the copy steps' nodes (stable addresses)
  std::vector<const Node*> fallbacks;    // nodes the device has no kernel for, or whose state
                                         // (stateful_on_device) is on the host: on the CPU

  // The boundary: graph node index run eagerly after the steps, -1 when the plan runs to the
  // end. `carried` are the continuation's bound values (the eager node's outputs first, then
  // values made or bound here that later nodes read); `handoff` are values this plan folded
  // that later nodes read (constants to the continuation).
  int eager_node = -1;
  std::vector<int> carried;
  std::vector<int> handoff;

  // Run state, guarded by mu (a continuation by its root's): a plan runs one call at a time
  // on its own arena.
  std::mutex mu;
  std::shared_ptr<void> arena;
  std::shared_ptr<void> device_arena;
  std::vector<Tensor> slots;       // per value id, bound for the current run
  std::unique_ptr<PlanCache> continuations;
};

struct PlanRequest {
  const Graph* graph;
  std::vector<int> bound;          // value ids set at entry
  std::vector<TensorType> types;   // per bound value
  // Small bound values offered to shape inference (Reshape's shape fed at run time, ...); a
  // plan that reads one is only valid for that value, so its cache keys it on the value too.
  std::vector<const Tensor*> values;
  std::vector<std::pair<int, Tensor>> known;  // values fixed at compile time besides constants
  std::vector<int> outputs;        // value ids
  int first_node = 0;              // graph node index to start from (continuations)
  bool reference_kernels;
  Isa isa;
  Device* device = nullptr;        // place nodes here where it has kernels (ember/device.h)
  DeviceOptions device_options{};
  std::vector<uint8_t> bound_on_device{};  // per bound value: in the device's memory (empty: none)
  PreparedConstants* prepared = nullptr;   // the session's repacked constants (device sessions)
  bool outputs_on_device = false;          // requested outputs stay in device memory
};

// A request for these bound tensors: their types, and the small ones as values.
// `on_device` (empty: none) marks bound tensors in device memory: their values are not offered.
PlanRequest plan_request(const Graph& graph, const std::vector<int>& bound,
                         const std::vector<Tensor>& tensors, const std::vector<int>& outputs,
                         const std::vector<uint8_t>& on_device = {});
std::shared_ptr<Plan> plan_compile(const PlanRequest& req);

// Compiled plans for one entry point, keyed on the bound tensors' dtypes and dims, the
// requested outputs, and the values of the bound tensors that shape inference read (learned
// from the plans compiled so far). A bounded LRU; callers lock.
class PlanCache {
 public:
  explicit PlanCache(int capacity) : capacity_(std::max(capacity, 1)) {}
  // `on_device`: per bound tensor, whether it is in device memory (never read on the host);
  // empty means none. `outputs_on_device`: the caller wants outputs left on the device.
  std::shared_ptr<Plan> find(const std::vector<Tensor>& bound, const std::vector<int>& outputs,
                             const std::vector<uint8_t>& on_device = {}, bool outputs_on_device = false);
  void insert(const std::vector<Tensor>& bound, const std::vector<int>& outputs,
              std::shared_ptr<Plan> plan, const std::vector<uint8_t>& on_device = {},
              bool outputs_on_device = false);
  size_t size() const { return entries_.size(); }

 private:
  using Key = std::vector<int64_t>;
  Key key(const std::vector<Tensor>& bound, const std::vector<int>& outputs,
          const std::vector<uint8_t>& on_device, bool outputs_on_device) const;

  int capacity_;
  std::list<std::pair<Key, std::shared_ptr<Plan>>> entries_;  // most recent first
  std::vector<bool> value_inputs_;  // per bound slot: some plan read its value
};

}  // namespace ember
