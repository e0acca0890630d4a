// QMatMul (W8A8) on CUDA, around cuBLASLt's int8 GEMM (cublaslt.cpp, CUBLAS_COMPUTE_32I):
// - quantize: activations to int8 codes [m, k_pad] exactly as the reference rounds them
//   (IEEE division, rint half-to-even, NaN to the low bound): token mode one block per row
//   (amax, then codes); static / tensor_u8 elementwise from Q8Params computed on the device
//   (tensor_u8: a two-pass min / max over all of A first).
// - q8_epilogue: y = act(((float)acc * s_m) * w_scale + bias) from cuBLASLt's int32 sums, every
//   product / sum rounded on its own (__fmul_rn: no FMA contraction), activation in double.
// - q8_gemm_small: dp4a, a warp per output column and up to 8 rows, epilogue fused: decode
//   shapes (weight-bandwidth bound), and the fallback where cuBLASLt has no int8 algorithm.
// The int32 sums are exact, so results match the CPU but for the activation's double maths.
// Reference: cpp/src/ops/ops_qmatmul.cpp; adapter: cuda/src/ops_q8.cpp.
#include "cuda/kernels/q8_gemm.h"
#include "cuda/kernels/intrinsics.cuh"
#include "cuda/kernels/quantize.cuh"

#include <cuda_runtime.h>

#include <cfloat>
#include <cstdint>

namespace ember::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kMinMaxBlocks = 1024;  // tensor_u8's first pass: partial results at most

template <class F>
__device__ float block_reduce(float v, F f, float* sh) {  // sh: [32]; result in every thread
  for (int o = 16; o > 0; o >>= 1) v = f(v, __shfl_xor_sync(0xffffffffu, v, o));
  int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // sh may still be read by a previous call
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  int warps = (blockDim.x + 31) / 32;
  v = lane < warps ? sh[lane] : sh[0];
  for (int o = 16; o > 0; o >>= 1) v = f(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// ---- activation quantization -------------------------------------------------------------------

__global__ void params_static(const float* __restrict__ a_scale,  // [1]
                              const void* __restrict__ zp,        // [1] or null
                              bool zp_signed, Q8Params* __restrict__ out) {
  Q8Params p;
  p.s = a_scale[0];
  p.zp = !zp ? 0 : zp_signed ? (int32_t)*(const int8_t*)zp : (int32_t)*(const uint8_t*)zp;
  p.qmin = zp_signed ? -128 : 0;
  p.qmax = zp_signed ? 127 : 255;
  p.off = zp_signed ? 0 : 128;
  p.corr = p.off - p.zp;
  *out = p;
}

__global__ void minmax_partial(const float* __restrict__ a,  // [numel]
                               int64_t numel, float* __restrict__ partial) {  // [2, gridDim.x]
  __shared__ float sh[32];
  float lo = 0.0f, hi = 0.0f;  // the reference starts both at 0
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < numel;
       i += (int64_t)gridDim.x * blockDim.x) {
    float v = a[i];
    lo = min_keep(v, lo);
    hi = max_keep(v, hi);
  }
  lo = block_reduce(lo, MinKeep(), sh);
  hi = block_reduce(hi, MaxKeep(), sh);
  if (threadIdx.x == 0) {
    partial[blockIdx.x] = lo;
    partial[gridDim.x + blockIdx.x] = hi;
  }
}

// DynamicQuantizeLinear's scale and zero point, as onnx.reference computes them in float32.
__global__ void params_tensor_u8(const float* __restrict__ partial,  // [2, blocks]
                                 int blocks, Q8Params* __restrict__ out) {
  __shared__ float sh[32];
  float lo = 0.0f, hi = 0.0f;
  for (int i = threadIdx.x; i < blocks; i += blockDim.x) {
    lo = min_keep(partial[i], lo);
    hi = max_keep(partial[blocks + i], hi);
  }
  lo = block_reduce(lo, MinKeep(), sh);
  hi = block_reduce(hi, MaxKeep(), sh);
  if (threadIdx.x != 0) return;
  float s = __fdiv_rn(hi == lo ? 1.0f : __fsub_rn(hi, lo), 255.0f);
  float z = __fsub_rn(0.0f, __fdiv_rn(lo, s));
  z = max_keep(min_keep(z, 255.0f), 0.0f);
  Q8Params p;
  p.s = s;
  p.zp = (int32_t)rintf(z);
  p.qmin = 0;
  p.qmax = 255;
  p.off = 128;
  p.corr = p.off - p.zp;
  *out = p;
}

__global__ void quantize_token(const float* __restrict__ a,     // [m, k]
                               int8_t* __restrict__ codes,      // [m, k_pad]
                               float* __restrict__ row_scale,   // [m]
                               int64_t k, int64_t k_pad) {
  __shared__ float sh[32];
  const float* x = a + (int64_t)blockIdx.x * k;
  float amax = 0.0f;
  for (int64_t i = threadIdx.x; i < k; i += blockDim.x) amax = max_keep(fabsf(x[i]), amax);
  amax = block_reduce(amax, MaxKeep(), sh);
  const float s = token_scale(amax);
  if (threadIdx.x == 0) row_scale[blockIdx.x] = s;
  auto* out = reinterpret_cast<uint32_t*>(codes + (int64_t)blockIdx.x * k_pad);
  for (int64_t g = threadIdx.x; g < k_pad / 4; g += blockDim.x) {
    int c[4];
#pragma unroll
    for (int t = 0; t < 4; t++) {
      int64_t i = g * 4 + t;
      c[t] = i < k ? token_code(x[i], s) : 0;
    }
    out[g] = pack4(c[0], c[1], c[2], c[3]);
  }
}

__global__ void pad_codes(const int8_t* __restrict__ src,  // [m, k]
                          int8_t* __restrict__ dst,        // [m, k_pad]
                          int64_t m, int64_t k, int64_t k_pad) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < m * k_pad;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t row = i / k_pad, c = i - row * k_pad;
    dst[i] = c < k ? src[row * k + c] : 0;
  }
}

