// f32 GEMM micro-kernels, AVX-512: the GemmMicro contract of kernels/generic/kernels_generic.h
// (driver: gemm_f32.cpp; reference: the MatMul row in cpp/src/ops/ops_linalg.cpp). Up to
// 12 rows x one zmm (16 columns) per panel; the FMAs take A broadcast from memory, read in
// place from its rows (two base pointers and scaled indices address 12 rows with few
// registers). The two-panel form (12 x 32, 24 accumulators) loads each A element once for
// two FMAs: with 2 zmm FMAs a cycle the one-panel form is bound by its loads (~83% of peak in
// a microbenchmark, 97% for 12 x 32). The one-row form (M = 1) runs 4 chains over 4 panels
// (1 x 64): a GEMV streams B, and 4 chains take it as fast as L2, L3 or memory give it (8
// panels measured 0-30% slower: panels K x 64 bytes apart share L1 sets). Every c element is
// one FMA chain over k in order in all of them, as in the AVX2 kernel: the same bits,
// whatever M. Raw pointers and intrinsics only.
#include <immintrin.h>

#include <cstdint>

namespace ember::cpu {
namespace {

// The strip's 12 row pointers at one step: rows 0..7 from p0, 8..11 from p8, at offsets of
// 1, 2, 4 x lda or 2 x l3 or l3, l5, l7 (all scaled-index addresses: few registers).
inline void a_rows(const float* p0, const float* p8, int64_t lda, int64_t l3, int64_t l5,
                   int64_t l7, const float** ap) {
  ap[0] = p0, ap[1] = p0 + lda, ap[2] = p0 + 2 * lda, ap[3] = p0 + l3;
  ap[4] = p0 + 4 * lda, ap[5] = p0 + l5, ap[6] = p0 + 2 * l3, ap[7] = p0 + l7;
  ap[8] = p8, ap[9] = p8 + lda, ap[10] = p8 + 2 * lda, ap[11] = p8 + l3;
}

template <int R>
inline void micro(int64_t kc, const float* a, int64_t lda, const float* b, int64_t ldb, float* c,
                  int64_t ldc, bool accumulate) {
  __m512 acc[R];
#pragma GCC unroll 12
  for (int i = 0; i < R; i++)
    acc[i] = accumulate ? _mm512_loadu_ps(c + i * ldc) : _mm512_setzero_ps();
  const float* p0 = a;
  const float* p8 = a + 8 * lda;
  const int64_t l3 = 3 * lda, l5 = 5 * lda, l7 = 7 * lda;
  for (int64_t k = 0; k < kc; k++) {
    const __m512 bk = _mm512_loadu_ps(b);
    const float* ap[12];
    a_rows(p0, p8, lda, l3, l5, l7, ap);
#pragma GCC unroll 12
    for (int i = 0; i < R; i++) acc[i] = _mm512_fmadd_ps(_mm512_set1_ps(*ap[i]), bk, acc[i]);
    b += ldb;
    p0++;
    p8++;
  }
#pragma GCC unroll 12
  for (int i = 0; i < R; i++) _mm512_storeu_ps(c + i * ldc, acc[i]);
}

// The 32-column tiles (micro2, taps2): R rows of C as two zmm halves each.
template <int R>
__attribute__((always_inline)) inline void pair_load(const float* c, int64_t ldc, bool accumulate,
                                                     __m512 (&lo)[R], __m512 (&hi)[R]) {
#pragma GCC unroll 12
  for (int i = 0; i < R; i++) {
    lo[i] = accumulate ? _mm512_loadu_ps(c + i * ldc) : _mm512_setzero_ps();
    hi[i] = accumulate ? _mm512_loadu_ps(c + i * ldc + 16) : _mm512_setzero_ps();
  }
}
// C rows += A[i, k] x (b0, b1), A's R values at *ap[i].
template <int R>
__attribute__((always_inline)) inline void pair_fma(const float* const (&ap)[12], __m512 b0,
                                                    __m512 b1, __m512 (&lo)[R], __m512 (&hi)[R]) {
#pragma GCC unroll 12
  for (int i = 0; i < R; i++) {
    const __m512 ai = _mm512_set1_ps(*ap[i]);
    lo[i] = _mm512_fmadd_ps(ai, b0, lo[i]);
    hi[i] = _mm512_fmadd_ps(ai, b1, hi[i]);
  }
}
template <int R>
__attribute__((always_inline)) inline void pair_store(float* c, int64_t ldc, const __m512 (&lo)[R],
                                                      const __m512 (&hi)[R]) {
#pragma GCC unroll 12
  for (int i = 0; i < R; i++) {
    _mm512_storeu_ps(c + i * ldc, lo[i]);
    _mm512_storeu_ps(c + i * ldc + 16, hi[i]);
  }
}

template <int R>
inline void micro2(int64_t kc, const float* a, int64_t lda, const float* b, int64_t ldb,
                   int64_t pstride, float* c, int64_t ldc, bool accumulate) {
  __m512 lo[R], hi[R];
  pair_load<R>(c, ldc, accumulate, lo, hi);
  const float* p0 = a;
  const float* p8 = a + 8 * lda;
  const int64_t l3 = 3 * lda, l5 = 5 * lda, l7 = 7 * lda;
  for (int64_t k = 0; k < kc; k++) {
    const __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + pstride);
    const float* ap[12];
    a_rows(p0, p8, lda, l3, l5, l7, ap);
    pair_fma<R>(ap, b0, b1, lo, hi);
    b += ldb;
    p0++;
    p8++;
  }
  pair_store<R>(c, ldc, lo, hi);
}

// micro2 with A[i, k] = a[off[k] + i * as] (GemmMicro::taps2).
template <int R>
inline void taps2(int64_t kc, const float* a, int64_t as, const int32_t* off, const float* b,
                  int64_t ldb, int64_t pstride, float* c, int64_t ldc, bool accumulate,
                  const float* pf, int64_t pf_lines) {
  __m512 lo[R], hi[R];
  pair_load<R>(c, ldc, accumulate, lo, hi);
  const int64_t l3 = 3 * as, l5 = 5 * as, l7 = 7 * as;
  for (int64_t k = 0; k < kc; k++) {
    const __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + pstride);
    if (2 * k < pf_lines) _mm_prefetch((const char*)(pf + 32 * k), _MM_HINT_T0);
    if (2 * k + 1 < pf_lines) _mm_prefetch((const char*)(pf + 32 * k + 16), _MM_HINT_T0);
    const float* p0 = a + off[k];
    const float* ap[12];
    a_rows(p0, p0 + 8 * as, as, l3, l5, l7, ap);
    pair_fma<R>(ap, b0, b1, lo, hi);
    b += ldb;
  }
  pair_store<R>(c, ldc, lo, hi);
}

}  // namespace

