// AArch64 QMatMul driver: the generic quantize-then-GEMM flow (kernels/generic/gemm_i8.cpp) on
// the NEON micro-kernels and epilogue; the row quantizers are the generic ones (same codes on
// every ISA). Per-token codes fit int8, so that mode runs sdot where HWCAP says the CPU has
// it; the linear modes' codes need int16 (smlal). Registered at Isa::Neon.
#include <sys/auxv.h>

#include <string>

#include "kernels/arm/kernels_arm.h"
#include "kernels/generic/gemm_i8.h"

#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif

namespace ember::cpu {

bool arm_has_dotprod() {
  static const bool has = (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
  return has;
}

const QGemmI8Micro& qgemm_i8_micro_neon() {
  static const QGemmI8Micro m{6, qgemm_i8_micro_6x16_neon, qgemm_i8_epilogue_neon, "neon 6x16"};
  return m;
}

const QGemmI8Micro& qgemm_i8_micro_dotprod() {
  static const QGemmI8Micro m{6, qgemm_i8_micro_6x16_dotprod, qgemm_i8_epilogue_neon,
                              "neon dotprod 6x16"};
  return m;
}

void qmatmul_i8_neon(const KernelCtx& ctx) {
  static const QuantizeRowsI8 quant{quantize_row_i8_token, quantize_row_i8_linear, minmax_f32_row};
  static const GemmActs acts{relu_f32_array, gelu_f32_array, gelu_tanh_f32_array};
  bool token = ctx.node.attrs.get_string("a_mode", "token") == "token";
  const QGemmI8Micro& micro =
      token && arm_has_dotprod() ? qgemm_i8_micro_dotprod() : qgemm_i8_micro_neon();
  qmatmul_i8_with(ctx, micro, quant, acts);
}

}  // namespace ember::cpu
