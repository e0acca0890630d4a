// INT8 W8A8 GEMM pieces, AArch64 NEON (baseline ASIMD): the QGemmI8Micro contract of
// kernels/generic/gemm_i8.h (driver: gemm_i8_arm.cpp; reference: cpp/src/ops/ops_qmatmul.cpp).
// Micro-kernel up to 6 x 16: per k pair, ld2 splits the panel's 32 bytes into the even-k and
// odd-k weights of 16 columns, sxtl widens them to int16, and smlal / smlal2 by lane multiply
// them with the row's two int16 codes into 24 int32x4 accumulators. The codes may use the
// full int16 range the contract allows (|a| <= 255, ONNX uint8 zero points), so no sdot here.
// Exact sums: every row count and order gives the generic kernel's integers. Epilogue: two
// fmul then fadd, kept apart from FMA contraction, as the generic one.
// Raw pointers and intrinsics only (see CMakeLists.txt).
#include <arm_neon.h>

#include <cstdint>
#include <cstring>

namespace ember::cpu {
namespace {

// An opaque copy: the compiler cannot fuse the product before it with a later add.
inline float32x4_t opaque(float32x4_t v) {
  __asm__("" : "+w"(v));
  return v;
}
inline float opaque1(float v) {
  __asm__("" : "+w"(v));
  return v;
}

template <int R>
inline void micro(int64_t kp, const int16_t* a, int64_t lda, const int8_t* b, int32_t* c,
                  int64_t ldc, bool accumulate) {
  int32x4_t acc[R][4];
#pragma GCC unroll 6
  for (int i = 0; i < R; i++)
#pragma GCC unroll 4
    for (int q = 0; q < 4; q++)
      acc[i][q] = accumulate ? vld1q_s32(c + i * ldc + 4 * q) : vdupq_n_s32(0);
  for (int64_t kk = 0; kk < kp; kk++) {
    int8x16x2_t w = vld2q_s8(b + kk * 32);  // val[0]: Wq[2kk, j], val[1]: Wq[2kk + 1, j]
    int16x8_t e0 = vmovl_s8(vget_low_s8(w.val[0])), e1 = vmovl_high_s8(w.val[0]);
    int16x8_t o0 = vmovl_s8(vget_low_s8(w.val[1])), o1 = vmovl_high_s8(w.val[1]);
#pragma GCC unroll 6
    for (int i = 0; i < R; i++) {
      uint32_t pair;  // a[i, 2kk] (low half) and a[i, 2kk + 1]
      std::memcpy(&pair, a + i * lda + 2 * kk, 4);
      int16x4_t av = vreinterpret_s16_u32(vdup_n_u32(pair));
      acc[i][0] = vmlal_lane_s16(acc[i][0], vget_low_s16(e0), av, 0);
      acc[i][1] = vmlal_high_lane_s16(acc[i][1], e0, av, 0);
      acc[i][2] = vmlal_lane_s16(acc[i][2], vget_low_s16(e1), av, 0);
      acc[i][3] = vmlal_high_lane_s16(acc[i][3], e1, av, 0);
      acc[i][0] = vmlal_lane_s16(acc[i][0], vget_low_s16(o0), av, 1);
      acc[i][1] = vmlal_high_lane_s16(acc[i][1], o0, av, 1);
      acc[i][2] = vmlal_lane_s16(acc[i][2], vget_low_s16(o1), av, 1);
      acc[i][3] = vmlal_high_lane_s16(acc[i][3], o1, av, 1);
    }
  }
#pragma GCC unroll 6
  for (int i = 0; i < R; i++)
#pragma GCC unroll 4
    for (int q = 0; q < 4; q++) vst1q_s32(c + i * ldc + 4 * q, acc[i][q]);
}

}  // namespace

void qgemm_i8_micro_6x16_neon(int64_t kp, const int16_t* a, int64_t lda, const int8_t* b,
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

void qgemm_i8_epilogue_neon(const int32_t* acc, int64_t n, float a_scale, const float* w_scale,
                            const float* bias, float* y) {
  float32x4_t s = vdupq_n_f32(a_scale);
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) {
    float32x4_t v = vcvtq_f32_s32(vld1q_s32(acc + j));
    v = opaque(vmulq_f32(opaque(vmulq_f32(v, s)), vld1q_f32(w_scale + j)));
    if (bias) v = vaddq_f32(v, vld1q_f32(bias + j));
    vst1q_f32(y + j, v);
  }
  for (; j < n; j++) {
    float v = opaque1(opaque1((float)acc[j] * a_scale) * w_scale[j]);
    y[j] = bias ? v + bias[j] : v;
  }
}

}  // namespace ember::cpu
