// Residual add + LayerNorm / RMSNorm on CUDA: s = x + r, y = norm(s) over each row.
// Bandwidth-bound: one read of x and r, one write of y (and of s when the graph reads it).
// - add_norm_cached: a row lives in registers, kAddNormPerThread elements per thread at
//   stride group-size (coalesced): a warp per row up to 256 columns, else a block per row up
//   to 8192. Statistics in double like the reference (LayerNorm: mean, then the squared
//   deviations from the registers: two passes, one read).
// - add_norm_vec4: the block-per-row case when rows are whole float4s (16-byte aligned):
//   float4 loads and stores; RMSNorm capped at 32 registers (no spills, sm_90), so a
//   4096-column row's 512-thread blocks run 4 per SM instead of 2. On the H200 the scalar
//   kernel (50 registers, 2 blocks per SM) moved 2333 GB/s, 55% of the copy bandwidth: a block
//   has no loads in flight while it reduces and writes, and 2 blocks per SM left too few.
//   LayerNorm needs 64 registers without spills (40 spilled 56 bytes), so it keeps 2.
// - add_norm_long: rows past 8192 columns, a block per row reading each element again per
//   pass (from s when it is written; else x + r again, the same float bits).
// The sum is a float add, bit-identical to the Add kernels. With codes (fuse_norm_quant), each
// kernel also quantizes its rows of y per token, in the same launch: the max |y| over the row
// (from registers; the long kernel reads its own writes of y back), then the int8 codes, as
// QMatMul's token mode (quantize.cuh). Launch shape: add_norm_launch (add_norm.h).
// Reference: cpp/src/ops/ops_add_norm.cpp; adapter: cuda/src/ops_add_norm.cpp.
#include "cuda/kernels/add_norm.h"
#include "cuda/kernels/intrinsics.cuh"
#include "cuda/kernels/quantize.cuh"
#include "cuda/kernels/row_group.cuh"

#include <cuda_runtime.h>

#include <cstdint>

