// Convolution, pooling and BatchNormalization on the GPU, f32.
// - im2col: one thread per cols element of a chunk [nb, C*kh*kw, pc] (writes coalesced along the
//   pixels); the GEMMs that consume it are cuBLASLt calls made by cuda/src/ops_conv.cpp.
// - finish_16: a conv cuDNN ran in fp16 / bf16 back to F32, plus its bias.
// - conv_direct: depthwise convs (one input channel per group), one thread per output.
// - pool_2d: MaxPool / AveragePool, one thread per output, window walk shared with the host tests.
// - pool_global: one warp per row for short rows, one 256-thread block per row for long ones.
// - batch_norm: one thread per element.
// Index maths: cuda/src/conv_plan.h. References: cpp/src/ops/ops_conv.cpp (Conv), ops_pool.cpp
// (MaxPool, AveragePool), ops_nn.cpp (global pools, BatchNormalization).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>

#include "cuda/kernels/conv.h"
#include "cuda/kernels/intrinsics.cuh"
#include "cuda/kernels/launch.cuh"

namespace ember::cuda {
namespace {

// ---- Conv -----------------------------------------------------------------------------------

__device__ __forceinline__ void store_as(float v, float* p) { *p = v; }
__device__ __forceinline__ void store_as(float v, __half* p) { *p = __float2half_rn(v); }
__device__ __forceinline__ void store_as(float v, __nv_bfloat16* p) { *p = __float2bfloat16_rn(v); }

template <class I, class E>
__global__ void im2col_kernel(const float* __restrict__ x,  // [N, C, H, W]
                              E* __restrict__ cols,         // [nb, C * kh * kw, pc]
                              Conv2d g, I n0, I p0, I pc, I n) {
  // The loop counter is 64-bit even when I is int: i + step may pass INT_MAX (n up to
  // 2^31 - 1, step up to kMaxBlocks * kThreads = 2^28); only i < n is decomposed in I.
  const int64_t step = (int64_t)gridDim.x * blockDim.x;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (int64_t)n; i += step) {
    I s = im2col_source<I>(g, n0, p0, pc, (I)i);
    store_as(s >= 0 ? __ldg(x + s) : 0.0f, cols + i);
  }
}

template <class I>
__global__ void bias_fill_kernel(float* __restrict__ y,           // [N, M, P]
                                 const float* __restrict__ bias,  // [M] or null
                                 I M, I P, I n) {
  const int64_t step = (int64_t)gridDim.x * blockDim.x;  // 64-bit counter: see im2col_kernel
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (int64_t)n; i += step)
    y[i] = bias ? bias[((I)i / P) % M] : 0.0f;
}

template <class I>
__global__ void conv_direct_kernel(const float* __restrict__ x,     // [N, C, H, W]
                                   const float* __restrict__ w,     // [M, 1, kh, kw]
                                   const float* __restrict__ bias,  // [M] or null
                                   float* __restrict__ y,           // [N, M, OH, OW]
                                   Conv2d g, I n) {
  I OW = (I)g.OW, OH = (I)g.OH, M = (I)g.M;
  const int64_t step = (int64_t)gridDim.x * blockDim.x;  // 64-bit counter: see im2col_kernel
  for (int64_t i64 = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i64 < (int64_t)n; i64 += step) {
    const I i = (I)i64;
    I ox = i % OW, t = i / OW;
    I oy = t % OH;
    t /= OH;
    I m = t % M, b = t / M;
    float acc = conv_direct_one<I>(g, x, w, b, m, oy, ox);
    y[i] = bias ? acc + __ldg(bias + m) : acc;
  }
}

// ---- pools ----------------------------------------------------------------------------------

__global__ void pool_2d_kernel(const float* __restrict__ x,  // [planes, H, W]
                               float* __restrict__ y,        // [planes, OH, OW]
                               Pool2d g, int64_t n) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    int64_t ox = i % g.OW, t = i / g.OW;
    int64_t oy = t % g.OH, plane = t / g.OH;
    y[i] = pool_one(g, x + plane * g.H * g.W, oy, ox);
  }
}

// max with the reference's NaN rule: a NaN on either side wins.
__device__ __forceinline__ float max_nan(float acc, float v) {
  return (v > acc || isnan(v)) ? v : acc;
}

template <bool Max>
__device__ __forceinline__ float combine(float a, float b) {
  return Max ? max_nan(a, b) : a + b;
}

