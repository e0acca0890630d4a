// x86 bf16 GEMM drivers: the generic bf16 blocking (kernels/generic/gemm_bf16.cpp) on the
// AVX512_BF16 micro-kernel, with AVX-512 erf-Gelu and score rows (elementwise_avx512.cpp; the
// tanh-Gelu row is AVX2's). Registered at Isa::Avx512Bf16.
#include "kernels/x86/gemm_bf16_x86.h"

#include "kernels/generic/gemm_bf16.h"
#include "kernels/x86/kernels_x86.h"

namespace ember::cpu {

const BgemmMicro& bgemm_micro_avx512bf16() {
  static const BgemmMicro m{8, bgemm_micro_8x32_avx512bf16, bf16_round_avx512bf16,
                            bf16_round_pairs_avx512bf16, "avx512bf16 8x32"};
  return m;
}

void fused_matmul_bf16_avx512bf16(const KernelCtx& ctx) {
  static const GemmActs acts{relu_f32_array, gelu_erf_f32_array_avx512, gelu_tanh_f32_array_avx2};
  fused_matmul_bf16_with(ctx, bgemm_micro_avx512bf16(), acts);
}

void attention_bf16_avx512bf16(const KernelCtx& ctx) {
  attention_bf16_with(ctx, bgemm_micro_avx512bf16(), attention_scores_row_avx512);
}

void conv_bf16_avx512bf16(const KernelCtx& ctx) { conv_bf16_with(ctx, bgemm_micro_avx512bf16()); }

}  // namespace ember::cpu
