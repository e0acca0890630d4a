// QConv on the AVX2 int8 GEMM and row quantizer (kernels/generic/conv_i8.cpp drives them).
#include "kernels/generic/conv_i8.h"
#include "kernels/x86/kernels_x86.h"

namespace ember::cpu {

void qconv_i8_avx2(const KernelCtx& ctx) {
  static const GemmActs acts{relu_f32_array, gelu_erf_f32_array_avx2, gelu_tanh_f32_array_avx2};
  qconv_i8_with(ctx, qgemm_i8_micro_avx2(), quantize_rows_i8_avx2(), acts);
}

}  // namespace ember::cpu
