// Launchers of gemm_epilogue.cu: what Gemm needs beside cuBLASLt. Plain C++ (no CUDA headers).
#pragma once
#include <cstdint>

namespace ember::cuda {

// d[r, j] = scale * c[r * c_rs + j * c_cs], or 0 everywhere when c is null: Gemm's C broadcast
// into the output before cuBLASLt adds alpha * A @ B to it, and the whole result when K == 0.
void gemm_fill_c(const float* c,  // broadcast to [rows, cols] by (c_rs, c_cs); may be null
                 float* d,        // [rows, cols]
                 int64_t rows, int64_t cols, int64_t c_rs, int64_t c_cs, float scale,
                 void* stream);

// y[i] = x[i] rounded to nearest even fp16 (bf16 when `bf16`), i < n: the 16-bit A and B of a
// cuBLASLt call at fp16 / bf16 precision (cublaslt.h, lt_input_type).
void gemm_round_16(const float* x, void* y, int64_t n, bool bf16, void* stream);

}  // namespace ember::cuda