__global__ void quantize_static(const float* __restrict__ a,       // [m, k]
                                int8_t* __restrict__ codes,        // [m, k_pad]
                                const Q8Params* __restrict__ params,  // [1]
                                int64_t m, int64_t k, int64_t k_pad) {
  const Q8Params p = *params;
  const float zp = (float)p.zp, qmin = (float)p.qmin, qmax = (float)p.qmax;
  const int64_t groups = k_pad / 4, total = m * groups;
  auto* out = reinterpret_cast<uint32_t*>(codes);
  for (int64_t gi = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; gi < total;
       gi += (int64_t)gridDim.x * blockDim.x) {
    int64_t row = gi / groups, g = gi - row * groups;
    const float* x = a + row * k;
    int c[4];
#pragma unroll
    for (int t = 0; t < 4; t++) {
      int64_t i = g * 4 + t;
      c[t] = i < k ? quantize(x[i], p.s, zp, qmin, qmax) - p.off : 0;
    }
    out[gi] = pack4(c[0], c[1], c[2], c[3]);
  }
}

// ---- epilogue --------------------------------------------------------------------------------

// The reference's fused_activate_d in double, each operation rounded on its own (no FMA).
__device__ __forceinline__ float activate(Q8Act act, float f) {
  double x = f;
  switch (act) {
    case Q8Act::None: return f;
    case Q8Act::Relu: return x < 0 ? 0.0f : f;
    case Q8Act::Gelu:  // 0.5 x erfc(-x / sqrt2)
      return (float)__dmul_rn(__dmul_rn(0.5, x), erfc(__ddiv_rn(-x, 1.4142135623730951)));
    case Q8Act::GeluTanh: {  // x sigmoid(2 sqrt(2 / pi) (x + 0.044715 x^3))
      const double kk = 0.7978845608028654;
      double x3 = __dmul_rn(__dmul_rn(__dmul_rn(0.044715, x), x), x);
      double u = __dmul_rn(__dmul_rn(2.0, kk), __dadd_rn(x, x3));
      double sg;
      if (u >= 0) {
        sg = __ddiv_rn(1.0, __dadd_rn(1.0, exp(-u)));
      } else {
        double e = exp(u);
        sg = __ddiv_rn(e, __dadd_rn(1.0, e));
      }
      return (float)__dmul_rn(x, sg);
    }
  }
  return f;
}