void sgemm_taps_12x32_avx512(int64_t kc, const float* a, int64_t as, const int32_t* off,
                             const float* b, int64_t ldb, int64_t pstride, float* c, int64_t ldc,
                             int rows, bool accumulate, const float* pf, int64_t pf_lines) {
  switch (rows) {
    case 1: return taps2<1>(kc, a, as, off, b, ldb, pstride, c, ldc, accumulate, pf, pf_lines);
    case 2: return taps2<2>(kc, a, as, off, b, ldb, pstride, c, ldc, accumulate, pf, pf_lines);
    case 3: return taps2<3>(kc, a, as, off, b, ldb, pstride, c, ldc, accumulate, pf, pf_lines);
    case 4: return taps2<4>(kc, a, as, off, b, ldb, pstride, c, ldc, accumulate, pf, pf_lines);
    case 5: return taps2<5>(kc, a, as, off, b, ldb, pstride, c, ldc, accumulate, pf, pf_lines);
    case 6: return taps2<6>(kc, a, as, off, b, ldb, pstride, c, ldc, accumulate, pf, pf_lines);
    case 7: return taps2<7>(kc, a, as, off, b, ldb, pstride, c, ldc, accumulate, pf, pf_lines);
    case 8: return taps2<8>(kc, a, as, off, b, ldb, pstride, c, ldc, accumulate, pf, pf_lines);
    case 9: return taps2<9>(kc, a, as, off, b, ldb, pstride, c, ldc, accumulate, pf, pf_lines);
    case 10: return taps2<10>(kc, a, as, off, b, ldb, pstride, c, ldc, accumulate, pf, pf_lines);
    case 11: return taps2<11>(kc, a, as, off, b, ldb, pstride, c, ldc, accumulate, pf, pf_lines);
    default: return taps2<12>(kc, a, as, off, b, ldb, pstride, c, ldc, accumulate, pf, pf_lines);
  }
}

