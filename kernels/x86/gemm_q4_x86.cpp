// Q4MatMul on the AVX2 kernels (gemm_q4_avx2.cpp): the generic driver (kernels/generic/gemm_q4.cpp)
// with the AVX2 activation quantizer, tiles, activation rows, B-panel dequantizer and sgemm
// micro-kernel. Registered at Isa::Avx2. The AVX-512 driver swaps in the VNNI tiles
// (gemm_q4_avx512.cpp), the AVX-512 sgemm micro-kernel for prompt rows and erf-Gelu rows (all
// with AVX2's bits) and keeps the rest. Registered at Isa::Avx512.
#include "kernels/generic/gemm_q4.h"
#include "kernels/x86/kernels_x86.h"

namespace ember::cpu {

void q4matmul_avx2(const KernelCtx& ctx) {
  static const Q4Kernels k{q4_act_quantize16_avx2,
                           q4_gemm_tile_avx2,
                           q4_gemm_tile_avx2,
                           {relu_f32_array, gelu_erf_f32_array_avx2, gelu_tanh_f32_array_avx2},
                           q4_dequant_panels_avx2,
                           q4_dequant_panels_avx2,
                           gemm_micro_avx2};
  q4matmul_with(ctx, k);
}

void q4matmul_avx512(const KernelCtx& ctx) {
  static const Q4Kernels k{q4_act_quantize16_avx2,
                           q4_gemm_tile_avx512,
                           q4_gemm_tile_avx512,
                           {relu_f32_array, gelu_erf_f32_array_avx512, gelu_tanh_f32_array_avx2},
                           q4_dequant_panels_avx2,
                           q4_dequant_panels_avx2,
                           gemm_micro_avx512};
  q4matmul_with(ctx, k);
}

}  // namespace ember::cpu
