// f32 GEMM micro-kernels, AArch64 NEON (baseline ASIMD, no extra flags): the GemmMicro contract
// of kernels/generic/kernels_generic.h (driver: gemm_f32.cpp via gemm_arm.cpp; reference: the
// MatMul row in cpp/src/ops/ops_linalg.cpp). Up to 6 x 16: 24 q-register accumulators, per k
// four B loads and one broadcast A element per row (fmla by lane of the four k of A spilled
// at 6 rows). A 1 x 64 variant for M = 1 keeps 16 chains in flight, A four k per q register.
// Every c element is one fused multiply-add chain over k in order whatever the kernel or row
// count, so results do not depend on M, and equal the generic kernel's where g++ contracts its
// a * b + c into fmla (aarch64, -ffp-contract=fast, the gnu++ default):
// tests/cpp/test_arm_kernels.cpp checks the bits. Raw pointers and intrinsics only.
#include <arm_neon.h>

#include <cstdint>

namespace ember::cpu {
namespace {

template <int R>
inline void micro(int64_t kc, const float* a, int64_t lda, const float* b, int64_t ldb, float* c,
                  int64_t ldc, bool accumulate) {
  float32x4_t acc[R][4];
#pragma GCC unroll 6
  for (int i = 0; i < R; i++)
#pragma GCC unroll 4
    for (int q = 0; q < 4; q++)
      acc[i][q] = accumulate ? vld1q_f32(c + i * ldc + 4 * q) : vdupq_n_f32(0.0f);
  for (int64_t k = 0; k < kc; k++) {
    const float* bk = b + k * ldb;
    float32x4_t b0 = vld1q_f32(bk), b1 = vld1q_f32(bk + 4);
    float32x4_t b2 = vld1q_f32(bk + 8), b3 = vld1q_f32(bk + 12);
#pragma GCC unroll 6
    for (int i = 0; i < R; i++) {
      float32x4_t ai = vld1q_dup_f32(a + i * lda + k);
      acc[i][0] = vfmaq_f32(acc[i][0], b0, ai);
      acc[i][1] = vfmaq_f32(acc[i][1], b1, ai);
      acc[i][2] = vfmaq_f32(acc[i][2], b2, ai);
      acc[i][3] = vfmaq_f32(acc[i][3], b3, ai);
    }
  }
#pragma GCC unroll 6
  for (int i = 0; i < R; i++)
#pragma GCC unroll 4
    for (int q = 0; q < 4; q++) vst1q_f32(c + i * ldc + 4 * q, acc[i][q]);
}

// acc[p * 4 + q] += b[p][k0 + U, 4q:4q+4] * a[k0 + U] for the four panels p.
template <int U>
inline void row_step(float32x4_t (&acc)[16], float32x4_t av, const float* bk, int64_t pstride) {
#pragma GCC unroll 4
  for (int p = 0; p < 4; p++)
#pragma GCC unroll 4
    for (int q = 0; q < 4; q++)
      acc[p * 4 + q] = vfmaq_laneq_f32(acc[p * 4 + q], vld1q_f32(bk + p * pstride + 4 * q), av, U);
}

}  // namespace

void sgemm_row_1x64_neon(int64_t kc, const float* a, const float* b, int64_t ldb, int64_t pstride,
                         float* c, bool accumulate) {
  float32x4_t acc[16];
#pragma GCC unroll 16
  for (int j = 0; j < 16; j++) acc[j] = accumulate ? vld1q_f32(c + 4 * j) : vdupq_n_f32(0.0f);
  int64_t k = 0;
  for (; k + 4 <= kc; k += 4) {
    float32x4_t av = vld1q_f32(a + k);
    row_step<0>(acc, av, b + (k + 0) * ldb, pstride);
    row_step<1>(acc, av, b + (k + 1) * ldb, pstride);
    row_step<2>(acc, av, b + (k + 2) * ldb, pstride);
    row_step<3>(acc, av, b + (k + 3) * ldb, pstride);
  }
  for (; k < kc; k++) row_step<0>(acc, vld1q_dup_f32(a + k), b + k * ldb, pstride);
#pragma GCC unroll 16
  for (int j = 0; j < 16; j++) vst1q_f32(c + 4 * j, acc[j]);
}

void sgemm_micro_6x16_neon(int64_t kc, const float* a, int64_t lda, const float* b, int64_t ldb,
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
