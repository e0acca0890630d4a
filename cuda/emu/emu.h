// The CPU emulation of the CUDA subset ember's kernels use, so that CI, which has the CUDA
// headers but no GPU, runs the real .cu sources against the CPU references. A kernel file is
// compiled as C++ with -DEMBER_CUDA_EMU and cuda/emu/include first on the include path, whose
// cuda_runtime.h is this header. A launch runs its blocks one after another; a block's threads
// are fibers on one OS thread, switched only at barriers (__syncthreads, and the warp
// collectives: shuffles, mma.sync, ldmatrix), so a run is deterministic; between two
// __syncthreads the warps run one at a time, first to last, then last to first. cp.async
// copies land at the latest moment PTX allows (the wait_group that covers them), dynamic shared
// memory starts as NaN bytes, and a barrier some live thread can never reach is reported, not
// hung: missing waits, missing barriers and uninitialised reads show up as wrong results or
// errors. Atomics are plain read-modify-writes (one OS thread runs every fiber). Not emulated:
// timing, occupancy, memory spaces (every pointer is a host one).
#pragma once
#ifndef EMBER_CUDA_EMU
#error "cuda/emu/emu.h is only for the CPU emulation build (EMBER_CUDA_EMU)"
#endif

// Before any CUDA header: crt/host_defines.h keeps these when they are already defined.
#define __host__
#define __device__
#define __global__
// One instance per kernel instantiation: blocks run one at a time. NOTE: unlike dynamic shared
// memory it is not refilled between blocks, so a read before a write sees the previous block's
// values, not NaN (GCC drops section attributes on template statics: no way to find them all).
#define __shared__ static
#define __launch_bounds__(...)

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <driver_types.h>
#include <vector_functions.h>
#include <vector_types.h>

// host_defines.h defines this one unconditionally, as a GCC attribute GCC warns about.
#undef __maxnreg__
#define __maxnreg__(n)

#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <tuple>
#include <type_traits>
#include <utility>

// ---- built-in variables (set by the scheduler before it resumes a thread) ----
extern thread_local uint3 threadIdx, blockIdx;
extern thread_local dim3 blockDim, gridDim;

namespace ember::cuda::emu {

// Why an emulated launch failed: a deadlock, a misaligned cp.async, a trap, a bad launch.
struct EmuError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Runs body() as every thread of every block of grid x block, `smem` bytes of dynamic shared
// memory per block; `kernel` identifies the function for its attributes.
void run_grid(const void* kernel, dim3 grid, dim3 block, size_t smem,
              const std::function<void()>& body);

// The order run_grid runs a grid's blocks in (for the calling thread): CUDA's numbering (x
// fastest, then y, then z) or its reverse. A kernel whose blocks meet through atomics (the last
// block of a tile finishes it) can then be run with another block last.
enum class BlockOrder { Forward, Reverse };
void set_block_order(BlockOrder order);

// Blocks the calling thread until every live thread of its block arrives (__syncthreads).
void block_barrier();
// Blocks until every live lane of the calling thread's warp arrives.
void warp_barrier();
// This lane's 64-byte slot in its warp's exchange area, and lane `l`'s.
unsigned char* warp_slot(int lane);
int lane_id();

// Dynamic shared memory of the running block.
unsigned char* dynamic_smem();

// cp.async: `bytes` of `size` copied from global src to shared dst at the wait covering them
// (src_bytes < size: the rest zero-filled).
void cp_async(void* dst, const void* src, int size, int src_bytes);
void cp_async_commit();
void cp_async_wait(int newest_pending);

// Warp collective: every lane gives `in` (<= 64 bytes); each gets f(lane values) back.
template <class In, class Out, class F>
Out warp_collective(const In& in, F f) {
  static_assert(sizeof(In) <= 64, "exchange slot");
  std::memcpy(warp_slot(lane_id()), &in, sizeof(In));
  warp_barrier();
  In all[32];
  for (int l = 0; l < 32; l++) std::memcpy(&all[l], warp_slot(l), sizeof(In));
  Out out = f(all, lane_id());
  warp_barrier();  // nobody rewrites a slot before every lane has read it
  return out;
}

// Max dynamic shared memory a kernel opted into (cudaFuncAttributeMaxDynamicSharedMemorySize).
void set_max_dynamic_smem(const void* kernel, int bytes);

template <class... P>
struct Launch {
  void (*kernel)(P...);
  dim3 grid, block;
  size_t smem;
  template <class... A>
  void operator()(A&&... args) const {
    // Converted once to the parameter types, as a launch copies its arguments.
    const std::tuple<std::decay_t<P>...> params(std::forward<A>(args)...);
    run_grid(reinterpret_cast<const void*>(kernel), grid, block, smem,
             [&] { std::apply(kernel, params); });
  }
};
template <class... P>
Launch<P...> launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem) {
  return Launch<P...>{kernel, grid, block, smem};
}

}  // namespace ember::cuda::emu

// ---- intrinsics ----
inline void __syncthreads() { ember::cuda::emu::block_barrier(); }
inline void __syncwarp(unsigned = 0xffffffffu) { ember::cuda::emu::warp_barrier(); }
[[noreturn]] inline void __trap() { throw ember::cuda::emu::EmuError("__trap()"); }
template <class T>
T __ldg(const T* p) {
  return *p;
}
template <class T>
T __ldcg(const T* p) {
  return *p;
}
// Blocks run one after another and threads switch only at collectives: writes are seen at once.
inline void __threadfence() {}

