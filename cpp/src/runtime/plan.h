// A Plan is the graph compiled for one input-shape signature: every value's type, shape
// sub-graphs folded into constants, a kernel per remaining node, and arena offsets.
#pragma once
#include <memory>
#include <mutex>
#include <vector>

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
  const char* kernel;  // registry name or "reference"
  Isa isa;
};

struct Plan {
  std::vector<TensorType> types;   // per value id
  std::vector<SlotKind> kinds;     // per value id
  std::vector<size_t> offsets;     // arena offset per value id (Arena slots)
  std::vector<Tensor> known;       // values known at plan time (constants, folded)
  std::vector<Step> steps;
  std::vector<int> outputs;        // requested output value ids, in order
  std::vector<int> value_feeds;    // graph inputs whose values shape inference read
  size_t arena_bytes = 0;
  size_t output_bytes = 0;
  size_t folded_bytes = 0;
  std::vector<NodePlanInfo> info;

  // Run state, guarded by mu: a plan runs one call at a time on its own arena.
  std::mutex mu;
  std::shared_ptr<void> arena;
  std::vector<Tensor> slots;       // per value id, bound for the current run
};

struct PlanRequest {
  const Graph* graph;
  std::vector<TensorType> feeds;   // per graph input
  // Small feeds offered to shape inference (Reshape's shape fed at run time, ...); a plan that
  // reads one is only valid for that value, so the session keys it on the value too.
  std::vector<const Tensor*> feed_values;
  std::vector<int> outputs;        // value ids
  bool reference_kernels;
  Isa isa;
};

std::shared_ptr<Plan> plan_compile(const PlanRequest& req);

}  // namespace ember
