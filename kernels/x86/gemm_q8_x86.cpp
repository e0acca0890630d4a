// Q8MatMul on the AVX2 kernels (gemm_q8_avx2.cpp): the generic driver (kernels/generic/gemm_q8.cpp)
// with the AVX2 int16 activation quantizer, tiles and activation rows.
// Registered at Isa::Avx2. The AVX-512 driver swaps in the VNNI tiles (gemm_q8_avx512.cpp);
// registered at Isa::Avx512.
#include "kernels/generic/gemm_q4.h"
#include "kernels/generic/gemm_q8.h"
#include "kernels/x86/kernels_x86.h"

namespace ember::cpu {

// Q4MatMul's int16 quantizer (gemm_q4_avx2.cpp): one quantizer for both ops, no group sums.
void q8_act_quantize16_avx2(const float* a, int64_t lda, int64_t M, int64_t K, int16_t* q,
                            float* d) {
  q4_act_quantize16_avx2(a, lda, M, K, 32, q, d, nullptr);
}

void q8matmul_avx2(const KernelCtx& ctx) {
  static const Q8Kernels k{q8_act_quantize16_avx2, q8_gemm_tile_avx2,
                           {relu_f32_array, gelu_erf_f32_array_avx2, gelu_tanh_f32_array_avx2}};
  q8matmul_with(ctx, k);
}

void q8matmul_avx512(const KernelCtx& ctx) {
  static const Q8Kernels k{q8_act_quantize16_avx2, q8_gemm_tile_avx512,
                           {relu_f32_array, gelu_erf_f32_array_avx2, gelu_tanh_f32_array_avx2}};
  q8matmul_with(ctx, k);
}

}  // namespace ember::cpu
