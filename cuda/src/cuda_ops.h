// What the CUDA op adapters (cuda/src/ops_*.cpp) share: the kernel table row, and access to
// the stream, scratch memory and options of the step being run. Adapters are host C++ (g++):
// they read the node's attributes and shapes, then call launchers declared in
// cuda/kernels/*.h, which take plain pointers, sizes and the stream as void*.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "ember/device.h"
#include "ember/op.h"

namespace ember::cuda {

struct CudaKernel {
  OpType op;
  const char* name;
  KernelFn fn;
  // Whether `fn` runs this node at these types, shapes and options; nullptr: always.
  bool (*supports)(const InferCtx& ctx, const DeviceOptions& options) = nullptr;
  // Load-time repacking of the node's constant inputs (ember/device.h); nullptr: none.
  DevicePrepareFn prepare = nullptr;
};

// The table (cuda/src/registry.cpp): one line per kernel, first match wins.
const std::vector<CudaKernel>& cuda_kernels();

// The cudaStream_t the step's kernels go on.
void* stream(const KernelCtx& ctx);
// `count` ints on the device, all 0, for kernels whose blocks count the tiles they finish and
// leave the counts 0 again (q4_gemm's K splits, PagedAttention's spread parts): one buffer per
// device, for work on its stream.
int* tile_counters(const KernelCtx& ctx, int64_t count);
// Device memory for the step's own use, valid until the step's work on the stream is done
// (stream-ordered: freed after the launch, reused only by later work on the same stream).
class Scratch {
 public:
  Scratch(const KernelCtx& ctx, size_t bytes);
  ~Scratch();
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  void* data() const { return p_; }
  template <class T>
  T* as() const { return static_cast<T*>(p_); }

 private:
  Device* device_;
  void* p_;
};
const DeviceOptions& options(const KernelCtx& ctx);
// The host copy of input i when it is a plan-time constant or a feed (axes, starts, a shape),
// else nullptr. Non-null exactly for the inputs whose value supports() saw (ctx.value(i)).
inline const Tensor* host_input(const KernelCtx& ctx, int i) {
  return i < (int)ctx.host_in.size() ? ctx.host_in[i] : nullptr;
}
// Throws an ember Error (Internal) naming `what` when the last launch on this thread failed.
void check_launch(const char* what);
// Copies `bytes` from device memory to the host now (synchronising the stream): for kernels
// that report bad data (an index out of range) through a device flag.
void read_back(const KernelCtx& ctx, void* host, const void* device_ptr, size_t bytes);

}  // namespace ember::cuda
