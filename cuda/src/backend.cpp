#include "cuda/src/backend.h"

#include <cuda_runtime.h>
#include <nvtx3/nvToolsExt.h>

#include "cuda/src/cuda_ops.h"

namespace ember::cuda {

void cuda_check(int status, const char* what) {
  if (status == cudaSuccess) return;
  fail(ErrorKind::Internal, "[cuda] ", what, ": ", cudaGetErrorString((cudaError_t)status));
}

int cuda_device_count(std::string* why) {
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    if (why) *why = cudaGetErrorString(err);
    cudaGetLastError();  // clear it: later calls must not see this one
    return 0;
  }
  if (n == 0 && why) *why = "no CUDA device found";
  return n;
}

CudaDevice::CudaDevice(int ordinal)
    : ordinal_(ordinal),
      name_("cuda:" + std::to_string(ordinal)),
      allocator_(
          [ordinal](size_t bytes) -> void* {
            void* p = nullptr;
            cudaSetDevice(ordinal);
            if (cudaMalloc(&p, bytes) != cudaSuccess) {
              cudaGetLastError();
              return nullptr;
            }
            return p;
          },
          [ordinal](void* p) {
            cudaSetDevice(ordinal);
            cudaFree(p);
          }) {
  cuda_check(cudaSetDevice(ordinal), "cudaSetDevice");
  cudaStream_t s = nullptr;
  // A blocking stream: ordered after work on the legacy default stream, where torch and cupy
  // write DLPack feeds unless told otherwise (a non-blocking one could read them half-written).
  cuda_check(cudaStreamCreateWithFlags(&s, cudaStreamDefault), "cudaStreamCreate");
  stream_ = s;
}

// Devices live in the core's registry until exit, when the driver may already be gone:
// nothing is returned to it here.
CudaDevice::~CudaDevice() = default;

void* CudaDevice::activate() {
  cuda_check(cudaSetDevice(ordinal_), "cudaSetDevice");
  return stream_;
}

void* CudaDevice::alloc(size_t bytes) {
  activate();
  void* p = allocator_.alloc(bytes);
  if (!p) {
    AllocatorStats s = allocator_.stats();
    fail(ErrorKind::Input, "[", name_, "] out of device memory allocating ", bytes, " bytes (",
         s.in_use, " bytes in use by ember)");
  }
  return p;
}

void CudaDevice::free(void* p) noexcept { allocator_.free(p); }

int* CudaDevice::tile_counters(int64_t count) {
  std::lock_guard<std::mutex> lock(counters_mutex_);
  if (count > counters_count_) {
    const int64_t grown = std::max<int64_t>(count, 4096);
    void* p = alloc((size_t)grown * sizeof(int));
    auto s = static_cast<cudaStream_t>(activate());
    cuda_check(cudaMemsetAsync(p, 0, (size_t)grown * sizeof(int), s), "tile counters");
    // The old buffer is kept, not freed: another host thread may hold it and not have queued
    // its kernel yet, and freed memory could be handed out (as scratch) before that kernel runs.
    if (counters_) retired_counters_.push_back(counters_);
    counters_ = static_cast<int*>(p);
    counters_count_ = grown;
  }
  return counters_;
}

void CudaDevice::copy_to_device(void* dst, const void* src, size_t bytes) {
  if (!bytes) return;
  auto s = static_cast<cudaStream_t>(activate());
  // From pageable memory the call returns once the source is staged: the caller may reuse it.
  cuda_check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, s), "copy to device");
}

void CudaDevice::copy_to_host(void* dst, const void* src, size_t bytes) {
  auto s = static_cast<cudaStream_t>(activate());
  if (bytes) cuda_check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, s), "copy to host");
  cuda_check(cudaStreamSynchronize(s), "copy to host");
}

void CudaDevice::copy_on_device(void* dst, const void* src, size_t bytes) {
  if (!bytes) return;
  auto s = static_cast<cudaStream_t>(activate());
  cuda_check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, s), "copy on device");
}

void CudaDevice::synchronize() {
  cuda_check(cudaStreamSynchronize(static_cast<cudaStream_t>(activate())), "synchronize");
}

// NVTX ranges cost a branch unless a profiler (Nsight Systems) is attached.
void CudaDevice::range_push(const char* name) { nvtxRangePushA(name); }

void CudaDevice::range_pop() { nvtxRangePop(); }

// CUDA events around the step's launches: the kernels' time on the GPU, without the host's
// launch work (a profiled small kernel would read as its launch overhead otherwise).
void CudaDevice::timer_start() {
  auto s = static_cast<cudaStream_t>(activate());
  for (void*& e : timer_) {
    if (e) continue;
    cudaEvent_t ev = nullptr;
    cuda_check(cudaEventCreate(&ev), "cudaEventCreate");
    e = ev;
  }
  cuda_check(cudaEventRecord(static_cast<cudaEvent_t>(timer_[0]), s), "cudaEventRecord");
}

int64_t CudaDevice::timer_stop_ns() {
  auto s = static_cast<cudaStream_t>(activate());
  auto start = static_cast<cudaEvent_t>(timer_[0]), stop = static_cast<cudaEvent_t>(timer_[1]);
  cuda_check(cudaEventRecord(stop, s), "cudaEventRecord");
  cuda_check(cudaEventSynchronize(stop), "cudaEventSynchronize");
  float ms = 0;
  cuda_check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
  return (int64_t)((double)ms * 1e6);
}

DeviceKernel CudaDevice::find_kernel(const InferCtx& ctx, const DeviceOptions& options) const {
  for (const CudaKernel& k : cuda_kernels()) {
    if (k.op != ctx.node.op) continue;
    if (!k.supports || k.supports(ctx, options)) return {k.fn, k.name, k.prepare};
  }
  return {};
}

// ---- what adapters use (cuda_ops.h) ----

void* stream(const KernelCtx& ctx) { return static_cast<CudaDevice*>(ctx.device)->activate(); }

int* tile_counters(const KernelCtx& ctx, int64_t count) {
  return static_cast<CudaDevice*>(ctx.device)->tile_counters(count);
}

Scratch::Scratch(const KernelCtx& ctx, size_t bytes) : device_(ctx.device), p_(ctx.device->alloc(bytes)) {}

Scratch::~Scratch() { device_->free(p_); }

const DeviceOptions& options(const KernelCtx& ctx) { return *ctx.device_options; }

void check_launch(const char* what) { cuda_check(cudaGetLastError(), what); }

void read_back(const KernelCtx& ctx, void* host, const void* device_ptr, size_t bytes) {
  ctx.device->copy_to_host(host, device_ptr, bytes);
}

}  // namespace ember::cuda