namespace ember::cuda {
namespace {

constexpr int kWarpBlock = 256;  // warp mode: 8 rows per block

// One output element: statistics and parameters in double, as the reference.
template <bool RMS>
__device__ __forceinline__ float norm_value(float v, double mean, double inv, float sc,
                                            const float* bias, int64_t j, bool bias_scalar) {
  if (RMS) return (float)((double)v * inv * (double)sc);
  double o = ((double)v - mean) * inv * (double)sc;
  if (bias) o += (double)bias[bias_scalar ? 0 : j];
  return (float)o;
}

template <bool WARP, bool RMS, bool QUANT>
__global__ void __launch_bounds__(1024)
    add_norm_cached(const float* __restrict__ x,      // [rows, cols]
                    const float* __restrict__ r,      // [rows, cols]
                    const float* __restrict__ scale,  // [cols] or [1]
                    const float* __restrict__ bias,   // [cols] or [1] or nullptr
                    float* __restrict__ y,            // [rows, cols]
                    float* __restrict__ s,            // [rows, cols] or nullptr
                    int64_t rows, int cols, bool scale_scalar, bool bias_scalar, double eps,
                    AddNormCodes q) {
  constexpr int K = kAddNormPerThread;
  __shared__ double sh[32];
  const RowGroup<WARP> grp;
  const int lane = grp.lane, size = grp.size;
  // Warp mode: the whole warp shares a row, so every lane loops (and shuffles) together.
  for (int64_t row = grp.first; row < rows; row += grp.step) {
    const int64_t base = row * cols;
    float v[K];
    double acc = 0;
#pragma unroll
    for (int k = 0; k < K; k++) {
      const int j = lane + k * size;
      v[k] = 0.0f;
      if (j < cols) {
        v[k] = x[base + j] + r[base + j];
        if (s) s[base + j] = v[k];
        acc += RMS ? (double)v[k] * (double)v[k] : (double)v[k];
      }
    }
    acc = grp.reduce(acc, SumOp(), sh);
    double mean = 0, inv;
    if (RMS) {
      inv = 1.0 / sqrt(acc / (double)cols + eps);
    } else {
      mean = acc / (double)cols;
      double var = 0;
#pragma unroll
      for (int k = 0; k < K; k++) {
        const double d = (double)v[k] - mean;
        if (lane + k * size < cols) var += d * d;
      }
      inv = 1.0 / sqrt(grp.reduce(var, SumOp(), sh) / (double)cols + eps);
    }
    double amax = 0;  // QUANT: max |y| of the row; v keeps y
#pragma unroll
    for (int k = 0; k < K; k++) {
      const int j = lane + k * size;
      if (j >= cols) continue;
      v[k] = norm_value<RMS>(v[k], mean, inv, scale[scale_scalar ? 0 : j], bias, j, bias_scalar);
      y[base + j] = v[k];
      if (QUANT) amax = max_keep((double)fabsf(v[k]), amax);
    }
    if (!QUANT) continue;
    const float qs = token_scale((float)grp.reduce(amax, MaxKeep(), sh));
    if (lane == 0) q.scales[row] = qs;
#pragma unroll
    for (int k = 0; k < K; k++) {
      const int j = lane + k * size;
      if (j < cols) q.codes[base + j] = (int8_t)token_code(v[k], qs);
    }
  }
}

__device__ __forceinline__ float4 add4(float4 a, float4 b) {
  return make_float4(a.x + b.x, a.y + b.y, a.z + b.z, a.w + b.w);
}

// A block per row of cols4 float4s; each thread keeps kAddNormPerThread / 4 of them.
template <bool RMS, bool QUANT>
__global__ void __maxnreg__(RMS ? 32 : 64)
    add_norm_vec4(const float4* __restrict__ x,      // [rows, cols4]
                  const float4* __restrict__ r,      // [rows, cols4]
                  const float* __restrict__ scale,   // [cols] or [1]
                  const float* __restrict__ bias,    // [cols] or [1] or nullptr
                  float4* __restrict__ y,            // [rows, cols4]
                  float4* __restrict__ s,            // [rows, cols4] or nullptr
                  int64_t rows, int cols4, bool scale_scalar, bool bias_scalar, double eps,
                  AddNormCodes q) {
  constexpr int C = kAddNormPerThread / 4;
  static_assert(C * 4 == kAddNormPerThread, "whole float4s per thread");
  __shared__ double sh[32];
  const double cols = 4.0 * cols4;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const int64_t base = row * cols4;
    float4 v[C];
    double acc = 0;
#pragma unroll
    for (int c = 0; c < C; c++) {
      const int j = threadIdx.x + c * blockDim.x;
      v[c] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      if (j < cols4) v[c] = add4(x[base + j], r[base + j]);
    }
#pragma unroll
    for (int c = 0; c < C; c++) {
      const int j = threadIdx.x + c * blockDim.x;
      if (j < cols4) {
        if (s) s[base + j] = v[c];
        const float e[4] = {v[c].x, v[c].y, v[c].z, v[c].w};
#pragma unroll
        for (int i = 0; i < 4; i++) acc += RMS ? (double)e[i] * (double)e[i] : (double)e[i];
      }
    }
    acc = block_reduce(acc, SumOp(), sh);
    double mean = 0, inv;
    if (RMS) {
      inv = 1.0 / sqrt(acc / cols + eps);
    } else {
      mean = acc / cols;
      double var = 0;
#pragma unroll
      for (int c = 0; c < C; c++) {
        if (threadIdx.x + c * blockDim.x >= cols4) continue;
        const float e[4] = {v[c].x, v[c].y, v[c].z, v[c].w};
#pragma unroll
        for (int i = 0; i < 4; i++) var += ((double)e[i] - mean) * ((double)e[i] - mean);
      }
      inv = 1.0 / sqrt(block_reduce(var, SumOp(), sh) / cols + eps);
    }
    double amax = 0;  // QUANT: max |y| of the row; v keeps y
#pragma unroll
    for (int c = 0; c < C; c++) {
      const int j = threadIdx.x + c * blockDim.x;
      if (j >= cols4) continue;
      const float e[4] = {v[c].x, v[c].y, v[c].z, v[c].w};
      float o[4];
#pragma unroll
      for (int i = 0; i < 4; i++) {
        const int64_t col = 4 * (int64_t)j + i;
        o[i] = norm_value<RMS>(e[i], mean, inv, scale[scale_scalar ? 0 : col], bias, col,
                               bias_scalar);
        if (QUANT) amax = max_keep((double)fabsf(o[i]), amax);
      }
      v[c] = make_float4(o[0], o[1], o[2], o[3]);
      y[base + j] = v[c];
    }
    if (!QUANT) continue;
    const float qs = token_scale((float)block_reduce(amax, MaxKeep(), sh));
    if (threadIdx.x == 0) q.scales[row] = qs;
    auto* codes = reinterpret_cast<uint32_t*>(q.codes) + base;  // 4 codes per float4
#pragma unroll
    for (int c = 0; c < C; c++) {
      const int j = threadIdx.x + c * blockDim.x;
      if (j < cols4)
        codes[j] = pack4(token_code(v[c].x, qs), token_code(v[c].y, qs),
                         token_code(v[c].z, qs), token_code(v[c].w, qs));
    }
  }
}

template <bool RMS, bool QUANT>
__global__ void add_norm_long(const float* __restrict__ x,      // [rows, cols]
                              const float* __restrict__ r,      // [rows, cols]
                              const float* __restrict__ scale,  // [cols] or [1]
                              const float* __restrict__ bias,   // [cols] or [1] or nullptr
                              float* __restrict__ y,            // [rows, cols]
                              float* __restrict__ s,            // [rows, cols] or nullptr
                              int64_t rows, int64_t cols, bool scale_scalar, bool bias_scalar,
                              double eps, AddNormCodes q) {
  __shared__ double sh[32];
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const float* xr = x + row * cols;
    const float* rr = r + row * cols;
    float* sr = s ? s + row * cols : nullptr;
    float* yr = y + row * cols;
    double acc = 0;
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
      const float v = xr[j] + rr[j];
      if (sr) sr[j] = v;
      acc += RMS ? (double)v * (double)v : (double)v;
    }
    acc = block_reduce(acc, SumOp(), sh);
    // Later passes read this thread's own writes of s (one stream instead of two).
    double mean = 0, inv;
    if (RMS) {
      inv = 1.0 / sqrt(acc / (double)cols + eps);
    } else {
      mean = acc / (double)cols;
      double var = 0;
      for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
        const double d = (double)(sr ? sr[j] : xr[j] + rr[j]) - mean;
        var += d * d;
      }
      inv = 1.0 / sqrt(block_reduce(var, SumOp(), sh) / (double)cols + eps);
    }
    double amax = 0;  // QUANT: max |y| of the row
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
      yr[j] = norm_value<RMS>(sr ? sr[j] : xr[j] + rr[j], mean, inv, scale[scale_scalar ? 0 : j],
                              bias, j, bias_scalar);
      if (QUANT) amax = max_keep((double)fabsf(yr[j]), amax);
    }
    if (!QUANT) continue;
    const float qs = token_scale((float)block_reduce(amax, MaxKeep(), sh));
    if (threadIdx.x == 0) q.scales[row] = qs;
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x)  // this thread's own writes of y
      q.codes[row * cols + j] = (int8_t)token_code(yr[j], qs);
  }
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

