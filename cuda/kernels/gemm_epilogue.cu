// Gemm's C where cuBLASLt cannot take it as is: a C that only broadcasts to [M, N] (a column, a
// scalar, a row with beta != 1) is written into the output first, and cuBLASLt then computes
// D = alpha * A @ B + beta * D in place; with K == 0 this fill is the whole result.
// One thread per output element over a grid-stride loop (memory-bound, a few MB at most).
// And the rounding of GEMM operands to fp16 / bf16 (gemm_round_16), four elements a thread
// where the pointers allow.
// Reference: ref_gemm in cpp/src/ops/ops_linalg.cpp.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>

#include "cuda/kernels/gemm_epilogue.h"
#include "cuda/kernels/intrinsics.cuh"

namespace ember::cuda {
namespace {

// Enough blocks to fill any GPU; grid-stride loops cover the rest.
unsigned blocks_for(int64_t total, int threads) {
  return (unsigned)std::min<int64_t>((total + threads - 1) / threads, int64_t(1) << 16);
}

__global__ void gemm_fill_c_kernel(const float* __restrict__ c,  // broadcast by (c_rs, c_cs)
                                   float* __restrict__ d,        // [rows, cols]
                                   int64_t rows, int64_t cols, int64_t c_rs, int64_t c_cs,
                                   float scale) {
  int64_t total = rows * cols;
  int64_t step = (int64_t)gridDim.x * blockDim.x;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
    if (c) {
      int64_t r = i / cols, j = i - r * cols;
      d[i] = scale * c[r * c_rs + j * c_cs];
    } else {
      d[i] = 0.0f;
    }
  }
}

__device__ __forceinline__ void round_to(float v, __half* y) { *y = __float2half_rn(v); }
__device__ __forceinline__ void round_to(float v, __nv_bfloat16* y) { *y = __float2bfloat16_rn(v); }

template <class H>
__global__ void round_16_kernel(const float* __restrict__ x, H* __restrict__ y, int64_t n) {
  const int64_t step = (int64_t)gridDim.x * blockDim.x;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += step)
    round_to(__ldg(x + i), y + i);
}

// Four elements a thread (a float4 in, 8 bytes out) where x and y are 16- and 8-byte aligned;
// the tail past n4 * 4 goes to round_16_kernel.
template <class H>
__global__ void round_16x4_kernel(const float4* __restrict__ x, H* __restrict__ y, int64_t n4) {
  const int64_t step = (int64_t)gridDim.x * blockDim.x;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n4; i += step) {
    const float4 v = __ldg(x + i);
    H h[4];
    round_to(v.x, h + 0);
    round_to(v.y, h + 1);
    round_to(v.z, h + 2);
    round_to(v.w, h + 3);
    *reinterpret_cast<uint2*>(y + 4 * i) = *reinterpret_cast<const uint2*>(h);
  }
}

template <class H>
void round_16_as(const float* x, H* y, int64_t n, cudaStream_t s) {
  constexpr int kThreads = 256;
  int64_t done = 0;
  if (reinterpret_cast<uintptr_t>(x) % 16 == 0 && reinterpret_cast<uintptr_t>(y) % 8 == 0) {
    const int64_t n4 = n / 4;
    if (n4)
      EMBER_LAUNCH(round_16x4_kernel<H>, blocks_for(n4, kThreads), kThreads, 0, s)(
          reinterpret_cast<const float4*>(x), y, n4);
    done = n4 * 4;
  }
  if (done < n)
    EMBER_LAUNCH(round_16_kernel<H>, blocks_for(n - done, kThreads), kThreads, 0, s)(
        x + done, y + done, n - done);
}

}  // namespace

void gemm_round_16(const float* x, void* y, int64_t n, bool bf16, void* stream) {
  if (n <= 0) return;
  auto s = (cudaStream_t)stream;
  if (bf16) round_16_as(x, static_cast<__nv_bfloat16*>(y), n, s);
  else round_16_as(x, static_cast<__half*>(y), n, s);
}

void gemm_fill_c(const float* c, float* d, int64_t rows, int64_t cols, int64_t c_rs, int64_t c_cs,
                 float scale, void* stream) {
  int64_t total = rows * cols;
  if (total <= 0) return;
  constexpr int kThreads = 256;
  EMBER_LAUNCH(gemm_fill_c_kernel, blocks_for(total, kThreads), kThreads, 0,
               (cudaStream_t)stream)(c, d, rows, cols, c_rs, c_cs, scale);
}

}  // namespace ember::cuda
