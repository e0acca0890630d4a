// f32 GEMM micro-kernel, AVX2 + FMA: up to 6 x 16 (12 ymm accumulators, 2 for B, 1 broadcast
// of A, read in place from its rows), the GemmMicro contract of kernels/generic/kernels_generic.h (driver: gemm_f32.cpp;
// reference: the MatMul row in cpp/src/ops/ops_linalg.cpp). One instantiation per row count,
// so a 1-row strip (M = 1, the decode case) does 1/6 of the work, and a 1 x 64 variant for it
// keeps 8 independent chains in flight (one chain per 8 columns is latency-bound); every c
// element is one FMA chain over k in order whatever the kernel, so results do not depend on M.
// Raw pointers and intrinsics only (see CMakeLists.txt).
#include <immintrin.h>

#include <cstdint>

namespace ember::cpu {
namespace {

template <int R>
inline void micro(int64_t kc, const float* a, int64_t lda, const float* b, int64_t ldb, float* c,
                  int64_t ldc, bool accumulate) {
  __m256 lo[R], hi[R];
#pragma GCC unroll 6
  for (int i = 0; i < R; i++) {
    lo[i] = accumulate ? _mm256_loadu_ps(c + i * ldc) : _mm256_setzero_ps();
    hi[i] = accumulate ? _mm256_loadu_ps(c + i * ldc + 8) : _mm256_setzero_ps();
  }
  for (int64_t k = 0; k < kc; k++) {
    const float* bk = b + k * ldb;
    __m256 b0 = _mm256_loadu_ps(bk), b1 = _mm256_loadu_ps(bk + 8);
#pragma GCC unroll 6
    for (int i = 0; i < R; i++) {
      __m256 ai = _mm256_broadcast_ss(a + i * lda + k);
      lo[i] = _mm256_fmadd_ps(ai, b0, lo[i]);
      hi[i] = _mm256_fmadd_ps(ai, b1, hi[i]);
    }
  }
#pragma GCC unroll 6
  for (int i = 0; i < R; i++) {
    _mm256_storeu_ps(c + i * ldc, lo[i]);
    _mm256_storeu_ps(c + i * ldc + 8, hi[i]);
  }
}

}  // namespace

void sgemm_row_1x64_avx2(int64_t kc, const float* a, const float* b, int64_t ldb, int64_t pstride,
                         float* c, bool accumulate) {
  __m256 acc[8];
#pragma GCC unroll 8
  for (int j = 0; j < 8; j++) {
    const float* cj = c + 16 * (j / 2) + 8 * (j % 2);
    acc[j] = accumulate ? _mm256_loadu_ps(cj) : _mm256_setzero_ps();
  }
  for (int64_t k = 0; k < kc; k++) {
    __m256 ak = _mm256_broadcast_ss(a + k);
#pragma GCC unroll 8
    for (int j = 0; j < 8; j++) {
      const float* bj = b + (j / 2) * pstride + k * ldb + 8 * (j % 2);
      acc[j] = _mm256_fmadd_ps(ak, _mm256_loadu_ps(bj), acc[j]);
    }
  }
#pragma GCC unroll 8
  for (int j = 0; j < 8; j++) _mm256_storeu_ps(c + 16 * (j / 2) + 8 * (j % 2), acc[j]);
}

void sgemm_micro_6x16_avx2(int64_t kc, const float* a, int64_t lda, const float* b, int64_t ldb,
                           float* c, int64_t ldc, int rows, bool accumulate) {
  switch (rows) {
    case 1: return micro<1>(kc, a, lda, b, ldb, c, ldc, accumulate);
    case 2: return micro<2>(kc, a, lda, b, ldb, c, ldc, accumulate);
    case 3: return micro<3>(kc, a, lda, b, ldb, c, ldc, accumulate);
    case 4: return micro<4>(kc, a, lda, b, ldb, c, ldc, accumulate);
    case 5: return micro<5>(kc, a, lda, b, ldb, c, ldc, accumulate);
    default: return micro<6>(kc, a, lda, b, ldb, c, ldc, accumulate);
  }
}

}  // namespace ember::cpu
