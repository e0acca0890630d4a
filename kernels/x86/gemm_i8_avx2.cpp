// INT8 W8A8 GEMM pieces, AVX2: the QGemmI8Micro and QuantizeRowsI8 contracts of
// kernels/generic/gemm_i8.h (driver: gemm_i8_x86.cpp; reference: cpp/src/ops/ops_qmatmul.cpp).
// Micro-kernel up to 6 x 16: per k pair, one vpbroadcastd of a row's two int16 codes, the
// panel's 32 weight bytes widened to two ymm of int16 (vpmovsxbw), vpmaddwd + vpaddd into 12
// int32 accumulators (vpmaddubsw would saturate). Exact sums, so every row count gives the
// same integers. Epilogue: two vmulps then vaddps, kept apart from FMA contraction. Row
// quantizers: vdivps and vroundps (half to even) give the generic kernels' codes.
// Raw pointers and intrinsics only (see CMakeLists.txt).
#include <immintrin.h>

#include <cfloat>
#include <cstdint>

namespace ember::cpu {
namespace {

// An opaque copy: the compiler cannot fuse the product before it with a later add.
inline __m256 opaque(__m256 v) {
  __asm__("" : "+x"(v));
  return v;
}

// Lane mask for the first n (< 8) lanes.
inline __m256i tail_mask(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

template <int R>
inline void micro(int64_t kp, const int16_t* a, int64_t lda, const int8_t* b, int32_t* c,
                  int64_t ldc, bool accumulate) {
  __m256i lo[R], hi[R];
#pragma GCC unroll 6
  for (int i = 0; i < R; i++) {
    lo[i] = accumulate ? _mm256_loadu_si256((const __m256i*)(c + i * ldc)) : _mm256_setzero_si256();
    hi[i] = accumulate ? _mm256_loadu_si256((const __m256i*)(c + i * ldc + 8)) : _mm256_setzero_si256();
  }
  for (int64_t kk = 0; kk < kp; kk++) {
    const int8_t* bk = b + kk * 32;
    __m256i b0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)bk));
    __m256i b1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)(bk + 16)));
#pragma GCC unroll 6
    for (int i = 0; i < R; i++) {
      __m256i ai = _mm256_broadcastd_epi32(_mm_loadu_si32(a + i * lda + 2 * kk));
      lo[i] = _mm256_add_epi32(lo[i], _mm256_madd_epi16(ai, b0));
      hi[i] = _mm256_add_epi32(hi[i], _mm256_madd_epi16(ai, b1));
    }
  }
#pragma GCC unroll 6
  for (int i = 0; i < R; i++) {
    _mm256_storeu_si256((__m256i*)(c + i * ldc), lo[i]);
    _mm256_storeu_si256((__m256i*)(c + i * ldc + 8), hi[i]);
  }
}

// Codes of 8 quotients x / s: clamp(round(x / s) + zp, lo, hi) - zp as int32 (NaN -> lo).
inline __m256i quantize8(__m256 x, __m256 s, __m256 fz, __m256 lo, __m256 hi, __m256i zp) {
  __m256 r = _mm256_round_ps(_mm256_div_ps(x, s), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  r = _mm256_max_ps(_mm256_add_ps(r, fz), lo);
  r = _mm256_min_ps(r, hi);
  return _mm256_sub_epi32(_mm256_cvtps_epi32(r), zp);
}

inline __m128i pack16(__m256i v) {
  return _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
}

}  // namespace

void qgemm_i8_micro_6x16_avx2(int64_t kp, const int16_t* a, int64_t lda, const int8_t* b,
                              int32_t* c, int64_t ldc, int rows, bool accumulate) {
  switch (rows) {
    case 1: return micro<1>(kp, a, lda, b, c, ldc, accumulate);
    case 2: return micro<2>(kp, a, lda, b, c, ldc, accumulate);
    case 3: return micro<3>(kp, a, lda, b, c, ldc, accumulate);
    case 4: return micro<4>(kp, a, lda, b, c, ldc, accumulate);
    case 5: return micro<5>(kp, a, lda, b, c, ldc, accumulate);
    default: return micro<6>(kp, a, lda, b, c, ldc, accumulate);
  }
}

void qgemm_i8_epilogue_avx2(const int32_t* acc, int64_t n, float a_scale, const float* w_scale,
                            const float* bias, float* y) {
  __m256 s = _mm256_set1_ps(a_scale);
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    __m256 v = _mm256_cvtepi32_ps(_mm256_loadu_si256((const __m256i*)(acc + j)));
    v = opaque(_mm256_mul_ps(_mm256_mul_ps(v, s), _mm256_loadu_ps(w_scale + j)));
    if (bias) v = _mm256_add_ps(v, _mm256_loadu_ps(bias + j));
    _mm256_storeu_ps(y + j, v);
  }
  if (j < n) {
    __m256i m = tail_mask(n - j);
    __m256 v = _mm256_cvtepi32_ps(_mm256_maskload_epi32((const int*)(acc + j), m));
    v = opaque(_mm256_mul_ps(_mm256_mul_ps(v, s), _mm256_maskload_ps(w_scale + j, m)));
    if (bias) v = _mm256_add_ps(v, _mm256_maskload_ps(bias + j, m));
    _mm256_maskstore_ps(y + j, m, v);
  }
}

