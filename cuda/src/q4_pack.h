// Load-time repacking of Q4MatMul's constant inputs for the CUDA kernels (q4_gemm.cu): codes
// into k16 x n64 mma tiles, scales and offsets into per-lane f16 rows (layouts: q4_gemm.h).
// Plain C++ (no CUDA), tested on the host by cuda/tests/test_q4.cpp with its inverse.
// Offsets stay float offsets (W = code * scale + offset, as the op), rounded to f16 like the
// scales: the kernel computes W = fma(code, scale, offset) in T, one rounding.
#pragma once
#include <cstdint>
#include <vector>

#include "cuda/kernels/q4_gemm.h"
#include "ember/op.h"
#include "ember/tensor.h"

namespace ember::cuda {

// Q4MatMul codes u8 [n, ceil(k / 32), 16] -> int32 [Kp/16, Np/64, 32, 4] (zero nibbles past
// n and k).
Tensor q4_pack_codes(const uint8_t* codes, int64_t n, int64_t k);
// scales or offsets f32 | f16 [n, ceil(k / group)] -> f16 [ceil(Kp / group), Np/64, 8, 8].
Tensor q4_pack_params(const Tensor& params, int64_t n, int64_t k, int64_t group);

// Inverses (for tests): codes u8 [n, nb, 16] with zero nibbles past k; params as f16 bits
// [n, ceil(k / group)].
std::vector<uint8_t> q4_unpack_codes(const int32_t* packed, int64_t n, int64_t k);
std::vector<uint16_t> q4_unpack_params(const uint16_t* packed, int64_t n, int64_t k, int64_t group);

// The code of W[row, col] in Q4MatMul's layout [n, nb, 16].
inline int q4_code(const uint8_t* codes, int64_t nb, int64_t row, int64_t col) {
  const uint8_t byte = codes[(row * nb + col / 32) * 16 + col % 16];
  return col % 32 < 16 ? byte & 0x0f : byte >> 4;
}

// The DevicePrepareFn of q4matmul_cuda: inputs 1 (codes), 2 (scales), 3 (offsets) packed;
// A and bias stay as they are (an undefined Tensor).
Tensor q4_prepare(const Node& node, int input, const Tensor& host);

// Whether input `input` of a Q4MatMul node with these attributes already has the packed
// layout (dtype and shape).
bool q4_is_packed(const Tensor& t, int input, int64_t n, int64_t k, int64_t group);

}  // namespace ember::cuda
