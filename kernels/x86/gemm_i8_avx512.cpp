// INT8 W8A8 GEMM pieces, AVX-512 VNNI (contracts: kernels/generic/gemm_i8.h; driver:
// gemm_i8_x86.cpp; reference: cpp/src/ops/ops_qmatmul.cpp). vpdpbusd multiplies u8 by s8, so
// each row's codes become u8 codes a + off, and the epilogue subtracts off * sum_k Wq[k, n]
// (the sums wrap mod 2^32 but the true value fits int32, so the result is exact).
// Micro-kernel R x (16 NB), R <= 8, NB <= 3: per 4 k, one vpermw turns a panel's two 32-byte
// pair rows into one zmm of 16 int32 lanes holding 4 consecutive k, each row's 4 code bytes are
// broadcast, and R x NB vpdpbusd accumulate (the vpermw shares no port with them on Zen 5).
// The call that ends K applies the float epilogue in registers and stores the rows of C (no
// int32 tile round trip): the compensation (given, or summed in one more accumulator row of
// ones), then the AVX2 epilogue's two vmulps and vaddps (same bits).
// Row quantizers: the AVX2 ones' vdivps and round-half-even, 16 lanes, u8 codes in one pass.
// Raw pointers and intrinsics only (see CMakeLists.txt).
#include <immintrin.h>

#include <cfloat>
#include <cstdint>

#include "kernels/x86/gemm_i8_vnni.h"