// TPR threads per row (32: a warp, or the whole 256-thread block); rows loop per block, so
// every thread of a block takes part in each iteration's barriers.
template <int TPR, bool Max>
__global__ void pool_global_kernel(const float* __restrict__ x,  // [rows, cols]
                                   float* __restrict__ y,        // [rows]
                                   int64_t rows, int64_t cols) {
  constexpr int kRowsPerBlock = kThreads / TPR;
  __shared__ float partial[kThreads / 32];
  int lane = threadIdx.x % TPR, sub = threadIdx.x / TPR;
  for (int64_t r0 = (int64_t)blockIdx.x * kRowsPerBlock; r0 < rows;
       r0 += (int64_t)gridDim.x * kRowsPerBlock) {
    int64_t r = r0 + sub;
    float acc = Max ? -INFINITY : 0.0f;
    if (r < rows) {
      const float* xr = x + r * cols;
      for (int64_t c = lane; c < cols; c += TPR) acc = combine<Max>(acc, __ldg(xr + c));
    }
    for (int off = 16; off > 0; off >>= 1)
      acc = combine<Max>(acc, __shfl_xor_sync(0xffffffffu, acc, off));
    if (TPR > 32) {
      if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = acc;
      __syncthreads();
      if (threadIdx.x == 0)
        for (int w = 1; w < kThreads / 32; w++) acc = combine<Max>(acc, partial[w]);
      __syncthreads();  // partial is rewritten by the next row
    }
    if (lane == 0 && r < rows)
      y[r] = Max ? acc : (cols > 0 ? acc / (float)cols : __int_as_float(0x7fc00000));
  }
}

// ---- BatchNormalization ---------------------------------------------------------------------

template <class I>
__global__ void batch_norm_kernel(const float* __restrict__ x,      // [N, C, inner]
                                  const float* __restrict__ scale,  // [C]
                                  const float* __restrict__ b,      // [C]
                                  const float* __restrict__ mean,   // [C]
                                  const float* __restrict__ var,    // [C]
                                  float* __restrict__ y,            // [N, C, inner]
                                  I C, I inner, float eps, I n) {
  const int64_t step = (int64_t)gridDim.x * blockDim.x;  // 64-bit counter: see im2col_kernel
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (int64_t)n; i += step) {
    I c = ((I)i / inner) % C;
    float mul = __ldg(scale + c) / sqrtf(__ldg(var + c) + eps);
    y[i] = (x[i] - __ldg(mean + c)) * mul + __ldg(b + c);
  }
}

__device__ __forceinline__ float load_as(const __half* p) { return __half2float(*p); }
__device__ __forceinline__ float load_as(const __nv_bfloat16* p) { return __bfloat162float(*p); }

template <class I, class E>
__global__ void finish_16_kernel(const E* __restrict__ y16, const float* __restrict__ bias,
                                 float* __restrict__ y, I M, I P, I n) {
  const int64_t step = (int64_t)gridDim.x * blockDim.x;  // 64-bit counter: see im2col_kernel
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (int64_t)n; i += step) {
    const float v = load_as(y16 + i);
    y[i] = bias ? v + __ldg(bias + (I)i / P % M) : v;
  }
}

template <class E>
void finish_16_as(const E* y16, const float* bias, float* y, int64_t M, int64_t P, int64_t n,
                  void* stream) {
  auto* narrow = finish_16_kernel<int, E>;
  auto* wide = finish_16_kernel<int64_t, E>;
  if (n <= INT_MAX)
    EMBER_LAUNCH(narrow, blocks_for(n), kThreads, 0, as_stream(stream))(y16, bias, y, (int)M,
                                                                        (int)P, (int)n);
  else
    EMBER_LAUNCH(wide, blocks_for(n), kThreads, 0, as_stream(stream))(y16, bias, y, M, P, n);
}

template <class E>
void im2col_as(const float* x, E* cols, const Conv2d& g, int64_t n0, int64_t p0, int64_t pc,
               int64_t n, void* stream) {
  // 32-bit index maths when every offset (cols, X, window coordinates) fits.
  auto* narrow = im2col_kernel<int, E>;
  auto* wide = im2col_kernel<int64_t, E>;
  if (n <= INT_MAX && conv_fits_int32(g))
    EMBER_LAUNCH(narrow, blocks_for(n), kThreads, 0, as_stream(stream))(x, cols, g, (int)n0,
                                                                        (int)p0, (int)pc, (int)n);
  else
    EMBER_LAUNCH(wide, blocks_for(n), kThreads, 0, as_stream(stream))(x, cols, g, n0, p0, pc, n);
}

}  // namespace

