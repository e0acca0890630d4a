// Liveness-based arena planning: each intermediate lives from the step that writes it to
// the last step that reads it; buffers whose lifetimes do not overlap share memory.
#pragma once
#include <cstddef>
#include <vector>

namespace ember {

struct BufferLife {
  size_t bytes;
  int first;  // step that writes it
  int last;   // last step that reads it (>= first)
};

struct MemoryPlan {
  std::vector<size_t> offsets;  // one per buffer, aligned
  size_t peak_bytes = 0;        // arena size
};

// Greedy by size (largest first), each buffer at the lowest offset that does not collide
// with an already placed buffer whose lifetime overlaps. Offsets are multiples of `align`.
MemoryPlan memory_plan(const std::vector<BufferLife>& buffers, size_t align = 64);

}  // namespace ember