__device__ __forceinline__ float finish(int32_t acc, int64_t row, int64_t col, const Q8Epilogue& e) {
  float s;
  if (e.params) {
    // Wrapping int32 maths: the true sum fits int32 (K <= 65536), so the wrapped one is it.
    acc = (int32_t)((uint32_t)acc + (uint32_t)e.params->corr * (uint32_t)e.colsum[col]);
    s = e.params->s;
  } else {
    s = e.row_scale[row];
  }
  float v = __fmul_rn(__fmul_rn(__int2float_rn(acc), s), e.w_scale[col]);
  if (e.bias) v = __fadd_rn(v, e.bias[col]);
  return activate(e.act, v);
}

__global__ void epilogue(const int32_t* __restrict__ acc,  // [m, n_pad]
                         Q8Epilogue e, float* __restrict__ y,  // [m, n]
                         int64_t m, int64_t n, int64_t n_pad) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < m * n;
       i += (int64_t)gridDim.x * blockDim.x) {
    int64_t row = i / n, col = i - row * n;
    y[i] = finish(acc[row * n_pad + col], row, col, e);
  }
}

// ---- small-m GEMM ----------------------------------------------------------------------------

// Block: 8 warps, 8 consecutive columns; warp lanes stride k by 16 bytes (one int4 of weight
// and of each row's codes per step). Rows in tiles of MR along grid y (grid-stride).
template <int MR>
__global__ void __launch_bounds__(kThreads)
    gemm_small(const int8_t* __restrict__ codes,  // [m, k_pad]
               const int8_t* __restrict__ w,      // [n_pad, k_pad]
               Q8Epilogue e, float* __restrict__ y,  // [m, n]
               int64_t m, int64_t n, int64_t k_pad) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t col = (int64_t)blockIdx.x * (kThreads / 32) + warp;
  if (col >= n) return;  // whole warps
  const int8_t* wr = w + col * k_pad;
  for (int64_t row0 = (int64_t)blockIdx.y * MR; row0 < m; row0 += (int64_t)gridDim.y * MR) {
    const int rows = (int)(m - row0 < MR ? m - row0 : MR);
    int acc[MR];
#pragma unroll
    for (int r = 0; r < MR; r++) acc[r] = 0;
#pragma unroll 2
    for (int64_t k = lane * 16; k < k_pad; k += 32 * 16) {
      const int4 wv = __ldg(reinterpret_cast<const int4*>(wr + k));
#pragma unroll
      for (int r = 0; r < MR; r++) {
        if (r < rows) {
          const int4 av = __ldg(reinterpret_cast<const int4*>(codes + (row0 + r) * k_pad + k));
          acc[r] = __dp4a(av.x, wv.x, acc[r]);
          acc[r] = __dp4a(av.y, wv.y, acc[r]);
          acc[r] = __dp4a(av.z, wv.z, acc[r]);
          acc[r] = __dp4a(av.w, wv.w, acc[r]);
        }
      }
    }
#pragma unroll
    for (int r = 0; r < MR; r++)
      for (int o = 16; o > 0; o >>= 1) acc[r] += __shfl_xor_sync(0xffffffffu, acc[r], o);
#pragma unroll
    for (int r = 0; r < MR; r++)
      if (r < rows && lane == r) y[(row0 + r) * n + col] = finish(acc[r], row0 + r, col, e);
  }
}

// Blocks for a grid-stride loop over `work` items: enough for a few waves, at most 2^20.
unsigned grid_for(int64_t work) {
  int64_t b = (work + kThreads - 1) / kThreads;
  return (unsigned)(b < (1 << 20) ? b : (1 << 20));
}