void conv_im2col(const float* x, void* cols, const Conv2d& g, int64_t n0, int64_t nb, int64_t p0,
                 int64_t pc, int cols_type, void* stream) {
  int64_t n = nb * g.rows() * pc;
  if (n <= 0) return;
  if (cols_type == 1) im2col_as(x, static_cast<__half*>(cols), g, n0, p0, pc, n, stream);
  else if (cols_type == 2) im2col_as(x, static_cast<__nv_bfloat16*>(cols), g, n0, p0, pc, n, stream);
  else im2col_as(x, static_cast<float*>(cols), g, n0, p0, pc, n, stream);
}

void conv_finish_16(const void* y16, const float* bias, float* y, int64_t N, int64_t M, int64_t P,
                    bool bf16, void* stream) {
  const int64_t n = N * M * P;
  if (n <= 0) return;
  if (bf16) finish_16_as(static_cast<const __nv_bfloat16*>(y16), bias, y, M, P, n, stream);
  else finish_16_as(static_cast<const __half*>(y16), bias, y, M, P, n, stream);
}

void conv_bias_fill(float* y, const float* bias, int64_t N, int64_t M, int64_t P, void* stream) {
  int64_t n = N * M * P;
  if (n <= 0) return;
  if (n <= INT_MAX)
    EMBER_LAUNCH(bias_fill_kernel<int>, blocks_for(n), kThreads, 0, as_stream(stream))(
        y, bias, (int)M, (int)P, (int)n);
  else
    EMBER_LAUNCH(bias_fill_kernel<int64_t>, blocks_for(n), kThreads, 0, as_stream(stream))(
        y, bias, M, P, n);
}

void conv_direct(const float* x, const float* w, const float* bias, float* y, const Conv2d& g,
                 void* stream) {
  int64_t n = g.N * g.M * g.P();
  if (n <= 0) return;
  if (conv_fits_int32(g))
    EMBER_LAUNCH(conv_direct_kernel<int>, blocks_for(n), kThreads, 0, as_stream(stream))(
        x, w, bias, y, g, (int)n);
  else
    EMBER_LAUNCH(conv_direct_kernel<int64_t>, blocks_for(n), kThreads, 0, as_stream(stream))(
        x, w, bias, y, g, n);
}

void pool_2d(const float* x, float* y, const Pool2d& g, void* stream) {
  int64_t n = g.planes * g.OH * g.OW;
  if (n <= 0) return;
  EMBER_LAUNCH(pool_2d_kernel, blocks_for(n), kThreads, 0, as_stream(stream))(x, y, g, n);
}

void pool_global(const float* x, float* y, int64_t rows, int64_t cols, bool is_max, void* stream) {
  if (rows <= 0) return;
  cudaStream_t s = as_stream(stream);
  if (cols <= 1024) {
    constexpr int kRows = kThreads / 32;
    int64_t b = (rows + kRows - 1) / kRows;
    int blocks = (int)(b < kMaxBlocks ? b : kMaxBlocks);
    auto* kernel = is_max ? pool_global_kernel<32, true> : pool_global_kernel<32, false>;
    EMBER_LAUNCH(kernel, blocks, kThreads, 0, s)(x, y, rows, cols);
  } else {
    int blocks = (int)(rows < kMaxBlocks ? rows : kMaxBlocks);
    auto* kernel =
        is_max ? pool_global_kernel<kThreads, true> : pool_global_kernel<kThreads, false>;
    EMBER_LAUNCH(kernel, blocks, kThreads, 0, s)(x, y, rows, cols);
  }
}

void batch_norm(const float* x, const float* scale, const float* b, const float* mean,
                const float* var, float* y, int64_t N, int64_t C, int64_t inner, float eps,
                void* stream) {
  int64_t n = N * C * inner;
  if (n <= 0) return;
  if (n <= INT_MAX)
    EMBER_LAUNCH(batch_norm_kernel<int>, blocks_for(n), kThreads, 0, as_stream(stream))(
        x, scale, b, mean, var, y, (int)C, (int)inner, eps, (int)n);
  else
    EMBER_LAUNCH(batch_norm_kernel<int64_t>, blocks_for(n), kThreads, 0, as_stream(stream))(
        x, scale, b, mean, var, y, C, inner, eps, n);
}

}  // namespace ember::cuda
