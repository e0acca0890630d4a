// x86 QMatMul driver: the generic quantize-then-GEMM flow (kernels/generic/gemm_i8.cpp) on
// the AVX2 micro-kernel, epilogue, row quantizers and activations. Registered at Isa::Avx2.
#include "kernels/generic/gemm_i8.h"
#include "kernels/x86/kernels_x86.h"

namespace ember::cpu {

const QGemmI8Micro& qgemm_i8_micro_avx2() {
  static const QGemmI8Micro m{6, qgemm_i8_micro_6x16_avx2, qgemm_i8_epilogue_avx2, "avx2 6x16"};
  return m;
}

const QuantizeRowsI8& quantize_rows_i8_avx2() {
  static const QuantizeRowsI8 q{quantize_row_i8_token_avx2, quantize_row_i8_linear_avx2,
                                minmax_f32_row_avx2};
  return q;
}

void qmatmul_i8_avx2(const KernelCtx& ctx) {
  static const GemmActs acts{relu_f32_array, gelu_erf_f32_array_avx2, gelu_tanh_f32_array_avx2};
  qmatmul_i8_with(ctx, qgemm_i8_micro_avx2(), quantize_rows_i8_avx2(), acts);
}

}  // namespace ember::cpu
