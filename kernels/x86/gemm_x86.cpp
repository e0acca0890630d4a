// x86 GEMM drivers: the generic blocking and packing (kernels/generic/gemm_f32.cpp) on the
// AVX2 + FMA micro-kernel (registered at Isa::Avx2) and on the AVX-512 ones (Isa::Avx512) as
// MatMul/Gemm/Conv/WinogradConv/FusedConv/FusedMatMul/Attention kernels. Both give the same bits.
#include "kernels/generic/conv_f32.h"
#include "kernels/generic/conv_packed_f32.h"
#include "kernels/generic/winograd_f32.h"
#include "kernels/x86/kernels_x86.h"

namespace ember::cpu {

const GemmMicro& gemm_micro_avx2() {
  static const GemmMicro m{6, 16, sgemm_micro_6x16_avx2, "avx2 6x16", sgemm_row_1x64_avx2};
  return m;
}

void matmul_f32_avx2(const KernelCtx& ctx) { matmul_f32_with(ctx, gemm_micro_avx2()); }
void gemm_f32_avx2(const KernelCtx& ctx) { gemm_f32_with(ctx, gemm_micro_avx2()); }
void conv_f32_avx2(const KernelCtx& ctx) { conv_f32_with(ctx, gemm_micro_avx2()); }
void fused_conv_f32_avx2(const KernelCtx& ctx) { fused_conv_f32_with(ctx, gemm_micro_avx2()); }
void winograd_conv_f32_avx2(const KernelCtx& ctx) {
  static const WinogradTiles tiles{winograd_input_avx2, winograd_output_avx2};
  winograd_conv_f32_with(ctx, gemm_micro_avx2(), tiles);
}
void attention_f32_avx2(const KernelCtx& ctx) {
  attention_f32_with(ctx, gemm_micro_avx2(), attention_scores_row_avx2);
}
void fused_matmul_f32_avx2(const KernelCtx& ctx) {
  static const GemmActs acts{relu_f32_array, gelu_erf_f32_array_avx2, gelu_tanh_f32_array_avx2};
  fused_matmul_f32_with(ctx, gemm_micro_avx2(), acts);
}

const GemmMicro& gemm_micro_avx512() {
  static const GemmMicro m{12, 16, sgemm_micro_12x16_avx512, "avx512 12x16",
                           sgemm_row_1x64_avx512, sgemm_micro_12x32_avx512,
                           sgemm_taps_12x32_avx512};
  return m;
}

void matmul_f32_avx512(const KernelCtx& ctx) { matmul_f32_with(ctx, gemm_micro_avx512()); }
void gemm_f32_avx512(const KernelCtx& ctx) { gemm_f32_with(ctx, gemm_micro_avx512()); }
void conv_f32_avx512(const KernelCtx& ctx) { conv_f32_with(ctx, gemm_micro_avx512()); }
void fused_conv_f32_avx512(const KernelCtx& ctx) {
  fused_conv_f32_with(ctx, gemm_micro_avx512(), conv_tile_store_avx512);
}
void winograd_conv_f32_avx512(const KernelCtx& ctx) {
  static const WinogradTiles tiles{winograd_input_avx2, winograd_output_avx2};
  winograd_conv_f32_with(ctx, gemm_micro_avx512(), tiles);
}
void attention_f32_avx512(const KernelCtx& ctx) {
  attention_f32_with(ctx, gemm_micro_avx512(), attention_scores_row_avx512,
                     attention_scores_rows_avx512);
}
void fused_matmul_f32_avx512(const KernelCtx& ctx) {
  static const GemmActs acts{relu_f32_array, gelu_erf_f32_array_avx512,
                             gelu_tanh_f32_array_avx2};
  fused_matmul_f32_with(ctx, gemm_micro_avx512(), acts);
}

}  // namespace ember::cpu