void sgemm_micro_12x16_avx512(int64_t kc, const float* a, int64_t lda, const float* b,
                              int64_t ldb, float* c, int64_t ldc, int rows, bool accumulate) {
  switch (rows) {
    case 1: return micro<1>(kc, a, lda, b, ldb, c, ldc, accumulate);
    case 2: return micro<2>(kc, a, lda, b, ldb, c, ldc, accumulate);
    case 3: return micro<3>(kc, a, lda, b, ldb, c, ldc, accumulate);
    case 4: return micro<4>(kc, a, lda, b, ldb, c, ldc, accumulate);
    case 5: return micro<5>(kc, a, lda, b, ldb, c, ldc, accumulate);
    case 6: return micro<6>(kc, a, lda, b, ldb, c, ldc, accumulate);
    case 7: return micro<7>(kc, a, lda, b, ldb, c, ldc, accumulate);
    case 8: return micro<8>(kc, a, lda, b, ldb, c, ldc, accumulate);
    case 9: return micro<9>(kc, a, lda, b, ldb, c, ldc, accumulate);
    case 10: return micro<10>(kc, a, lda, b, ldb, c, ldc, accumulate);
    case 11: return micro<11>(kc, a, lda, b, ldb, c, ldc, accumulate);
    default: return micro<12>(kc, a, lda, b, ldb, c, ldc, accumulate);
  }
}

void sgemm_micro_12x32_avx512(int64_t kc, const float* a, int64_t lda, const float* b,
                              int64_t ldb, int64_t pstride, float* c, int64_t ldc, int rows,
                              bool accumulate) {
  switch (rows) {
    case 1: return micro2<1>(kc, a, lda, b, ldb, pstride, c, ldc, accumulate);
    case 2: return micro2<2>(kc, a, lda, b, ldb, pstride, c, ldc, accumulate);
    case 3: return micro2<3>(kc, a, lda, b, ldb, pstride, c, ldc, accumulate);
    case 4: return micro2<4>(kc, a, lda, b, ldb, pstride, c, ldc, accumulate);
    case 5: return micro2<5>(kc, a, lda, b, ldb, pstride, c, ldc, accumulate);
    case 6: return micro2<6>(kc, a, lda, b, ldb, pstride, c, ldc, accumulate);
    case 7: return micro2<7>(kc, a, lda, b, ldb, pstride, c, ldc, accumulate);
    case 8: return micro2<8>(kc, a, lda, b, ldb, pstride, c, ldc, accumulate);
    case 9: return micro2<9>(kc, a, lda, b, ldb, pstride, c, ldc, accumulate);
    case 10: return micro2<10>(kc, a, lda, b, ldb, pstride, c, ldc, accumulate);
    case 11: return micro2<11>(kc, a, lda, b, ldb, pstride, c, ldc, accumulate);
    default: return micro2<12>(kc, a, lda, b, ldb, pstride, c, ldc, accumulate);
  }
}

void sgemm_row_1x64_avx512(int64_t kc, const float* a, const float* b, int64_t ldb,
                           int64_t pstride, float* c, bool accumulate) {
  __m512 acc[4];
#pragma GCC unroll 4
  for (int j = 0; j < 4; j++)
    acc[j] = accumulate ? _mm512_loadu_ps(c + 16 * j) : _mm512_setzero_ps();
  for (int64_t k = 0; k < kc; k++) {
    const __m512 ak = _mm512_set1_ps(a[k]);
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++)
      acc[j] = _mm512_fmadd_ps(ak, _mm512_loadu_ps(b + j * pstride + k * ldb), acc[j]);
  }
#pragma GCC unroll 4
  for (int j = 0; j < 4; j++) _mm512_storeu_ps(c + 16 * j, acc[j]);
}

}  // namespace ember::cpu
