// Q8MatMul on the AVX2 kernels (gemm_q8_avx2.cpp): the generic driver (kernels/generic/gemm_q8.cpp)
// with the AVX2 int16 activation quantizer, tiles and activation rows.
// Registered at Isa::Avx2. The AVX-512 driver swaps in the VNNI tiles (gemm_q8_avx512.cpp) for
// more than 4 rows; registered at Isa::Avx512.
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

namespace {

// The VNNI tiles for more than 4 rows (bound by the vector units); up to 4 (decode's GEMV: the
// LM head streams from memory) the AVX2 ones, which read a 32 MB table ~1.5x faster on Zen 5
// (measured; the VNNI tiles win only from cache). Both give the same bits.
void q8_gemm_tile_avx512_rows(const int16_t* q, const float* d, int64_t rows, const int8_t* codes,
                              const float* scales, const float* bias, int64_t cols, int64_t K,
                              float* y, int64_t ldy) {
  if (rows <= 4) q8_gemm_tile_avx2(q, d, rows, codes, scales, bias, cols, K, y, ldy);
  else q8_gemm_tile_avx512(q, d, rows, codes, scales, bias, cols, K, y, ldy);
}

}  // namespace

void q8matmul_avx512(const KernelCtx& ctx) {
  static const Q8Kernels k{q8_act_quantize16_avx2, q8_gemm_tile_avx512_rows,
                           {relu_f32_array, gelu_erf_f32_array_avx2, gelu_tanh_f32_array_avx2}};
  q8matmul_with(ctx, k);
}

}  // namespace ember::cpu
