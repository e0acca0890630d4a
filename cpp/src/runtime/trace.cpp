// Trace spans: recording, the EMBER_DEBUG=2 echo, and export to the public NodeTiming.
#include "runtime/trace.h"

#include <chrono>
#include <cstdio>

namespace ember {

int64_t trace_now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void trace_record(RunTrace& trace, const Node& node, const char* kernel, Isa isa,
                  int64_t start_ns, int64_t end_ns, const NodeCost& cost) {
  trace.events.push_back({&node, kernel, isa, start_ns, end_ns, cost});
  if (trace.echo)
    std::fprintf(stderr, "[ember] %-40s %-20s %-28s %10.1f us\n", node.name.c_str(),
                 op_name(node.op), kernel, (double)(end_ns - start_ns) / 1e3);
}

std::vector<NodeTiming> trace_export(const RunTrace& trace) {
  std::vector<NodeTiming> out;
  out.reserve(trace.events.size());
  for (const TraceEvent& e : trace.events) {
    out.push_back({e.node->name, op_name(e.node->op), e.kernel, isa_name(e.isa),
                   e.start_ns - trace.origin_ns, e.end_ns - trace.origin_ns, e.cost.flops,
                   e.cost.bytes});
  }
  return out;
}

}  // namespace ember
