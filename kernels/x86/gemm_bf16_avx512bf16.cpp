// bf16 GEMM micro-kernel, AVX512_BF16: up to 8 rows x 32 columns (16 zmm accumulators, two W
// panels, A pairs broadcast from memory), the BgemmMicro contract of
// kernels/generic/gemm_bf16.h (driver: gemm_bf16.cpp; reference: FusedMatMul in
// cpp/src/ops/ops_fused.cpp, and the generic micro-kernel emulates this chain bit for bit).
// One instantiation per row count and panel count, so every C element is the same vdpbf16ps
// chain over k whatever M: results do not depend on the batch. Column tails use masks.
// Raw pointers and intrinsics only (see CMakeLists.txt).
// NOTE: g++ 12 warns that the AVX-512 headers' own _mm512_undefined_* operands "may be used
// uninitialized" once inlined here (GCC PR 105593): a false positive, silenced for this file.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include <cstdint>

namespace ember::cpu {
namespace {

template <int R, bool Two>
inline void micro(int64_t kp, const uint32_t* a, int64_t lda, const uint32_t* b, int64_t pstride,
                  float* c, int64_t ldc, int cols, bool accumulate) {
  const __mmask16 m0 = cols >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << cols) - 1);
  const __mmask16 m1 = !Two ? (__mmask16)0 : cols >= 32 ? (__mmask16)0xffff
                                                     : (__mmask16)((1u << (cols - 16)) - 1);
  __m512 acc0[R], acc1[R];
#pragma GCC unroll 16
  for (int i = 0; i < R; i++) {
    acc0[i] = accumulate ? _mm512_maskz_loadu_ps(m0, c + i * ldc) : _mm512_setzero_ps();
    if (Two)
      acc1[i] = accumulate ? _mm512_maskz_loadu_ps(m1, c + i * ldc + 16) : _mm512_setzero_ps();
  }
  const uint32_t* b1 = b + pstride;
  for (int64_t q = 0; q < kp; q++) {
    __m512bh w0 = (__m512bh)_mm512_loadu_si512(b + q * 16);
    __m512bh w1 = Two ? (__m512bh)_mm512_loadu_si512(b1 + q * 16) : w0;
#pragma GCC unroll 16
    for (int i = 0; i < R; i++) {
      __m512bh ai = (__m512bh)_mm512_set1_epi32((int)a[i * lda + q]);
      acc0[i] = _mm512_dpbf16_ps(acc0[i], w0, ai);
      if (Two) acc1[i] = _mm512_dpbf16_ps(acc1[i], w1, ai);
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < R; i++) {
    _mm512_mask_storeu_ps(c + i * ldc, m0, acc0[i]);
    if (Two) _mm512_mask_storeu_ps(c + i * ldc + 16, m1, acc1[i]);
  }
}

template <bool Two>
void micro_rows(int64_t kp, const uint32_t* a, int64_t lda, const uint32_t* b, int64_t pstride,
                float* c, int64_t ldc, int rows, int cols, bool accumulate) {
  switch (rows) {
    case 1: return micro<1, Two>(kp, a, lda, b, pstride, c, ldc, cols, accumulate);
    case 2: return micro<2, Two>(kp, a, lda, b, pstride, c, ldc, cols, accumulate);
    case 3: return micro<3, Two>(kp, a, lda, b, pstride, c, ldc, cols, accumulate);
    case 4: return micro<4, Two>(kp, a, lda, b, pstride, c, ldc, cols, accumulate);
    case 5: return micro<5, Two>(kp, a, lda, b, pstride, c, ldc, cols, accumulate);
    case 6: return micro<6, Two>(kp, a, lda, b, pstride, c, ldc, cols, accumulate);
    case 7: return micro<7, Two>(kp, a, lda, b, pstride, c, ldc, cols, accumulate);
    default: return micro<8, Two>(kp, a, lda, b, pstride, c, ldc, cols, accumulate);
  }
}

}  // namespace

void bgemm_micro_8x32_avx512bf16(int64_t kp, const uint32_t* a, int64_t lda, const uint32_t* b,
                                 int64_t pstride, float* c, int64_t ldc, int rows, int cols,
                                 bool accumulate) {
  if (cols > 16) return micro_rows<true>(kp, a, lda, b, pstride, c, ldc, rows, cols, accumulate);
  micro_rows<false>(kp, a, lda, b, pstride, c, ldc, rows, cols, accumulate);
}

void bf16_round_avx512bf16(const float* x, uint16_t* y, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm256_storeu_si256((__m256i*)(y + i), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(x + i)));
  if (i < n) {
    const __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
    __m256i v = (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, x + i));
    _mm256_mask_storeu_epi16(y + i, m, v);
  }
}

void bf16_round_pairs_avx512bf16(const float* x0, const float* x1, int64_t n, uint32_t* out,
                                 int64_t pstride) {
  for (int64_t i = 0, p = 0; i < n; i += 16, p++) {
    const __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
    __m256i b0 = (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, x0 + i));
    __m256i b1 = (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, x1 + i));
    __m512i lo = _mm512_cvtepu16_epi32(b0), hi = _mm512_cvtepu16_epi32(b1);
    _mm512_storeu_si512(out + p * pstride, _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
  }
}

}  // namespace ember::cpu