void quantize_row_i8_linear_avx2(const float* x, int64_t k, float s, int32_t zp, int32_t qmin,
                                 int32_t qmax, int16_t* q) {
  __m256 vs = _mm256_set1_ps(s), fz = _mm256_set1_ps((float)zp);
  __m256 lo = _mm256_set1_ps((float)qmin), hi = _mm256_set1_ps((float)qmax);
  __m256i vz = _mm256_set1_epi32(zp);
  int64_t j = 0;
  for (; j + 8 <= k; j += 8)
    _mm_storeu_si128((__m128i*)(q + j), pack16(quantize8(_mm256_loadu_ps(x + j), vs, fz, lo, hi, vz)));
  if (j < k) {
    // Masked-off lanes read 0, whose code is 0; only the k - j real ones are stored.
    __m256 v = _mm256_maskload_ps(x + j, tail_mask(k - j));
    alignas(16) int16_t t[8];
    _mm_store_si128((__m128i*)t, pack16(quantize8(v, vs, fz, lo, hi, vz)));
    for (int64_t i = 0; j + i < k; i++) q[j + i] = t[i];
  }
  if (k % 2) q[k] = 0;
}

void quantize_row_q8_linear_avx2(const float* x, int64_t n, float s, int32_t zp, int32_t qmin,
                                 int32_t qmax, uint8_t* y) {
  __m256 vs = _mm256_set1_ps(s), fz = _mm256_set1_ps((float)zp);
  __m256 lo = _mm256_set1_ps((float)qmin), hi = _mm256_set1_ps((float)qmax);
  __m256i none = _mm256_setzero_si256();  // the zero point stays in the codes
  bool u8 = qmin == 0;
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    __m128i a = pack16(quantize8(_mm256_loadu_ps(x + j), vs, fz, lo, hi, none));
    __m128i b = pack16(quantize8(_mm256_loadu_ps(x + j + 8), vs, fz, lo, hi, none));
    _mm_storeu_si128((__m128i*)(y + j), u8 ? _mm_packus_epi16(a, b) : _mm_packs_epi16(a, b));
  }
  for (; j < n; j += 8) {
    // Masked-off lanes read 0; only the real ones are stored.
    int64_t r = n - j < 8 ? n - j : 8;
    __m128i a = pack16(quantize8(_mm256_maskload_ps(x + j, tail_mask(r)), vs, fz, lo, hi, none));
    alignas(16) uint8_t t[16];
    _mm_store_si128((__m128i*)t, u8 ? _mm_packus_epi16(a, a) : _mm_packs_epi16(a, a));
    for (int64_t i = 0; i < r; i++) y[j + i] = t[i];
  }
}

float quantize_row_i8_token_avx2(const float* x, int64_t k, int16_t* q) {
  __m256 sign = _mm256_set1_ps(-0.0f), m = _mm256_setzero_ps();
  int64_t j = 0;
  // max(v, m) keeps m where v is NaN, as the scalar v > m ? v : m.
  for (; j + 8 <= k; j += 8) m = _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(x + j)), m);
  if (j < k) m = _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_maskload_ps(x + j, tail_mask(k - j))), m);
  __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
  h = _mm_max_ps(h, _mm_movehl_ps(h, h));
  h = _mm_max_ss(h, _mm_shuffle_ps(h, h, 1));
  float s = _mm_cvtss_f32(h) / 127.0f;
  s = s > FLT_MIN ? s : FLT_MIN;
  quantize_row_i8_linear_avx2(x, k, s, 0, -127, 127, q);
  return s;
}

void minmax_f32_row_avx2(const float* x, int64_t n, float* lo, float* hi) {
  __m256 l = _mm256_set1_ps(*lo), h = _mm256_set1_ps(*hi);
  int64_t j = 0;
  // min(v, l) / max(v, h) keep l / h where v is NaN, as the scalar forms.
  for (; j + 8 <= n; j += 8) {
    __m256 v = _mm256_loadu_ps(x + j);
    l = _mm256_min_ps(v, l);
    h = _mm256_max_ps(v, h);
  }
  __m128 l4 = _mm_min_ps(_mm256_castps256_ps128(l), _mm256_extractf128_ps(l, 1));
  __m128 h4 = _mm_max_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  l4 = _mm_min_ps(l4, _mm_movehl_ps(l4, l4));
  h4 = _mm_max_ps(h4, _mm_movehl_ps(h4, h4));
  l4 = _mm_min_ss(l4, _mm_shuffle_ps(l4, l4, 1));
  h4 = _mm_max_ss(h4, _mm_shuffle_ps(h4, h4, 1));
  float lv = _mm_cvtss_f32(l4), hv = _mm_cvtss_f32(h4);
  for (; j < n; j++) {
    lv = x[j] < lv ? x[j] : lv;
    hv = x[j] > hv ? x[j] : hv;
  }
  *lo = lv;
  *hi = hv;
}

}  // namespace ember::cpu
