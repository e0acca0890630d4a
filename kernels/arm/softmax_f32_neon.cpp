// Softmax and log-softmax rows, AArch64 NEON (baseline ASIMD); driver in norm_arm.cpp, generic
// kernels in kernels/generic/norm_f32.cpp, references: the Softmax / LogSoftmax OpDef rows.
// The AVX2 rows' algorithm (kernels/x86/elementwise_avx2.cpp) in 4 lanes: row max skipping NaN
// (fmaxnm), exp(x - max) with the subtraction's rounding error carried into the polynomial
// (two-sum), Cephes' degree-6 exp with 2^n applied as two halves, the exps summed in double in
// 4 fixed lanes (batch invariant), one division. Within 4 ulp of the references:
// tests/cpp/test_arm_kernels.cpp. Raw pointers and intrinsics only (see CMakeLists.txt).
#include <arm_neon.h>

#include <cmath>
#include <cstdint>

namespace ember::cpu {
namespace {

// exp(x + xl), <= 1 ulp: x = n ln2 + r, xl (|xl| <= ulp(x)) added to r; NaN x stays NaN.
inline float32x4_t exp_scaled(float32x4_t x, float32x4_t xl) {
  float32x4_t xc = vminq_f32(vmaxq_f32(x, vdupq_n_f32(-104.0f)), vdupq_n_f32(89.0f));
  const float32x4_t round = vdupq_n_f32(12582912.0f);  // 1.5 * 2^23: adding it rounds
  float32x4_t t = vfmaq_f32(round, xc, vdupq_n_f32(1.44269504088896341f));
  float32x4_t n = vsubq_f32(t, round);
  int32x4_t ni = vsubq_s32(vreinterpretq_s32_f32(t), vreinterpretq_s32_f32(round));
  float32x4_t r = vfmsq_f32(xc, n, vdupq_n_f32(0.693359375f));
  r = vaddq_f32(vfmsq_f32(r, n, vdupq_n_f32(-2.12194440e-4f)), xl);
  float32x4_t p = vdupq_n_f32(1.9875691500e-4f);
  p = vfmaq_f32(vdupq_n_f32(1.3981999507e-3f), p, r);
  p = vfmaq_f32(vdupq_n_f32(8.3334519073e-3f), p, r);
  p = vfmaq_f32(vdupq_n_f32(4.1665795894e-2f), p, r);
  p = vfmaq_f32(vdupq_n_f32(1.6666665459e-1f), p, r);
  p = vfmaq_f32(vdupq_n_f32(5.0000001201e-1f), p, r);
  p = vaddq_f32(vfmaq_f32(r, p, vmulq_f32(r, r)), vdupq_n_f32(1.0f));
  int32x4_t n1 = vshrq_n_s32(ni, 1), n2 = vsubq_s32(ni, n1);
  const int32x4_t e127 = vdupq_n_s32(127);
  float32x4_t s1 = vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(n1, e127), 23));
  float32x4_t s2 = vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(n2, e127), 23));
  float32x4_t y = vmulq_f32(vmulq_f32(p, s1), s2);
  return vbslq_f32(vceqq_f32(x, x), y, x);
}

// exp(x - m) with x - m = d + err exactly (two-sum); a -inf x gives 0 (its NaN err dropped).
inline float32x4_t exp_diff(float32x4_t x, float32x4_t m) {
  float32x4_t d = vsubq_f32(x, m);
  float32x4_t bv = vsubq_f32(d, x);
  float32x4_t err = vsubq_f32(vsubq_f32(x, vsubq_f32(d, bv)), vaddq_f32(m, bv));
  err = vbslq_f32(vceqq_f32(err, err), err, vdupq_n_f32(0.0f));
  return exp_scaled(d, err);
}

// Lanes i < n (n < 4) of x, the rest `fill`.
inline float32x4_t load_tail(const float* x, int64_t n, float fill) {
  float t[4] = {fill, fill, fill, fill};
  for (int64_t i = 0; i < n; i++) t[i] = x[i];
  return vld1q_f32(t);
}

inline float row_max(const float* x, int64_t n) {
  // fmaxnm keeps acc where x is NaN, as the generic x > acc ? x : acc.
  float32x4_t acc = vdupq_n_f32(-INFINITY);
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) acc = vmaxnmq_f32(acc, vld1q_f32(x + i));
  if (i < n) acc = vmaxnmq_f32(acc, load_tail(x + i, n - i, -INFINITY));
  return vmaxnmvq_f32(acc);
}

// e = exp(x - m) stored to y (nullptr: not stored); returns the sum of e in double, lanes
// 0-1 and 2-3 in two accumulators, folded in one fixed order.
inline double exp_diff_sum(const float* x, float* y, int64_t n, float m) {
  float32x4_t vm = vdupq_n_f32(m);
  float64x2_t a0 = vdupq_n_f64(0.0), a1 = vdupq_n_f64(0.0);
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    float32x4_t e = exp_diff(vld1q_f32(x + i), vm);
    if (y) vst1q_f32(y + i, e);
    a0 = vaddq_f64(a0, vcvt_f64_f32(vget_low_f32(e)));
    a1 = vaddq_f64(a1, vcvt_high_f64_f32(e));
  }
  if (i < n) {
    float t[4];
    // Padding lanes hold -inf: exp gives exactly 0.
    vst1q_f32(t, exp_diff(load_tail(x + i, n - i, -INFINITY), vm));
    for (int64_t j = 0; j < n - i; j++)
      if (y) y[i + j] = t[j];
    float32x4_t e = vld1q_f32(t);
    a0 = vaddq_f64(a0, vcvt_f64_f32(vget_low_f32(e)));
    a1 = vaddq_f64(a1, vcvt_high_f64_f32(e));
  }
  float64x2_t s = vaddq_f64(a0, a1);
  return vgetq_lane_f64(s, 0) + vgetq_lane_f64(s, 1);
}

}  // namespace

void softmax_f32_row_neon(const float* x, float* y, int64_t n) {
  float s = (float)exp_diff_sum(x, y, n, row_max(x, n));
  float32x4_t vs = vdupq_n_f32(s);
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) vst1q_f32(y + i, vdivq_f32(vld1q_f32(y + i), vs));
  for (; i < n; i++) y[i] /= s;
}

void log_softmax_f32_row_neon(const float* x, float* y, int64_t n) {
  float m = row_max(x, n);
  float lse = (float)std::log(exp_diff_sum(x, nullptr, n, m));
  float32x4_t vm = vdupq_n_f32(m), vl = vdupq_n_f32(lse);
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) vst1q_f32(y + i, vsubq_f32(vsubq_f32(vld1q_f32(x + i), vm), vl));
  for (; i < n; i++) y[i] = (x[i] - m) - lse;
}

}  // namespace ember::cpu
