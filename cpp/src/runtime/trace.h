// Trace spans (STYLE.md "Debug levels and profiling hooks"): every node run is one span named
// after its node, with its op, kernel, ISA and cost (runtime/cost.h). The executor records
// spans into the run's RunTrace only when someone asked for one (a profiled Session::run, or
// EMBER_DEBUG >= 2); otherwise the cost is one null-pointer test per node. Eager nodes
// (If, Loop, NonZero) are one span each, their subgraph runs inside it.
#pragma once
#include <cstdint>
#include <vector>

#include "ember/session.h"
#include "runtime/cost.h"
#include "runtime/registry.h"

namespace ember {

// Nanoseconds on the steady clock.
int64_t trace_now_ns();

struct TraceEvent {
  const Node* node;
  const char* kernel;  // registry name or "reference"
  Isa isa;
  int64_t start_ns, end_ns;  // trace_now_ns()
  NodeCost cost;
};

struct RunTrace {
  int64_t origin_ns = 0;               // the run's start, trace_now_ns()
  bool echo = false;                   // print each span as it closes (EMBER_DEBUG >= 2)
  std::vector<TraceEvent> events;      // in execution order
};

// Records one closed span. Callers read the end time before computing the cost, so the cost
// model never counts as the node's time.
void trace_record(RunTrace& trace, const Node& node, const char* kernel, Isa isa,
                  int64_t start_ns, int64_t end_ns, const NodeCost& cost);
// The trace as the public per-node timings, times from the run's start.
std::vector<NodeTiming> trace_export(const RunTrace& trace);

}  // namespace ember
