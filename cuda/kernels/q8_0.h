// GGUF Q8_0 weights on CUDA (q8_0.cu): Q8MatMul (W8A16i, reference ref_q8matmul in
// cpp/src/ops/ops_q8matmul.cpp) and Q8Gather (embedding rows, reference cpu::q8gather). Both
// follow the reference's exact float semantics, so their outputs equal the CPU's bit for bit
// (but for Q8MatMul's gelu activations, double maths on each side). Plain C++ for the adapter
// (cuda/src/ops_q8_0.cpp) and the emulated tests.
#pragma once
#include <cstdint>

namespace ember::cuda {

// y = act(A @ W^T + bias), W[n, k] = codes[n, k / 32, k % 32] * scales[n, k / 32]. `q` and `d`
// are scratch of m * nb * 32 int16 and m * nb floats (A quantized per 32-block to int16).
// act: 0 none, 1 relu, 2 gelu (erf), 3 gelu (tanh).
void q8_0_matmul(const float* a,       // [m, k]
                 const int8_t* codes,  // [n, nb, 32]
                 const float* scales,  // [n, nb]
                 const float* bias,    // [n] or null
                 float* y,             // [m, n]
                 int16_t* q,           // [m, nb, 32] scratch
                 float* d,             // [m, nb] scratch
                 int64_t m, int64_t n, int64_t k, int act, void* stream);

// out[i, :] = row idx_i of the table dequantized (negative indices wrap; the adapter checks
// the range on the host first, an index still out of range gives a zero row).
void q8_0_gather(const int8_t* codes,     // [rows, nb, 32]
                 const float* scales,     // [rows, nb]
                 const void* indices,     // [count] int32 or int64
                 bool idx64, float* out,  // [count, k]
                 int64_t rows, int64_t count, int64_t k, void* stream);

}  // namespace ember::cuda
