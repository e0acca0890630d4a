// GGUF Q8_0 kernels (q8_0.h), in the reference's exact order. Q8MatMul: a thread per (row,
// 32-block) quantizes A to int16 with the block's scale d (division, round half to even); then
// a warp computes 4 outputs, 8 lanes each: lane l of an output sums, block after block, the
// exact int products of its elements {2l, 2l+1, 2l+16, 2l+17} and fma's them with d * scale, as
// the reference's acc[l]; shuffles at distance 4, 2, 1 then add the 8 lanes in sum8's order.
// Q8Gather: a thread per output element. Grid-stride loops past grid_for's cap.
#include <cuda_runtime.h>

#include <algorithm>
#include <cfloat>
#include <cmath>

#include "cuda/kernels/intrinsics.cuh"
#include "cuda/kernels/q8_0.h"

namespace ember::cuda {
namespace {

constexpr unsigned kFull = 0xffffffffu;

// Block b of A's row `row` (i = row * nb + b): its int16 codes and scale, as ref_q8matmul.
__device__ __forceinline__ void quantize_block(const float* __restrict__ a, int16_t* __restrict__ q,
                                               float* __restrict__ d, int64_t k, int64_t row,
                                               int64_t b, int64_t i) {
  float v[32], amax = 0.0f;
  bool finite = true;
  for (int j = 0; j < 32; j++) {
    v[j] = 32 * b + j < k ? a[row * k + 32 * b + j] : 0.0f;
    amax = fmaxf(amax, fabsf(v[j]));
    finite = finite && fabsf(v[j]) <= FLT_MAX;  // false for inf and NaN
  }
  const float db = finite ? amax / 32767.0f : NAN;
  d[i] = db;
  for (int j = 0; j < 32; j++) {
    const int c = finite && db != 0.0f ? (int)rintf(v[j] / db) : 0;
    q[i * 32 + j] = (int16_t)min(32767, max(-32767, c));
  }
}

__global__ void q8_0_quantize_kernel(const float* __restrict__ a,  // [m, k]
                                     int16_t* __restrict__ q,      // [m, nb, 32]
                                     float* __restrict__ d,        // [m, nb]
                                     int64_t m, int64_t k, int64_t nb) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < m * nb;
       i += (int64_t)gridDim.x * blockDim.x)
    quantize_block(a, q, d, k, i / nb, i % nb, i);
}

__device__ __forceinline__ double q8_0_act(double v, int act) {
  switch (act) {
    case 1: return v < 0 ? 0.0 : v;
    case 2: return 0.5 * v * (1.0 + erf(v * 0.70710678118654752440));
    case 3: return 0.5 * v * (1.0 + tanh(0.79788456080286535588 * (v + 0.044715 * v * v * v)));
    default: return v;
  }
}

__global__ void q8_0_matmul_kernel(const int16_t* __restrict__ q,     // [m, nb, 32]
                                   const float* __restrict__ d,       // [m, nb]
                                   const int8_t* __restrict__ codes,  // [n, nb, 32]
                                   const float* __restrict__ scales,  // [n, nb]
                                   const float* __restrict__ bias,    // [n] or null
                                   float* __restrict__ y,             // [m, n]
                                   int64_t m, int64_t n, int64_t nb, int act) {
  const int64_t warp = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32, l = lane % 8;
  const int64_t quads = (n + 3) / 4;
  if (warp >= m * quads) return;  // whole warps: blockDim is a multiple of 32
  const int64_t row = warp / quads, col = warp % quads * 4 + lane / 8;
  const bool live = col < n;
  float acc = 0.0f;
  if (live) {
    const int16_t* qr = q + row * nb * 32;
    const int8_t* cr = codes + col * nb * 32;
    for (int64_t b = 0; b < nb; b++) {
      const float s = d[row * nb + b] * scales[col * nb + b];
      const int16_t* qb = qr + b * 32;
      const int8_t* cb = cr + b * 32;
      const int p = qb[2 * l] * cb[2 * l] + qb[2 * l + 1] * cb[2 * l + 1] +
                    qb[2 * l + 16] * cb[2 * l + 16] + qb[2 * l + 17] * cb[2 * l + 17];
      acc = fmaf((float)p, s, acc);
    }
  }
  // sum8: ((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7)), lanes of one output only.
  acc += __shfl_xor_sync(kFull, acc, 4);
  acc += __shfl_xor_sync(kFull, acc, 2);
  acc += __shfl_xor_sync(kFull, acc, 1);
  if (live && l == 0) {
    float v = acc;
    if (bias) v = v + bias[col];
    y[row * n + col] = act ? (float)q8_0_act(v, act) : v;
  }
}

template <class I>
__global__ void q8_0_gather_kernel(const int8_t* __restrict__ codes,  // [rows, nb, 32]
                                   const float* __restrict__ scales,  // [rows, nb]
                                   const I* __restrict__ idx,         // [count]
                                   float* __restrict__ out,           // [count, k]
                                   int64_t rows, int64_t total, int64_t k, int64_t nb) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t e = i / k, c = i % k;
    int64_t r = (int64_t)idx[e];
    if (r < 0) r += rows;
    const bool in = r >= 0 && r < rows;
    out[i] = in ? (float)codes[(r * nb + c / 32) * 32 + c % 32] * scales[r * nb + c / 32] : 0.0f;
  }
}

unsigned grid_for(int64_t threads) {
  return (unsigned)std::min<int64_t>((threads + 255) / 256, 1 << 20);
}

}  // namespace

void q8_0_matmul(const float* a, const int8_t* codes, const float* scales, const float* bias,
                 float* y, int16_t* q, float* d, int64_t m, int64_t n, int64_t k, int act,
                 void* stream) {
  if (m == 0 || n == 0) return;
  auto s = static_cast<cudaStream_t>(stream);
  const int64_t nb = (k + 31) / 32;
  EMBER_LAUNCH(q8_0_quantize_kernel, grid_for(m * nb), 256, 0, s)(a, q, d, m, k, nb);
  const int64_t threads = m * ((n + 3) / 4) * 32;  // a warp per row and 4 columns
  EMBER_LAUNCH(q8_0_matmul_kernel, (unsigned)((threads + 255) / 256), 256, 0, s)(
      q, d, codes, scales, bias, y, m, n, nb, act);
}

void q8_0_gather(const int8_t* codes, const float* scales, const void* indices, bool idx64,
                 float* out, int64_t rows, int64_t count, int64_t k, void* stream) {
  const int64_t total = count * k, nb = (k + 31) / 32;
  if (total == 0) return;
  auto s = static_cast<cudaStream_t>(stream);
  if (idx64)
    EMBER_LAUNCH(q8_0_gather_kernel<int64_t>, grid_for(total), 256, 0, s)(
        codes, scales, static_cast<const int64_t*>(indices), out, rows, total, k, nb);
  else
    EMBER_LAUNCH(q8_0_gather_kernel<int32_t>, grid_for(total), 256, 0, s)(
        codes, scales, static_cast<const int32_t*>(indices), out, rows, total, k, nb);
}

}  // namespace ember::cuda
