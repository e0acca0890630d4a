// AArch64 f32 GEMM drivers: the generic blocking and packing (kernels/generic/gemm_f32.cpp) on
// the NEON micro-kernels. Registered as MatMul/Gemm/FusedMatMul kernels at Isa::Neon.
#include "kernels/arm/kernels_arm.h"
#include "kernels/generic/kernels_generic.h"
#include "kernels/generic/winograd_f32.h"

namespace ember::cpu {

const GemmMicro& gemm_micro_neon() {
  static const GemmMicro m{6, 16, sgemm_micro_6x16_neon, "neon 6x16", sgemm_row_1x64_neon};
  return m;
}

void winograd_conv_f32_neon(const KernelCtx& ctx) {
  winograd_conv_f32_with(ctx, gemm_micro_neon(), winograd_tiles_generic());
}
void matmul_f32_neon(const KernelCtx& ctx) { matmul_f32_with(ctx, gemm_micro_neon()); }
void gemm_f32_neon(const KernelCtx& ctx) { gemm_f32_with(ctx, gemm_micro_neon()); }
void fused_matmul_f32_neon(const KernelCtx& ctx) {
  // TODO: NEON gelu rows; the generic ones are auto-vectorised for the baseline.
  static const GemmActs acts{relu_f32_array, gelu_f32_array, gelu_tanh_f32_array};
  fused_matmul_f32_with(ctx, gemm_micro_neon(), acts);
}

}  // namespace ember::cpu