template <bool RMS, bool QUANT>
void launch(const float* x, const float* r, const float* scale, const float* bias, float* y,
            float* s, int64_t rows, int64_t cols, bool scale_scalar, bool bias_scalar,
            double eps, AddNormCodes q, cudaStream_t stream) {
  const AddNormLaunch l = add_norm_launch(cols);
  constexpr int64_t kMaxGrid = int64_t(1) << 30;  // row loops cover the rest
  if (l.warp) {
    constexpr int64_t per_block = kWarpBlock / 32;
    const int grid = (int)std::min<int64_t>((rows + per_block - 1) / per_block, kMaxGrid);
    auto* kernel = add_norm_cached<true, RMS, QUANT>;
    EMBER_LAUNCH(kernel, grid, kWarpBlock, 0, stream)(x, r, scale, bias, y, s, rows, (int)cols,
                                                      scale_scalar, bias_scalar, eps, q);
    return;
  }
  const int grid = (int)std::min<int64_t>(rows, kMaxGrid);
  if (l.cached && cols % 4 == 0 && aligned16(x) && aligned16(r) && aligned16(y) &&
      aligned16(s) && reinterpret_cast<uintptr_t>(q.codes) % 4 == 0) {
    // Whole float4s per row: threads = cols / kAddNormPerThread rounded up to a warp, as above.
    auto* kernel = add_norm_vec4<RMS, QUANT>;
    EMBER_LAUNCH(kernel, grid, l.threads, 0, stream)(
        reinterpret_cast<const float4*>(x), reinterpret_cast<const float4*>(r), scale, bias,
        reinterpret_cast<float4*>(y), reinterpret_cast<float4*>(s), rows, (int)(cols / 4),
        scale_scalar, bias_scalar, eps, q);
  } else if (l.cached) {
    auto* kernel = add_norm_cached<false, RMS, QUANT>;
    EMBER_LAUNCH(kernel, grid, l.threads, 0, stream)(x, r, scale, bias, y, s, rows, (int)cols,
                                                     scale_scalar, bias_scalar, eps, q);
  } else {
    auto* kernel = add_norm_long<RMS, QUANT>;
    EMBER_LAUNCH(kernel, grid, l.threads, 0, stream)(x, r, scale, bias, y, s, rows, cols,
                                                     scale_scalar, bias_scalar, eps, q);
  }
}

}  // namespace

void add_norm_f32(const float* x, const float* r, const float* scale, const float* bias, float* y,
                  float* s, int64_t rows, int64_t cols, bool rms, bool scale_scalar,
                  bool bias_scalar, double eps, void* stream, AddNormCodes q) {
  if (rows <= 0 || cols <= 0) return;
  if (rms) bias = nullptr, bias_scalar = false;
  auto* go = rms ? (q.codes ? launch<true, true> : launch<true, false>)
                 : (q.codes ? launch<false, true> : launch<false, false>);
  go(x, r, scale, bias, y, s, rows, cols, scale_scalar, bias_scalar, eps, q, (cudaStream_t)stream);
}

}  // namespace ember::cuda
