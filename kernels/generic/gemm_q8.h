// INT8 weight GEMM / GEMV computed W8A16i (op Q8MatMul) and embedding rows (op Q8Gather), both
// on one packed layout (reference and exact float order in cpp/src/ops/ops_q8matmul.cpp):
//   codes  int8 [N, nb, 32], nb = ceil(K / 32): W[n, 32 b + j] at codes[n, b, j]; 0 past K
//   scales f32 [N, nb]      W[n, k] = codes[n, k] * scales[n, k / 32]
// GGUF Q8_0 rows repack exactly (f16 d -> f32). Activations are quantized per row and 32-block
// to int16 (q8_act_quantize16*). Generic kernels here (gemm_q8.cpp), AVX2 in
// kernels/x86/gemm_q8_avx2.cpp, AVX-512 + VNNI tiles in kernels/x86/gemm_q8_avx512.cpp, drivers
// registered in registry.cpp.
#pragma once
#include <cstdint>

#include "kernels/common/quant.h"
#include "kernels/generic/kernels_generic.h"

namespace ember::cpu {

// nb of the layout above.
inline int64_t q8_blocks(int64_t k) { return (k + 31) / 32; }

// ---- packing (at load) ----------------------------------------------------------------------
// Both write codes [N, q8_blocks(K), 32] and scales [N, q8_blocks(K)]; throw ember::Error
// (Model) on bad sizes (N < 0, K <= 0).

// From GGUF Q8_0 rows (K a multiple of 32): codes copied, scale = f16 d as f32 (exact).
void q8_pack_from_q8_0(const block_q8_0* w,  // [N, K / 32]
                       int64_t N, int64_t K,
                       int8_t* codes,        // [N, K / 32, 32]
                       float* scales);       // [N, K / 32]
// From float weights, round to nearest per 32-block as ggml's quantize_row_q8_0 (but the scale
// stays f32): d = amax / 127, q = d ? roundf(w / d) : 0 (half away from zero). Non-finite
// weights throw Model.
void q8_quantize(const float* w,             // [N, K]
                 int64_t N, int64_t K,
                 int8_t* codes,              // [N, nb, 32]
                 float* scales);             // [N, nb]

// ---- kernels ------------------------------------------------------------------------------
// Q8MatMul's activation quantizer: rows m < M of a, per 32-block b (zero-padded past K),
// d[m, b] = amax / 32767 (NaN when the block holds an inf or NaN) and q = d ? clamp(
// nearbyint(a / d), -32767, 32767) : 0 (0 in a non-finite block; rounding half to even).
// It is q4_act_quantize16 (gemm_q4.h) at group 32 without the group sums.
void q8_act_quantize16(const float* a,   // [M, K], row stride lda
                       int64_t lda, int64_t M, int64_t K,
                       int16_t* q,       // [M, nb * 32]
                       float* d);        // [M, nb]

// y[m, n] for m < rows, n < cols: Q8MatMul's sums (+ bias[n]; no activation) of quantized
// activation rows (q8_act_quantize16) and packed weight rows. Each element follows the
// reference's float sequence whatever rows and cols are (batch invariance).
void q8_gemm_tile(const int16_t* q,      // [rows, nb * 32]
                  const float* d,        // [rows, nb]
                  int64_t rows,
                  const int8_t* codes,   // [cols, nb, 32]
                  const float* scales,   // [cols, nb]
                  const float* bias,     // [cols] or nullptr
                  int64_t cols, int64_t K,
                  float* y,              // [rows, cols], row stride ldy
                  int64_t ldy);

// The ISA-specific pieces of the Q8MatMul driver.
struct Q8Kernels {
  void (*act_quantize)(const float* a, int64_t lda, int64_t M, int64_t K, int16_t* q, float* d);
  void (*gemm_tile)(const int16_t* q, const float* d, int64_t rows, const int8_t* codes,
                    const float* scales, const float* bias, int64_t cols, int64_t K, float* y,
                    int64_t ldy);
  GemmActs acts;
};
// Q8MatMul on these kernels: quantizes A's rows, then gemm_blocks tasks of (row block, column
// block) on the shared pool (threads split M and N, never K), the activation applied per task.
void q8matmul_with(const KernelCtx& ctx, const Q8Kernels& k);
void q8matmul(const KernelCtx& ctx);  // Isa::Generic

// Q8Gather (also its OpDef reference): out[i, k] = codes[idx_i, k] * scales[idx_i, k / 32]
// for k < K, indices int32 or int64, negative ones wrapping; others throw Input.
void q8gather(const KernelCtx& ctx);

#if defined(__x86_64__)
// AVX2 + FMA, bit-identical to q8_act_quantize16 and q8_gemm_tile (the quantizer forwards to
// q4_act_quantize16_avx2 in gemm_q8_x86.cpp; the tiles are in gemm_q8_avx2.cpp).
void q8_act_quantize16_avx2(const float* a, int64_t lda, int64_t M, int64_t K, int16_t* q,
                            float* d);
void q8_gemm_tile_avx2(const int16_t* q, const float* d, int64_t rows, const int8_t* codes,
                       const float* scales, const float* bias, int64_t cols, int64_t K, float* y,
                       int64_t ldy);
void q8matmul_avx2(const KernelCtx& ctx);  // Isa::Avx2 (gemm_q8_x86.cpp)
// AVX-512 + VNNI tiles (gemm_q8_avx512.cpp), bit-identical to the AVX2 and generic ones; the
// driver keeps the AVX2 quantizer, and the AVX2 tiles up to 4 rows (memory-bound: see there).
void q8_gemm_tile_avx512(const int16_t* q, const float* d, int64_t rows, const int8_t* codes,
                         const float* scales, const float* bias, int64_t cols, int64_t K,
                         float* y, int64_t ldy);
void q8matmul_avx512(const KernelCtx& ctx);  // Isa::Avx512 (gemm_q8_x86.cpp)
#endif

}  // namespace ember::cpu
