// CudaDevice: one GPU as an ember Device (ember/device.h). One stream per device carries every
// kernel and copy, so a run is ordered without events; it is a blocking stream, so DLPack feeds
// written on the legacy default stream (torch's and cupy's) are complete before ember reads
// them, and a run with device outputs synchronises before returning; a caching allocator
// (allocator.h) serves the plans' arenas, uploaded constants and kernel scratch.
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "cuda/src/allocator.h"
#include "ember/device.h"

namespace ember::cuda {

class CudaDevice final : public Device {
 public:
  explicit CudaDevice(int ordinal);
  ~CudaDevice() override;

  const std::string& name() const override { return name_; }
  void* alloc(size_t bytes) override;
  void free(void* p) noexcept override;
  void copy_to_device(void* dst, const void* src, size_t bytes) override;
  void copy_to_host(void* dst, const void* src, size_t bytes) override;
  void copy_on_device(void* dst, const void* src, size_t bytes) override;
  void synchronize() override;
  void range_push(const char* name) override;
  void range_pop() override;
  void timer_start() override;
  int64_t timer_stop_ns() override;
  DeviceKernel find_kernel(const InferCtx& ctx, const DeviceOptions& options) const override;

  int ordinal() const { return ordinal_; }
  // Makes this device current on the calling thread and returns its stream (cudaStream_t).
  void* activate();
  AllocatorStats allocator_stats() const { return allocator_.stats(); }
  // `count` ints of zeros on the device for kernels that count their finished blocks per tile
  // and leave the counts 0 (q4_gemm's K splits, PagedAttention's spread parts): one buffer for
  // the stream, grown as asked; outgrown buffers stay allocated (a caller may still hold one).
  // A kernel that faults can leave counts behind, but a fault ends the CUDA context anyway.
  int* tile_counters(int64_t count);

 private:
  int ordinal_;
  std::string name_;
  void* stream_ = nullptr;
  void* timer_[2] = {nullptr, nullptr};  // cudaEvent_t start, stop; made by the first timer_start
  CachingAllocator allocator_;
  std::mutex counters_mutex_;
  int* counters_ = nullptr;
  int64_t counters_count_ = 0;
  std::vector<int*> retired_counters_;
};

// Number of devices (0 when there is no driver or no GPU); `why` gets the CUDA error then.
int cuda_device_count(std::string* why);
// "[cuda] <what>: <CUDA error string>" as an ember Error when `status` (a cudaError_t) fails.
void cuda_check(int status, const char* what);

}  // namespace ember::cuda