// NOTE: GCC 12's AVX-512 intrinsics start from _mm512_undefined_*() (a self-initialised
// variable), which -W(maybe-)uninitialized reports once they are inlined into masked code.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace ember::cpu {
namespace {

// vpermw indices: word 2j <- word j (k 0, 1 of column j), word 2j + 1 <- word 16 + j (k 2, 3).
inline __m512i quad_index() {
  return _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7,
                          22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
}

// The 4 bytes at p in every int32 lane (vpbroadcastd from memory; memcpy: no aliasing issue).
inline __m512i bcast4(const uint8_t* p) {
  int32_t v;
  __builtin_memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

// An opaque copy: the compiler cannot fuse the product before it with a later add.
inline __m512 opaque(__m512 v) {
  __asm__("" : "+v"(v));
  return v;
}

enum Mode { kStore, kEpilogue, kEpilogueSums };  // int32 out; floats (comp given / summed here)

// The float epilogue of R x NB accumulators (QGemmU8Epilogue); sums: the panels' column sums
// (kEpilogueSums) or unused.
template <int R, int NB, int M>
inline void epilogue(__m512i (&acc)[R][NB], const __m512i* sums, const QGemmU8Epilogue& e) {
  __m512i comp[NB];
  __m512 ws[NB], bias[NB];
  __mmask16 mask[NB];
#pragma GCC unroll 4
  for (int p = 0; p < NB; p++) {
    int64_t left = e.cols - 16 * p;
    mask[p] = left >= 16 ? (__mmask16)0xffff : left <= 0 ? 0 : (__mmask16)((1u << left) - 1);
    comp[p] = M == kEpilogueSums ? _mm512_mullo_epi32(sums[p], _mm512_set1_epi32(e.a_off))
                                 : _mm512_loadu_si512(e.comp + 16 * p);
    ws[p] = _mm512_maskz_loadu_ps(mask[p], e.w_scale + 16 * p);
    bias[p] = e.bias ? _mm512_maskz_loadu_ps(mask[p], e.bias + 16 * p) : _mm512_setzero_ps();
  }
#pragma GCC unroll 8
  for (int i = 0; i < R; i++) {
    __m512 s = _mm512_set1_ps(e.a_scale[i]);
#pragma GCC unroll 4
    for (int p = 0; p < NB; p++) {
      __m512 v = _mm512_maskz_cvtepi32_ps(0xffff, _mm512_sub_epi32(acc[i][p], comp[p]));
      v = opaque(_mm512_mul_ps(_mm512_mul_ps(v, s), ws[p]));
      if (e.bias) v = _mm512_add_ps(v, bias[p]);
      _mm512_mask_storeu_ps(e.y + i * e.ldy + 16 * p, mask[p], v);
    }
  }
}

template <int R, int NB, int M>
inline void micro(int64_t kp, const uint8_t* a, int64_t lda, const int8_t* b, int64_t bs,
                  int32_t* c, int64_t ldc, bool accumulate, const QGemmU8Epilogue* epi) {
  constexpr bool kSums = M == kEpilogueSums;
  const __m512i idx = quad_index();
  __m512i acc[R][NB], sums[NB];
#pragma GCC unroll 8
  for (int i = 0; i < R; i++)
#pragma GCC unroll 4
    for (int p = 0; p < NB; p++)
      acc[i][p] = accumulate ? _mm512_loadu_si512(c + i * ldc + 16 * p) : _mm512_setzero_si512();
#pragma GCC unroll 4
  for (int p = 0; p < NB; p++) sums[p] = _mm512_setzero_si512();
  // One k quad (two pair rows) a step; an odd last pair row alone, its upper 32 bytes (k 2, 3)
  // read as zero weights.
  auto step = [&](int64_t q, __mmask16 half) __attribute__((always_inline)) {
    __m512i w[NB];
#pragma GCC unroll 4
    for (int p = 0; p < NB; p++)
      w[p] = _mm512_permutexvar_epi16(idx, _mm512_maskz_loadu_epi32(half, b + p * bs + q * 64));
#pragma GCC unroll 8
    for (int i = 0; i < R; i++) {
      __m512i ai = bcast4(a + i * lda + 4 * q);
#pragma GCC unroll 4
      for (int p = 0; p < NB; p++) acc[i][p] = _mm512_dpbusd_epi32(acc[i][p], ai, w[p]);
    }
    if (kSums) {
      const __m512i ones = _mm512_set1_epi8(1);
#pragma GCC unroll 4
      for (int p = 0; p < NB; p++) sums[p] = _mm512_dpbusd_epi32(sums[p], ones, w[p]);
    }
  };
  int64_t kq = kp / 2;
  for (int64_t q = 0; q < kq; q++) step(q, (__mmask16)0xffff);
  if (kp % 2) step(kq, (__mmask16)0x00ff);
  if (M == kStore) {
#pragma GCC unroll 8
    for (int i = 0; i < R; i++)
#pragma GCC unroll 4
      for (int p = 0; p < NB; p++) _mm512_storeu_si512(c + i * ldc + 16 * p, acc[i][p]);
  } else {
    epilogue<R, NB, M>(acc, sums, *epi);
  }
}

template <int NB, int M>
inline void micro_rows(int64_t kp, const uint8_t* a, int64_t lda, const int8_t* b, int64_t bs,
                       int32_t* c, int64_t ldc, int rows, bool accumulate,
                       const QGemmU8Epilogue* epi) {
  switch (rows) {
    case 1: return micro<1, NB, M>(kp, a, lda, b, bs, c, ldc, accumulate, epi);
    case 2: return micro<2, NB, M>(kp, a, lda, b, bs, c, ldc, accumulate, epi);
    case 3: return micro<3, NB, M>(kp, a, lda, b, bs, c, ldc, accumulate, epi);
    case 4: return micro<4, NB, M>(kp, a, lda, b, bs, c, ldc, accumulate, epi);
    case 5: return micro<5, NB, M>(kp, a, lda, b, bs, c, ldc, accumulate, epi);
    case 6: return micro<6, NB, M>(kp, a, lda, b, bs, c, ldc, accumulate, epi);
    case 7: return micro<7, NB, M>(kp, a, lda, b, bs, c, ldc, accumulate, epi);
    default: return micro<8, NB, M>(kp, a, lda, b, bs, c, ldc, accumulate, epi);
  }
}

template <int M>
inline void micro_panels(int64_t kp, const uint8_t* a, int64_t lda, const int8_t* b, int64_t bs,
                         int panels, int32_t* c, int64_t ldc, int rows, bool accumulate,
                         const QGemmU8Epilogue* epi) {
  switch (panels) {
    case 1: return micro_rows<1, M>(kp, a, lda, b, bs, c, ldc, rows, accumulate, epi);
    case 2: return micro_rows<2, M>(kp, a, lda, b, bs, c, ldc, rows, accumulate, epi);
    default: return micro_rows<3, M>(kp, a, lda, b, bs, c, ldc, rows, accumulate, epi);
  }
}

// The u8 codes of 16 quotients x / s: clamp(round(x / s) + zp, lo, hi) + off as int32
// (NaN -> lo), the AVX2 quantize8's operations.
inline __m512i codes16(__m512 x, __m512 s, __m512 fz, __m512 lo, __m512 hi, __m512i off) {
  __m512 r =
      _mm512_roundscale_ps(_mm512_div_ps(x, s), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  r = _mm512_max_ps(_mm512_add_ps(r, fz), lo);
  r = _mm512_min_ps(r, hi);
  return _mm512_add_epi32(_mm512_cvtps_epi32(r), off);
}

}  // namespace

void qgemm_u8i8_micro_8x48_avx512(int64_t kp, const uint8_t* a, int64_t lda, const int8_t* b,
                                  int64_t bs, int panels, int32_t* c, int64_t ldc, int rows,
                                  bool accumulate, const QGemmU8Epilogue* epi) {
  if (!epi) return micro_panels<kStore>(kp, a, lda, b, bs, panels, c, ldc, rows, accumulate, epi);
  if (epi->comp)
    return micro_panels<kEpilogue>(kp, a, lda, b, bs, panels, c, ldc, rows, accumulate, epi);
  micro_panels<kEpilogueSums>(kp, a, lda, b, bs, panels, c, ldc, rows, accumulate, epi);
}

void quantize_row_u8_linear_avx512(const float* x, int64_t k, float s, int32_t zp, int32_t qmin,
                                   int32_t qmax, uint8_t* u) {
  __m512 vs = _mm512_set1_ps(s), fz = _mm512_set1_ps((float)zp);
  __m512 lo = _mm512_set1_ps((float)qmin), hi = _mm512_set1_ps((float)qmax);
  __m512i off = _mm512_set1_epi32(qmin < 0 ? 128 : 0);
  int64_t j = 0;
  for (; j + 16 <= k; j += 16)
    _mm_storeu_si128((__m128i*)(u + j),
                     _mm512_cvtepi32_epi8(codes16(_mm512_loadu_ps(x + j), vs, fz, lo, hi, off)));
  int64_t k4 = (k + 3) / 4 * 4;
  if (j < k4) {
    // Lanes past k are stored as 0 (pad bytes meet zero weights).
    __mmask16 in = (__mmask16)((1u << (k - j)) - 1), out = (__mmask16)((1u << (k4 - j)) - 1);
    __m512i v = codes16(_mm512_maskz_loadu_ps(in, x + j), vs, fz, lo, hi, off);
    _mm_mask_storeu_epi8(u + j, out, _mm512_maskz_cvtepi32_epi8(in, v));
  }
}

float quantize_row_u8_token_avx512(const float* x, int64_t k, uint8_t* u) {
  // max(v, m) keeps m where v is NaN, as the scalar v > m ? v : m; max is exact in any order.
  // Four running maxima: one would wait on vmaxps's latency every step.
  const __m512 sign = _mm512_set1_ps(-0.0f);
  __m512 m = _mm512_setzero_ps(), m1 = m, m2 = m, m3 = m;
  int64_t j = 0;
  for (; j + 64 <= k; j += 64) {
    m = _mm512_max_ps(_mm512_andnot_ps(sign, _mm512_loadu_ps(x + j)), m);
    m1 = _mm512_max_ps(_mm512_andnot_ps(sign, _mm512_loadu_ps(x + j + 16)), m1);
    m2 = _mm512_max_ps(_mm512_andnot_ps(sign, _mm512_loadu_ps(x + j + 32)), m2);
    m3 = _mm512_max_ps(_mm512_andnot_ps(sign, _mm512_loadu_ps(x + j + 48)), m3);
  }
  m = _mm512_max_ps(_mm512_max_ps(m, m1), _mm512_max_ps(m2, m3));
  for (; j + 16 <= k; j += 16)
    m = _mm512_max_ps(_mm512_andnot_ps(sign, _mm512_loadu_ps(x + j)), m);
  if (j < k) {
    __mmask16 in = (__mmask16)((1u << (k - j)) - 1);
    m = _mm512_max_ps(_mm512_andnot_ps(sign, _mm512_maskz_loadu_ps(in, x + j)), m);
  }
  float s = _mm512_reduce_max_ps(m) / 127.0f;
  s = s > FLT_MIN ? s : FLT_MIN;
  quantize_row_u8_linear_avx512(x, k, s, 0, -127, 127, u);
  return s;
}

void qgemm_i8_comp_avx512(const int8_t* b, int64_t kh, int32_t off, int32_t* s) {
  // vpmaddubsw of ones (u8) by two pair rows (s8) gives each column's two-k sum in int16 (|sum|
  // <= 256), lanes 0..15 for the even row and 16..31 for the odd one; up to 64 such add up in
  // int16 (|sum| <= 16384) before both halves are widened into the int32 column sums.
  // NOTE: the maskz forms keep g++ 12 from warning about the unmasked forms' undefined source.
  const __m512i ones = _mm512_set1_epi8(1);
  const __mmask16 all = 0xffff;
  __m512i acc = _mm512_setzero_si512();
  int64_t kk = 0;
  while (kk + 2 <= kh) {
    int64_t end = kk + 2 * 64 < kh ? kk + 2 * 64 : kh / 2 * 2;
    __m512i acc16 = _mm512_setzero_si512();
    for (; kk < end; kk += 2) {
      __m512i w = _mm512_loadu_si512(b + kk * 32);
      acc16 = _mm512_add_epi16(acc16, _mm512_maddubs_epi16(ones, w));
    }
    __m256i lo = _mm512_maskz_extracti64x4_epi64(0xf, acc16, 0);
    __m256i hi = _mm512_maskz_extracti64x4_epi64(0xf, acc16, 1);
    acc = _mm512_add_epi32(acc, _mm512_maskz_cvtepi16_epi32(all, lo));
    acc = _mm512_add_epi32(acc, _mm512_maskz_cvtepi16_epi32(all, hi));
  }
  if (kk < kh) {
    __m256i w = _mm256_loadu_si256((const __m256i*)(b + kk * 32));
    __m256i p16 = _mm256_maddubs_epi16(_mm256_set1_epi8(1), w);
    acc = _mm512_add_epi32(acc, _mm512_maskz_cvtepi16_epi32(all, p16));
  }
  _mm512_storeu_si512(s, _mm512_mullo_epi32(acc, _mm512_set1_epi32(off)));
}

void qgemm_i8_codes_u8_avx512(const int16_t* q, int64_t k, int32_t off, uint8_t* u) {
  __m512i vo = _mm512_set1_epi16((int16_t)off);
  int64_t j = 0;
  for (; j + 32 <= k; j += 32) {
    __m512i v = _mm512_add_epi16(_mm512_loadu_si512(q + j), vo);
    _mm256_storeu_si256((__m256i*)(u + j), _mm512_maskz_cvtepi16_epi8(~0u, v));
  }
  int64_t k4 = (k + 3) / 4 * 4;
  if (j < k4) {
    // Past k the codes are zero (pad bytes meet zero weights); only k4 - j bytes are stored.
    __mmask32 in = (__mmask32)((1ull << (k - j)) - 1), out = (__mmask32)((1ull << (k4 - j)) - 1);
    __m512i v = _mm512_maskz_add_epi16(in, _mm512_maskz_loadu_epi16(in, q + j), vo);
    _mm256_mask_storeu_epi8(u + j, out, _mm512_maskz_cvtepi16_epi8(~0u, v));
  }
}

void transpose_f32_16x16_avx512(const float* src, int64_t lds, float* dst, int64_t ldd) {
  // Pairs of rows interleaved, then 4x4 blocks within each 128-bit lane, then the lanes.
  // NOTE: the maskz forms keep g++ 12 from warning about the unmasked forms' undefined source.
  const __mmask16 m = 0xffff;
  __m512 r[16], t[16];
#pragma GCC unroll 16
  for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_ps(src + i * lds);
#pragma GCC unroll 8
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_maskz_unpacklo_ps(m, r[i], r[i + 1]);
    t[i + 1] = _mm512_maskz_unpackhi_ps(m, r[i], r[i + 1]);
  }
  // u[4 g + c], lane L: rows 4 g .. 4 g + 3 of column 4 L + c.
#pragma GCC unroll 4
  for (int g = 0; g < 16; g += 4) {
    r[g] = _mm512_maskz_shuffle_ps(m, t[g], t[g + 2], 0x44);
    r[g + 1] = _mm512_maskz_shuffle_ps(m, t[g], t[g + 2], 0xee);
    r[g + 2] = _mm512_maskz_shuffle_ps(m, t[g + 1], t[g + 3], 0x44);
    r[g + 3] = _mm512_maskz_shuffle_ps(m, t[g + 1], t[g + 3], 0xee);
  }
#pragma GCC unroll 4
  for (int c = 0; c < 4; c++) {
    __m512 v0 = _mm512_maskz_shuffle_f32x4(m, r[c], r[4 + c], 0x88);
    __m512 w0 = _mm512_maskz_shuffle_f32x4(m, r[c], r[4 + c], 0xdd);
    __m512 v1 = _mm512_maskz_shuffle_f32x4(m, r[8 + c], r[12 + c], 0x88);
    __m512 w1 = _mm512_maskz_shuffle_f32x4(m, r[8 + c], r[12 + c], 0xdd);
    _mm512_storeu_ps(dst + c * ldd, _mm512_maskz_shuffle_f32x4(m, v0, v1, 0x88));
    _mm512_storeu_ps(dst + (4 + c) * ldd, _mm512_maskz_shuffle_f32x4(m, w0, w1, 0x88));
    _mm512_storeu_ps(dst + (8 + c) * ldd, _mm512_maskz_shuffle_f32x4(m, v0, v1, 0xdd));
    _mm512_storeu_ps(dst + (12 + c) * ldd, _mm512_maskz_shuffle_f32x4(m, w0, w1, 0xdd));
  }
}

}  // namespace ember::cpu
