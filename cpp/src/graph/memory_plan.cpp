#include "graph/memory_plan.h"

#include <algorithm>
#include <numeric>

namespace ember {

MemoryPlan memory_plan(const std::vector<BufferLife>& buffers, size_t align) {
  MemoryPlan plan;
  plan.offsets.assign(buffers.size(), 0);
  std::vector<size_t> order(buffers.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return buffers[a].bytes > buffers[b].bytes; });
  auto round_up = [&](size_t n) { return (n + align - 1) / align * align; };
  std::vector<size_t> placed;
  for (size_t i : order) {
    const BufferLife& b = buffers[i];
    // Placed buffers alive at the same time, by offset.
    std::vector<size_t> clash;
    for (size_t j : placed) {
      const BufferLife& o = buffers[j];
      if (o.first <= b.last && b.first <= o.last) clash.push_back(j);
    }
    std::sort(clash.begin(), clash.end(),
              [&](size_t x, size_t y) { return plan.offsets[x] < plan.offsets[y]; });
    size_t size = round_up(std::max<size_t>(b.bytes, 1));
    size_t offset = 0;
    for (size_t j : clash) {
      if (offset + size <= plan.offsets[j]) break;
      offset = std::max(offset, round_up(plan.offsets[j] + buffers[j].bytes));
    }
    plan.offsets[i] = offset;
    plan.peak_bytes = std::max(plan.peak_bytes, offset + size);
    placed.push_back(i);
  }
  return plan;
}

}  // namespace ember
