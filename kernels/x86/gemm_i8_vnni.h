// The AVX-512 VNNI micro-kernel's epilogue arguments: a plain struct in a header of its own, so
// gemm_i8_avx512.cpp (ISA flags: raw pointers and intrinsics only, see CMakeLists.txt) and the
// drivers share it without an ember header. Contract: kernels/generic/gemm_i8.h.
#pragma once
#include <cstdint>

namespace ember::cpu {

// The micro-kernel's float epilogue, for the call whose k slice is the last: row i, column
// j < cols of its panels becomes y[i * ldy + j] = ((float)(acc - comp[j]) * a_scale[i]) *
// w_scale[j] (+ bias[j]), the AVX2 epilogue's roundings. comp == nullptr: the kernel sums
// the panels' columns itself (one more accumulator row; the call must cover all of K) and
// comp[j] = a_off * that sum, mod 2^32.
struct QGemmU8Epilogue {
  const int32_t* comp = nullptr;  // [16 panels]
  int32_t a_off = 0;
  const float* a_scale = nullptr;  // [rows]
  const float* w_scale = nullptr;  // [cols]
  const float* bias = nullptr;     // [cols] or nullptr
  float* y = nullptr;
  int64_t ldy = 0;
  int64_t cols = 0;  // columns that exist from the first panel's first (the rest not stored)
};

}  // namespace ember::cpu
