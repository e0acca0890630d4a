// Gemm's C where cuBLASLt cannot take it as is: a C that only broadcasts to [M, N] (a column, a
// scalar, a row with beta != 1) is written into the output first, and cuBLASLt then computes
// D = alpha * A @ B + beta * D in place; with K == 0 this fill is the whole result.
// One thread per output element over a grid-stride loop (memory-bound, a few MB at most).
// Reference: ref_gemm in cpp/src/ops/ops_linalg.cpp.
#include <cuda_runtime.h>

#include <algorithm>

#include "cuda/kernels/gemm_epilogue.h"

namespace ember::cuda {
namespace {

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

}  // namespace

void gemm_fill_c(const float* c, float* d, int64_t rows, int64_t cols, int64_t c_rs, int64_t c_cs,
                 float scale, void* stream) {
  int64_t total = rows * cols;
  if (total <= 0) return;
  constexpr int kThreads = 256;
  // Enough blocks to fill any GPU; the grid-stride loop covers the rest.
  int64_t blocks = std::min<int64_t>((total + kThreads - 1) / kThreads, int64_t(1) << 16);
  gemm_fill_c_kernel<<<(unsigned)blocks, kThreads, 0, (cudaStream_t)stream>>>(c, d, rows, cols,
                                                                               c_rs, c_cs, scale);
}

}  // namespace ember::cuda
