// INT8 W8A8 GEMM micro-kernel, AArch64 NEON + dotprod (sdot; built with
// -march=armv8.2-a+dotprod, called only where HWCAP_ASIMDDP is set: gemm_i8_arm.cpp). The
// QGemmI8Micro contract of kernels/generic/gemm_i8.h for codes that fit int8 (per-token
// activations: |a| <= 127), up to 6 x 16. Per two k pairs, zip1/zip2 of the two 32-byte panel
// rows (as int16 k pairs) give four registers of 4 columns x 4 k, the sdot layout; each row's
// four int16 codes narrow to int8 and meet them through sdot by lane into 24 int32x4
// accumulators. Exact sums: the generic kernel's integers (tests/cpp/test_arm_kernels.cpp).
// Raw pointers and intrinsics only (see CMakeLists.txt).
#include <arm_neon.h>

#include <cstdint>

namespace ember::cpu {
namespace {

template <int R>
inline void micro(int64_t kp, const int16_t* a, int64_t lda, const int8_t* b, int32_t* c,
                  int64_t ldc, bool accumulate) {
  int32x4_t acc[R][4];
#pragma GCC unroll 6
  for (int i = 0; i < R; i++)
#pragma GCC unroll 4
    for (int q = 0; q < 4; q++)
      acc[i][q] = accumulate ? vld1q_s32(c + i * ldc + 4 * q) : vdupq_n_s32(0);
  for (int64_t kk = 0; kk < kp; kk += 2) {
    const bool pair = kk + 1 < kp;  // else the odd last pair: k 2kk + 2, 2kk + 3 count as zero
    const int8_t* bk = b + kk * 32;
    int16x8_t r0a = vreinterpretq_s16_s8(vld1q_s8(bk));
    int16x8_t r0b = vreinterpretq_s16_s8(vld1q_s8(bk + 16));
    int16x8_t r1a = pair ? vreinterpretq_s16_s8(vld1q_s8(bk + 32)) : vdupq_n_s16(0);
    int16x8_t r1b = pair ? vreinterpretq_s16_s8(vld1q_s8(bk + 48)) : vdupq_n_s16(0);
    int8x16_t w0 = vreinterpretq_s8_s16(vzip1q_s16(r0a, r1a));  // columns 0-3, k 2kk .. 2kk + 3
    int8x16_t w1 = vreinterpretq_s8_s16(vzip2q_s16(r0a, r1a));  // columns 4-7
    int8x16_t w2 = vreinterpretq_s8_s16(vzip1q_s16(r0b, r1b));  // columns 8-11
    int8x16_t w3 = vreinterpretq_s8_s16(vzip2q_s16(r0b, r1b));  // columns 12-15
#pragma GCC unroll 6
    for (int i = 0; i < R; i++) {
      const int16_t* ai = a + i * lda + 2 * kk;
      int16x4_t a16 =
          pair ? vld1_s16(ai) : vset_lane_s16(ai[1], vset_lane_s16(ai[0], vdup_n_s16(0), 0), 1);
      int8x8_t a8 = vmovn_s16(vcombine_s16(a16, a16));  // lanes 0-3: the four codes
      acc[i][0] = vdotq_lane_s32(acc[i][0], w0, a8, 0);
      acc[i][1] = vdotq_lane_s32(acc[i][1], w1, a8, 0);
      acc[i][2] = vdotq_lane_s32(acc[i][2], w2, a8, 0);
      acc[i][3] = vdotq_lane_s32(acc[i][3], w3, a8, 0);
    }
  }
#pragma GCC unroll 6
  for (int i = 0; i < R; i++)
#pragma GCC unroll 4
    for (int q = 0; q < 4; q++) vst1q_s32(c + i * ldc + 4 * q, acc[i][q]);
}

}  // namespace

void qgemm_i8_micro_6x16_dotprod(int64_t kp, const int16_t* a, int64_t lda, const int8_t* b,
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

}  // namespace ember::cpu