int minmax_blocks(int64_t numel) {
  int64_t b = (numel + kThreads * 8 - 1) / (kThreads * 8);
  return (int)(b < kMinMaxBlocks ? b : kMinMaxBlocks);
}

}  // namespace

void q8_params_static(const float* a_scale, const void* zp, bool zp_signed, Q8Params* out,
                      void* stream) {
  EMBER_LAUNCH(params_static, 1, 1, 0, static_cast<cudaStream_t>(stream))(a_scale, zp, zp_signed,
                                                                           out);
}

int64_t q8_minmax_partial_floats(int64_t numel) {
  int b = minmax_blocks(numel);
  return 2 * (b > 0 ? b : 1);
}

void q8_params_tensor_u8(const float* a, int64_t numel, float* partial, Q8Params* out,
                         void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  int blocks = minmax_blocks(numel);
  if (blocks > 0) EMBER_LAUNCH(minmax_partial, blocks, kThreads, 0, s)(a, numel, partial);
  EMBER_LAUNCH(params_tensor_u8, 1, kThreads, 0, s)(partial, blocks, out);
}

void q8_quantize_token(const float* a, int8_t* codes, float* row_scale, int64_t m, int64_t k,
                       int64_t k_pad, void* stream) {
  if (m == 0) return;
  EMBER_LAUNCH(quantize_token, (unsigned)m, kThreads, 0, static_cast<cudaStream_t>(stream))(
      a, codes, row_scale, k, k_pad);
}

void q8_pad_codes(const int8_t* src, int8_t* dst, int64_t m, int64_t k, int64_t k_pad,
                  void* stream) {
  if (m * k_pad == 0) return;
  EMBER_LAUNCH(pad_codes, grid_for(m * k_pad), kThreads, 0, static_cast<cudaStream_t>(stream))(
      src, dst, m, k, k_pad);
}

void q8_quantize_static(const float* a, int8_t* codes, const Q8Params* params, int64_t m,
                        int64_t k, int64_t k_pad, void* stream) {
  int64_t work = m * (k_pad / 4);
  if (work == 0) return;
  EMBER_LAUNCH(quantize_static, grid_for(work), kThreads, 0, static_cast<cudaStream_t>(stream))(
      a, codes, params, m, k, k_pad);
}

void q8_epilogue(const int32_t* acc, const Q8Epilogue& e, float* y, int64_t m, int64_t n,
                 int64_t n_pad, void* stream) {
  if (m * n == 0) return;
  EMBER_LAUNCH(epilogue, grid_for(m * n), kThreads, 0, static_cast<cudaStream_t>(stream))(
      acc, e, y, m, n, n_pad);
}

void q8_gemm_small(const int8_t* codes, const int8_t* w, const Q8Epilogue& e, float* y, int64_t m,
                   int64_t n, int64_t k_pad, void* stream) {
  if (m == 0 || n == 0) return;
  auto s = static_cast<cudaStream_t>(stream);
  constexpr int kCols = kThreads / 32;
  dim3 grid((unsigned)((n + kCols - 1) / kCols), 1);
  auto tiles = [&](int mr) {
    int64_t t = (m + mr - 1) / mr;
    return (unsigned)(t < 65535 ? t : 65535);
  };
  if (m == 1) {
    EMBER_LAUNCH(gemm_small<1>, grid, kThreads, 0, s)(codes, w, e, y, m, n, k_pad);
  } else if (m == 2) {
    EMBER_LAUNCH(gemm_small<2>, grid, kThreads, 0, s)(codes, w, e, y, m, n, k_pad);
  } else if (m <= 4) {
    EMBER_LAUNCH(gemm_small<4>, grid, kThreads, 0, s)(codes, w, e, y, m, n, k_pad);
  } else {
    grid.y = tiles(8);
    EMBER_LAUNCH(gemm_small<8>, grid, kThreads, 0, s)(codes, w, e, y, m, n, k_pad);
  }
}

}  // namespace ember::cuda
