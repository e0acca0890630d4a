// x86 bf16 kernels (precision="bf16" on CPUs with AVX512_BF16): the raw-pointer functions of
// gemm_bf16_avx512bf16.cpp and the baseline-compiled drivers in gemm_bf16_x86.cpp, registered
// at Isa::Avx512Bf16 in cpp/src/runtime/registry.cpp. Driver and contract:
// kernels/generic/gemm_bf16.h.
#pragma once
#include <cstdint>

#include "ember/op.h"

namespace ember::cpu {

// The BgemmMicro contract: c[rows, cols] (+)= A pairs [rows, kp] @ W pairs [kp, cols], rows <= 8,
// cols <= 32 (a second panel at b + pstride when cols > 16).
void bgemm_micro_8x32_avx512bf16(int64_t kp, const uint32_t* a, int64_t lda, const uint32_t* b,
                                 int64_t pstride, float* c, int64_t ldc, int rows, int cols,
                                 bool accumulate);
// y[i] = bf16(x[i]) for i < n, nearest even (vcvtneps2bf16: subnormal inputs become zero).
void bf16_round_avx512bf16(const float* x, uint16_t* y, int64_t n);  // [n] -> [n]
// BgemmMicro::round_pairs: x0, x1 [n] -> pair lines out[p * pstride + 0..15], zero past n.
void bf16_round_pairs_avx512bf16(const float* x0, const float* x1, int64_t n, uint32_t* out,
                                 int64_t pstride);

// The fp32 rows the drivers use (erf-Gelu, score rows) are AVX-512 ones: kernels_x86.h.

// Drivers (gemm_bf16_x86.cpp).
struct BgemmMicro;
const BgemmMicro& bgemm_micro_avx512bf16();
void fused_matmul_bf16_avx512bf16(const KernelCtx& ctx);
void attention_bf16_avx512bf16(const KernelCtx& ctx);  // AVX-512 score rows
void conv_bf16_avx512bf16(const KernelCtx& ctx);

}  // namespace ember::cpu
