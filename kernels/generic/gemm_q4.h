// INT4 weight-only GEMM / GEMV computed W4A16i (op Q4MatMul, reference and exact float order in
// cpp/src/ops/ops_q4matmul.cpp). Packed weights, one layout for every source format:
//   codes   uint8 [N, nb, 16], nb = ceil(K / 32): byte j of block b of row n holds the code of
//           W[n, 32 b + j] in its low nibble and of W[n, 32 b + j + 16] in its high (GGUF's
//           order); codes past K are 0
//   scales  f32 or f16 (uint16_t bits) [N, ng], ng = ceil(K / group), group a positive
//           multiple of 32
//   offsets the dtype of scales [N, ng]
//           W[n, k] = code[n, k] * scales[n, k / group] + offsets[n, k / group]
// f16 scales and offsets (GGUF's own d and m: 20 bytes per block, not 24) give the same bits as
// their f32 values: f16 -> f32 is exact. The pack functions write f32.
// Rows run one of two paths (Q4MatMul's input f32_rows picks, per row): W4A16i, activations
// quantized to int16 per row and 32-block on the fly (q4_act_quantize16*, q4_gemm_tile*; the
// GEMV's path), or f32: the weights dequantized into the f32 GEMM's 16-wide B panels
// (q4_dequant_panels*) and multiplied by the ISA's sgemm micro-kernel (prefill's path: ~1.7x the
// W4A16i GEMM's MACs per second on AVX2 without VNNI).
// Generic kernels here (gemm_q4.cpp), AVX2 in kernels/x86/gemm_q4_avx2.cpp, AVX-512 + VNNI tiles in
// kernels/x86/gemm_q4_avx512.cpp, drivers registered in registry.cpp.
#pragma once
#include <cstdint>

#include "kernels/common/quant.h"
#include "kernels/generic/kernels_generic.h"

