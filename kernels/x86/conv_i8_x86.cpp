// QConv on the AVX2 int8 GEMM and row quantizer, or on the AVX-512 VNNI GEMM with the same
// quantizer (kernels/generic/conv_i8.cpp drives them).
#include "kernels/generic/conv_i8.h"
#include "kernels/x86/kernels_x86.h"

namespace ember::cpu {

void qconv_i8_avx2(const KernelCtx& ctx) {
  static const GemmActs acts{relu_f32_array, gelu_erf_f32_array_avx2, gelu_tanh_f32_array_avx2};
  qconv_i8_with(ctx, qgemm_i8_micro_avx2(), quantize_rows_i8_avx2(), acts);
}

void qconv_i8_avx512(const KernelCtx& ctx) {
  static const GemmActs acts{relu_f32_array, gelu_erf_f32_array_avx512, gelu_tanh_f32_array_avx2};
  qconv_i8_with_gemm(ctx, qgemm_i8_vnni, quantize_rows_i8_avx2(), acts,
                     transpose_f32_16x16_avx512);
}

}  // namespace ember::cpu
