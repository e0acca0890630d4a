// INT8 W8A8 GEMM for QMatMul (reference and op contract: cpp/src/ops/ops_qmatmul.cpp): weights
// packed once at load, activations quantized per row on the fly to int16 codes, exact int32
// sums, one float epilogue. Generic kernels in kernels/generic/gemm_i8.cpp; the AVX2 ones in
// kernels/x86/gemm_i8_avx2.cpp, the AVX-512 VNNI ones in gemm_i8_avx512.cpp (drivers
// gemm_i8_x86.cpp). Registered in runtime/registry.cpp.
#pragma once
#include <cstdint>

#include "ember/op.h"
#include "kernels/generic/kernels_generic.h"
#if defined(__x86_64__)
#include "kernels/x86/gemm_i8_vnni.h"
#endif

namespace ember::cpu {

// ---- weight packing (called by the graph pass at load) ----
// Wq[K, N] int8 (already minus its zero point) packed in 16-column panels of k pairs:
// Wp[p, kk, j, t] = Wq[2 kk + t, 16 p + j], shape [ceil(N / 16), ceil(K / 2), 16, 2], zero
// past K and past N. One panel row (kk) is 32 bytes: the two k of each of 16 columns.
int64_t qgemm_i8_packed_size(int64_t K, int64_t N);  // bytes of Wp
// Wq[k, n] = w[k * rs + n * cs]; out receives qgemm_i8_packed_size(K, N) bytes.
void qgemm_i8_pack_b(const int8_t* w, int64_t rs, int64_t cs, int64_t K, int64_t N, int8_t* out);

// ---- GEMM on quantized rows ----
// C[m, n] = act(((float)acc[m, n] * a_scale[m]) * w_scale[n] (+ bias[n])), acc the exact int32
// sum over k of a[m, k] * Wq[k, n]. Threads split M and N, never K, and the epilogue is the same
// per element whatever the block, so a row's bits never depend on M or the thread count.
// Preconditions: K <= 65536 and |a| <= 255 (no int32 overflow in any order).
struct QGemmI8Args {
  int64_t M = 0, N = 0, K = 0;
  const int16_t* a = nullptr;        // [M, lda] codes; lda even >= K rounded up to even, a[m, K] = 0 when K is odd
  int64_t lda = 0;
  const int8_t* b_packed = nullptr;  // [ceil(N / 16), ceil(K / 2), 16, 2] (qgemm_i8_pack_b)
  const float* a_scale = nullptr;    // [M]
  const float* w_scale = nullptr;    // [N]
  const float* bias = nullptr;       // [N] or nullptr
  float* c = nullptr;                // C[m, n] = c[m * ldc + n]
  int64_t ldc = 0;
  // Applied in place to each finished row segment after the epilogue (x == y).
  void (*act)(const float* x, float* y, int64_t n) = nullptr;
  // a + a_off lies in [0, 255] (u8 kernels, VNNI): 128 for token codes, the zero point (+ 128
  // when it is int8) for the linear modes.
  int32_t a_off = 0;
  // qgemm_i8_vnni only: when set, a is unused and u holds the u8 codes a + a_off, rows ldu
  // bytes apart (ldu a multiple of 4 >= K rounded up to 4, zero from K to that).
  const uint8_t* u = nullptr;
  int64_t ldu = 0;
};
// One ISA's GEMM pieces.
// fn: c[rows, 16] (+)= a[rows, 2 kp] @ one panel's rows kk = 0..kp-1 (b: 32 bytes per kk);
// a rows lda int16 apart starting at an even k, c int32 rows ldc apart; rows <= mr;
// accumulate: add to c. Exact integer sums, so any order gives the same result.
// epilogue: one row segment, y[j] = ((float)acc[j] * a_scale) * w_scale[j] (+ bias[j]), two
// separate roundings then the add (never fused into an FMA); bias may be nullptr.
struct QGemmI8Micro {
  int mr;  // rows per strip, <= 8; always 16 columns
  void (*fn)(int64_t kp, const int16_t* a, int64_t lda, const int8_t* b, int32_t* c, int64_t ldc,
             int rows, bool accumulate);
  void (*epilogue)(const int32_t* acc, int64_t n, float a_scale, const float* w_scale,
                   const float* bias, float* y);
  const char* name;
};
const QGemmI8Micro& qgemm_i8_micro_generic();
void qgemm_i8(const QGemmI8Args& args, int max_threads, const QGemmI8Micro& micro);

// ---- activation quantization, one row x[0:k] -> int16 codes q[0:k] (+ q[k] = 0 if k is odd) ----
// Rounding is half to even on the quotient x / s (a division, never a reciprocal multiply);
// clamps send NaN to the low bound. Every ISA gives the same codes.
// token: s = max(max_k |x[k]| / 127, FLT_MIN) (NaN ignored), q = clamp(round(x / s), -127, 127);
// returns s.
float quantize_row_i8_token(const float* x, int64_t k, int16_t* q);
// linear (ONNX QuantizeLinear, zero point removed): q = clamp(round(x / s) + zp, qmin, qmax) - zp.
void quantize_row_i8_linear(const float* x, int64_t k, float s, int32_t zp, int32_t qmin,
                            int32_t qmax, int16_t* q);
// lo = min(lo, min x), hi = max(hi, max x) over x[0:n], NaN ignored (DynamicQuantizeLinear's range).
void minmax_f32_row(const float* x, int64_t n, float* lo, float* hi);
struct QuantizeRowsI8 {
  float (*token)(const float* x, int64_t k, int16_t* q);
  void (*linear)(const float* x, int64_t k, float s, int32_t zp, int32_t qmin, int32_t qmax,
                 int16_t* q);
  void (*minmax)(const float* x, int64_t n, float* lo, float* hi);
};

// ---- the QMatMul kernel ----
// QMatMul's GEMM arguments from its node and inputs: all but the codes (a, lda, a_scale,
// a_off, u, ldu). M or N may be 0 (nothing to do).
QGemmI8Args qmatmul_i8_args(const KernelCtx& ctx, const GemmActs& acts);
// How QMatMul quantizes A's rows (attr a_mode): per token (codes -127..127, a_off 128), or
// linear with one scale and zero point (tensor_u8's from minmax over all of A).
struct QMatMulAQuant {
  bool token = true;
  float scale = 1.0f;
  int32_t zp = 0, qmin = 0, qmax = 255;
  int32_t a_off = 128;  // codes + a_off lie in [0, 255]
};
QMatMulAQuant qmatmul_i8_a_quant(const KernelCtx& ctx,
                                 void (*minmax)(const float*, int64_t, float*, float*));
// Quantizes A (attr a_mode) into a per-thread int16 buffer [M, K rounded up to even], then
// qgemm_i8. The registered generic kernel runs qmatmul_i8_with on the generic pieces.
void qmatmul_i8_with(const KernelCtx& ctx, const QGemmI8Micro& micro, const QuantizeRowsI8& quant,
                     const GemmActs& acts);
// The same with a whole GEMM in qgemm_i8's place (the VNNI one).
using QGemmI8Fn = void (*)(const QGemmI8Args& args, int max_threads);
void qmatmul_i8_with_gemm(const KernelCtx& ctx, QGemmI8Fn gemm, const QuantizeRowsI8& quant,
                          const GemmActs& acts);
void qmatmul_i8(const KernelCtx& ctx);

#if defined(__x86_64__)
// AVX2 pieces (kernels/x86/gemm_i8_avx2.cpp), the contracts above; driver gemm_i8_x86.cpp.
void qgemm_i8_micro_6x16_avx2(int64_t kp, const int16_t* a, int64_t lda, const int8_t* b,
                              int32_t* c, int64_t ldc, int rows, bool accumulate);
void qgemm_i8_epilogue_avx2(const int32_t* acc, int64_t n, float a_scale, const float* w_scale,
                            const float* bias, float* y);  // [n] -> [n]
// QuantizeLinear's bytes: y[i] = clamp(round(x[i] / s) + zp, qmin, qmax) as u8 (qmin 0) or
// int8 (qmin -128), the generic kernel's values. [n] -> [n]
void quantize_row_q8_linear_avx2(const float* x, int64_t n, float s, int32_t zp, int32_t qmin,
                                 int32_t qmax, uint8_t* y);
void quantize_linear_f32_avx2(const KernelCtx& ctx);  // QuantizeLinear on the row above
float quantize_row_i8_token_avx2(const float* x, int64_t k, int16_t* q);
void quantize_row_i8_linear_avx2(const float* x, int64_t k, float s, int32_t zp, int32_t qmin,
                                 int32_t qmax, int16_t* q);
void minmax_f32_row_avx2(const float* x, int64_t n, float* lo, float* hi);
const QGemmI8Micro& qgemm_i8_micro_avx2();
const QuantizeRowsI8& quantize_rows_i8_avx2();
void qmatmul_i8_avx2(const KernelCtx& ctx);

// AVX-512 VNNI pieces (kernels/x86/gemm_i8_avx512.cpp), driver qgemm_i8_vnni (gemm_i8_x86.cpp).
// vpdpbusd takes u8 x s8: A's codes become u8 (a + a_off) and the epilogue subtracts
// comp[n] = a_off * sum_k Wq[k, n]; all int32 arithmetic wraps mod 2^32, the result fits, so
// the sums equal the int16 kernels' exactly.
// The epilogue struct QGemmU8Epilogue: kernels/x86/gemm_i8_vnni.h.
// acc[rows, 16 panels] = (c if accumulate, else 0) + u[rows, 2 kp] @ `panels` (<= 3) panels of
// kp pair rows, panel p at b + p * bs bytes; u rows lda bytes apart (4-byte aligned k offsets,
// readable up to 2 kp rounded up to 4); rows <= 8. epi == nullptr: acc goes to c (int32 rows
// ldc apart); else through *epi (c is only read, when accumulate).
void qgemm_u8i8_micro_8x48_avx512(int64_t kp, const uint8_t* u, int64_t lda, const int8_t* b,
                                  int64_t bs, int panels, int32_t* c, int64_t ldc, int rows,
                                  bool accumulate, const QGemmU8Epilogue* epi);
// s[0:16] = off * sum over kh pair rows of one panel b [kh, 16, 2], mod 2^32.
void qgemm_i8_comp_avx512(const int8_t* b, int64_t kh, int32_t off, int32_t* s);
// u[0:k] = q[0:k] + off as u8, u[k:k rounded up to 4] = 0; q + off must lie in [0, 255].
void qgemm_i8_codes_u8_avx512(const int16_t* q, int64_t k, int32_t off, uint8_t* u);
// The row quantizers' codes (quantize_row_i8_token / _linear) + their a_off (128, or the zero
// point + 128 for int8) as u8 in one pass, zero from k to k rounded up to 4.
float quantize_row_u8_token_avx512(const float* x, int64_t k, uint8_t* u);  // returns s
void quantize_row_u8_linear_avx512(const float* x, int64_t k, float s, int32_t zp, int32_t qmin,
                                   int32_t qmax, uint8_t* u);
// dst[j * ldd + i] = src[i * lds + j] for i, j < 16 (QConv's output transpose). [16, lds] ->
// [16, ldd]
void transpose_f32_16x16_avx512(const float* src, int64_t lds, float* dst, int64_t ldd);
// qgemm_i8's contract, and every code a with a + a_off in [0, 255] (as QMatMul's modes give).
void qgemm_i8_vnni(const QGemmI8Args& args, int max_threads);
void qmatmul_i8_avx512(const KernelCtx& ctx);
#endif

}  // namespace ember::cpu