namespace ember::cpu {

// nb and ng of the layout above.
inline int64_t q4_blocks(int64_t k) { return (k + 31) / 32; }
inline int64_t q4_groups(int64_t k, int64_t group) { return (k + group - 1) / group; }

// ---- packing (at load) ----------------------------------------------------------------------
// Every pack writes codes [N, q4_blocks(K), 16], scales and offsets [N, q4_groups(K, group)];
// throws ember::Error (Model) on bad sizes (N < 0, K <= 0, group not a positive multiple of 32).

// From the Q4G layout of kernels/common/quant.h (MatMulNBits); offset = -zp * scale.
void q4_pack_from_q4g(const uint8_t* q,       // [N, q4g_row_bytes(K, group)]
                      const float* scales,    // [N, q4g_groups(K, group)]
                      const uint8_t* zp,      // [N, q4g_zp_row_bytes(K, group)] or null (8)
                      int64_t N, int64_t K, int64_t group,
                      uint8_t* codes,         // [N, nb, 16]
                      float* scales_out,      // [N, ng]
                      float* offsets_out);    // [N, ng]
// From GGUF rows (group 32, K a multiple of 32): Q4_0 scale d, offset -8 d; Q4_1 scale d,
// offset m. Both reconstruct their blocks exactly.
void q4_pack_from_q4_0(const block_q4_0* w,   // [N, K / 32]
                       int64_t N, int64_t K,
                       uint8_t* codes,        // [N, nb, 16]
                       float* scales,         // [N, K / 32]
                       float* offsets);       // [N, K / 32]
void q4_pack_from_q4_1(const block_q4_1* w,   // [N, K / 32]
                       int64_t N, int64_t K,
                       uint8_t* codes,        // [N, nb, 16]
                       float* scales,         // [N, K / 32]
                       float* offsets);       // [N, K / 32]
// From float weights, rounding to nearest per group exactly as q4g_quantize does
// (with_zero_point: asymmetric with an integer zero point; else symmetric, zero point 8).
void q4_quantize(const float* w,              // [N, K]
                 int64_t N, int64_t K, int64_t group, bool with_zero_point,
                 uint8_t* codes,              // [N, nb, 16]
                 float* scales,               // [N, ng]
                 float* offsets);             // [N, ng]

// ---- kernels ------------------------------------------------------------------------------
// Activation quantization, per row m and 32-block b (zero past K): d = amax / 32767 (NaN when
// the block holds an inf or NaN), q = d ? clamp(nearbyint(a / d), -32767, 32767) : 0; per group,
// gsum = fma(d_b, isum_b, .) over its blocks in order from 0 (isum_b: the block's sum of q).
// The exact integer part of one 32-block against int16 activations, in the AVX2 kernels' lane
// order: lane l sums elements 2l, 2l + 1, 2l + 16 and 2l + 17 (madd_epi16 on each half, added).
// W: int16_t (unpacked int4 codes) or int8_t (Q8_0). Shared by the Q4 and Q8 generic kernels.
template <class W>
inline void block_lane_dots(const int16_t* qb,  // [32]
                            const W* wb,        // [32]
                            int32_t* out) {     // [8]
  for (int l = 0; l < 8; l++)
    out[l] = qb[2 * l] * wb[2 * l] + qb[2 * l + 1] * wb[2 * l + 1] +
             qb[2 * l + 16] * wb[2 * l + 16] + qb[2 * l + 17] * wb[2 * l + 17];
}

void q4_act_quantize16(const float* a,  // [M, K], row stride lda
                       int64_t lda, int64_t M, int64_t K, int64_t group,
                       int16_t* q,      // [M, nb * 32]
                       float* d,        // [M, nb]
                       float* gsum);    // [M, ng], or null when not wanted (Q8MatMul)
// y[m, n] for m < rows, n < cols: Q4MatMul's sums (+ bias[n]; no activation) of quantized
// activation rows and packed weight rows. Each element follows the reference's float sequence
// whatever rows and cols are (batch invariance). Overloaded on the scale/offset dtype: f32, or
// f16 bits (uint16_t), one templated body.
void q4_gemm_tile(const int16_t* q,       // [rows, nb * 32]   (q4_act_quantize16)
                  const float* d,         // [rows, nb]
                  const float* gsum,      // [rows, ng]
                  int64_t rows,
                  const uint8_t* codes,   // [cols, nb, 16]
                  const float* scales,    // [cols, ng]
                  const float* offsets,   // [cols, ng]
                  const float* bias,      // [cols] or nullptr
                  int64_t cols, int64_t K, int64_t group,
                  float* y,               // [rows, cols], row stride ldy
                  int64_t ldy);
void q4_gemm_tile(const int16_t* q,       // [rows, nb * 32]
                  const float* d,         // [rows, nb]
                  const float* gsum,      // [rows, ng]
                  int64_t rows,
                  const uint8_t* codes,   // [cols, nb, 16]
                  const uint16_t* scales,  // [cols, ng] f16
                  const uint16_t* offsets, // [cols, ng] f16
                  const float* bias,      // [cols] or nullptr
                  int64_t cols, int64_t K, int64_t group,
                  float* y,               // [rows, cols], row stride ldy
                  int64_t ldy);

// The f32 path's B: B[k, n] = W[n, k] = fma(code, scale, offset) (one rounding) for k in
// [k0, k0 + kc), n in [j0, j1), as ceil((j1 - j0) / 16) panels [kc, 16] at bp + p * kc * 16,
// columns past j1 zero (SgemmArgs::b_pack's contract; k0 + kc <= K). Overloaded on the
// scale/offset dtype.
void q4_dequant_panels(const uint8_t* codes, const float* scales, const float* offsets,
                       int64_t K, int64_t group, int64_t k0, int64_t kc, int64_t j0, int64_t j1,
                       float* bp);
void q4_dequant_panels(const uint8_t* codes, const uint16_t* scales, const uint16_t* offsets,
                       int64_t K, int64_t group, int64_t k0, int64_t kc, int64_t j0, int64_t j1,
                       float* bp);

// The ISA-specific pieces of the Q4MatMul driver.
struct Q4Kernels {
  template <class S>  // float, or uint16_t for f16 scales and offsets
  using TileFn = void (*)(const int16_t* q, const float* d, const float* gsum, int64_t rows,
                          const uint8_t* codes, const S* scales, const S* offsets,
                          const float* bias, int64_t cols, int64_t K, int64_t group, float* y,
                          int64_t ldy);
  void (*act_quantize)(const float* a, int64_t lda, int64_t M, int64_t K, int64_t group,
                       int16_t* q, float* d, float* gsum);
  TileFn<float> gemm_tile;
  TileFn<uint16_t> gemm_tile_f16;
  GemmActs acts;
  // The f32 path: B panels and the micro-kernel that multiplies them.
  template <class S>
  using DequantFn = void (*)(const uint8_t* codes, const S* scales, const S* offsets, int64_t K,
                             int64_t group, int64_t k0, int64_t kc, int64_t j0, int64_t j1,
                             float* bp);
  DequantFn<float> dequant;
  DequantFn<uint16_t> dequant_f16;
  const GemmMicro& (*micro)();
};
// Q4MatMul on these kernels. W4A16i rows: A's rows quantized, then tasks of (row block, column
// block) on the shared pool (threads split M and N, never K), the activation applied per task.
// f32 rows: sgemm with the dequantizing B callback. Mixed rows are gathered per path.
void q4matmul_with(const KernelCtx& ctx, const Q4Kernels& k);
void q4matmul(const KernelCtx& ctx);  // Isa::Generic

#if defined(__x86_64__)
// AVX2 + FMA + F16C versions (gemm_q4_avx2.cpp), bit-identical to the generic ones above.
void q4_act_quantize16_avx2(const float* a, int64_t lda, int64_t M, int64_t K, int64_t group,
                            int16_t* q, float* d, float* gsum);
void q4_gemm_tile_avx2(const int16_t* q, const float* d, const float* gsum, int64_t rows,
                       const uint8_t* codes, const float* scales, const float* offsets,
                       const float* bias, int64_t cols, int64_t K, int64_t group, float* y,
                       int64_t ldy);
void q4_gemm_tile_avx2(const int16_t* q, const float* d, const float* gsum, int64_t rows,
                       const uint8_t* codes, const uint16_t* scales, const uint16_t* offsets,
                       const float* bias, int64_t cols, int64_t K, int64_t group, float* y,
                       int64_t ldy);
void q4_dequant_panels_avx2(const uint8_t* codes, const float* scales, const float* offsets,
                            int64_t K, int64_t group, int64_t k0, int64_t kc, int64_t j0,
                            int64_t j1, float* bp);
void q4_dequant_panels_avx2(const uint8_t* codes, const uint16_t* scales,
                            const uint16_t* offsets, int64_t K, int64_t group, int64_t k0,
                            int64_t kc, int64_t j0, int64_t j1, float* bp);
void q4matmul_avx2(const KernelCtx& ctx);  // Isa::Avx2 (gemm_q4_x86.cpp)
// AVX-512 + VNNI tiles (gemm_q4_avx512.cpp), bit-identical to the AVX2 and generic ones; the
// driver keeps the AVX2 activation quantizer, panel dequantizer and micro-kernel (the W4A16i
// tiles are its cost).
void q4_gemm_tile_avx512(const int16_t* q, const float* d, const float* gsum, int64_t rows,
                         const uint8_t* codes, const float* scales, const float* offsets,
                         const float* bias, int64_t cols, int64_t K, int64_t group, float* y,
                         int64_t ldy);
void q4_gemm_tile_avx512(const int16_t* q, const float* d, const float* gsum, int64_t rows,
                         const uint8_t* codes, const uint16_t* scales, const uint16_t* offsets,
                         const float* bias, int64_t cols, int64_t K, int64_t group, float* y,
                         int64_t ldy);
void q4matmul_avx512(const KernelCtx& ctx);  // Isa::Avx512 (gemm_q4_x86.cpp)
#endif

}  // namespace ember::cpu