template <class T>
T __shfl_sync(unsigned, T v, int src, int width = 32) {
  return ember::cuda::emu::warp_collective<T, T>(
      v, [&](const T* all, int lane) { return all[(lane & ~(width - 1)) + (src & (width - 1))]; });
}
template <class T>
T __shfl_xor_sync(unsigned, T v, int mask, int width = 32) {
  return ember::cuda::emu::warp_collective<T, T>(v, [&](const T* all, int lane) {
    const int src = lane ^ mask;
    return src / width == lane / width ? all[src] : all[lane];
  });
}
template <class T>
T __shfl_down_sync(unsigned, T v, unsigned delta, int width = 32) {
  return ember::cuda::emu::warp_collective<T, T>(v, [&](const T* all, int lane) {
    const int src = lane + (int)delta;
    return src / width == lane / width ? all[src] : all[lane];
  });
}

// Half-precision intrinsics cuda_fp16.h / cuda_bf16.h declare for the device only: one
// rounding of the exact result (the products of 16-bit values are exact in double).
inline __half2 __hfma2(__half2 a, __half2 b, __half2 c) {
  const float2 x = __half22float2(a), y = __half22float2(b), z = __half22float2(c);
  return __halves2half2(__double2half((double)x.x * y.x + z.x),
                        __double2half((double)x.y * y.y + z.y));
}
inline __nv_bfloat162 __hfma2(__nv_bfloat162 a, __nv_bfloat162 b, __nv_bfloat162 c) {
  const float2 x = __bfloat1622float2(a), y = __bfloat1622float2(b), z = __bfloat1622float2(c);
  return __halves2bfloat162(__double2bfloat16((double)x.x * y.x + z.x),
                            __double2bfloat16((double)x.y * y.y + z.y));
}
// CUDA's global min / max: fminf / fmaxf for floating point, the usual for integers.
template <class A, class B,
          class = std::enable_if_t<std::is_integral_v<A> && std::is_integral_v<B>>>
std::common_type_t<A, B> min(A a, B b) {
  return b < a ? b : a;
}
template <class A, class B,
          class = std::enable_if_t<std::is_integral_v<A> && std::is_integral_v<B>>>
std::common_type_t<A, B> max(A a, B b) {
  return a < b ? b : a;
}
inline float min(float a, float b) { return std::fmin(a, b); }
inline float max(float a, float b) { return std::fmax(a, b); }
// The float classification CUDA declares at global scope for device code.
using std::isfinite;
using std::isinf;
using std::isnan;
// Bit casts between 32-bit floats and integers.
inline float __int_as_float(int i) { return std::bit_cast<float>(i); }
inline float __uint_as_float(unsigned u) { return std::bit_cast<float>(u); }
inline int __float_as_int(float f) { return std::bit_cast<int>(f); }
inline unsigned __float_as_uint(float f) { return std::bit_cast<unsigned>(f); }
// Round-to-nearest arithmetic that nvcc never contracts into an FMA: plain operations here, as
// the emulation is built with -ffp-contract=off (cuda/emu/CMakeLists.txt).
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __int2float_rn(int i) { return (float)i; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __ddiv_rn(double a, double b) { return a / b; }
// Four signed 8-bit products summed onto c.
inline int __dp4a(int a, int b, int c) {
  for (int i = 0; i < 4; i++) c += (int)(int8_t)(a >> (8 * i)) * (int)(int8_t)(b >> (8 * i));
  return c;
}
inline float __expf(float x) { return std::exp(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }

// Atomics: a block's threads are fibers on one OS thread and blocks run one after another, so a
// plain read-modify-write is atomic. Each returns the old value, as CUDA's do; the pointer
// alone gives the type (atomicAdd(float*, 1.0) is a float add).
namespace ember::cuda::emu {
template <class T, class F>
T read_modify_write(T* p, F f) {
  const T old = *p;
  *p = f(old);
  return old;
}
}  // namespace ember::cuda::emu
template <class T>
T atomicAdd(T* p, std::type_identity_t<T> v) {
  return ember::cuda::emu::read_modify_write(p, [&](T old) { return T(old + v); });
}
template <class T>
T atomicMax(T* p, std::type_identity_t<T> v) {
  return ember::cuda::emu::read_modify_write(p, [&](T old) { return old < v ? v : old; });
}
template <class T>
T atomicMin(T* p, std::type_identity_t<T> v) {
  return ember::cuda::emu::read_modify_write(p, [&](T old) { return v < old ? v : old; });
}
template <class T>
T atomicOr(T* p, std::type_identity_t<T> v) {
  return ember::cuda::emu::read_modify_write(p, [&](T old) { return T(old | v); });
}
template <class T>
T atomicExch(T* p, std::type_identity_t<T> v) {
  return ember::cuda::emu::read_modify_write(p, [&](T) { return v; });
}
template <class T>
T atomicCAS(T* p, std::type_identity_t<T> compare, std::type_identity_t<T> v) {
  return ember::cuda::emu::read_modify_write(p, [&](T old) { return old == compare ? v : old; });
}

// ---- the runtime API the kernel files call ----
cudaError_t cudaGetLastError();
// Copies and fills run at once (every pointer is a host one; launches are synchronous too).
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream);
cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t stream);
cudaError_t cudaGetDevice(int* dev);
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int dev);
template <class F>
cudaError_t cudaFuncSetAttribute(F* kernel, cudaFuncAttribute attr, int value) {
  if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize)
    ember::cuda::emu::set_max_dynamic_smem(reinterpret_cast<const void*>(kernel), value);
  return cudaSuccess;
}
