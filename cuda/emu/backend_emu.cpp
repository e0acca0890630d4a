// What the op adapters (cuda/src/ops_*.cpp) get from the backend (cuda/src/cuda_ops.h), on the
// emulated device: no stream, host memory for scratch, default options unless the step sets
// them, launches that fail by throwing (so nothing to check after), read-backs that are copies.
// With it the emulated tests run the real adapters, host maths included, on host tensors.
#include <cstdlib>
#include <cstring>
#include <vector>

#include "cuda/emu/emu.h"
#include "cuda/src/cuda_ops.h"

namespace ember::cuda {

void* stream(const KernelCtx&) { return nullptr; }

// Checks, at every call, that the kernels before left every count at 0.
int* tile_counters(const KernelCtx&, int64_t count) {
  static std::vector<int> counters;
  for (int c : counters)
    if (c != 0) throw emu::EmuError("a kernel left its tile counters non-zero");
  if ((int64_t)counters.size() < count) counters.resize(count, 0);
  return counters.data();
}

// 256-byte aligned, as cudaMalloc's; filled with 0xff bytes so a read before a write shows.
Scratch::Scratch(const KernelCtx&, size_t bytes)
    : device_(nullptr), p_(std::aligned_alloc(256, (bytes + 255) / 256 * 256 + 256)) {
  std::memset(p_, 0xff, (bytes + 255) / 256 * 256 + 256);
}
Scratch::~Scratch() { std::free(p_); }

const DeviceOptions& options(const KernelCtx& ctx) {
  static const DeviceOptions defaults;
  return ctx.device_options ? *ctx.device_options : defaults;
}

void check_launch(const char*) {}

void read_back(const KernelCtx&, void* host, const void* device_ptr, size_t bytes) {
  std::memcpy(host, device_ptr, bytes);
}

}  // namespace ember::cuda
