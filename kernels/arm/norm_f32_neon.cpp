// Normalisation rows, AArch64 NEON (baseline ASIMD); drivers in norm_arm.cpp, generic kernels
// in kernels/generic/norm_f32.cpp, references: the RMSNormalization / LayerNormalization rows.
// Both keep the generic kernels' 16 lanes (lane l in register l / 4 (f32) or l / 2 (f64)), add
// the tail lane by lane and fold pairwise in the generic order. RMS: x^2 summed in double (exact
// products, fused or not), so every output equals the generic bits. Layer norm: float sums;
// d * d and the scale-and-bias step are fused (fmla), as g++ contracts the generic loops on
// aarch64; tests/cpp/test_arm_kernels.cpp compares both with the generic kernels' bits.
// Raw pointers and intrinsics only (see CMakeLists.txt).
#include <arm_neon.h>

#include <cmath>
#include <cstdint>

namespace ember::cpu {

void rms_norm_f32_row_neon(const float* x, const float* scale, float* y, int64_t n, float eps) {
  float64x2_t a[8];
#pragma GCC unroll 8
  for (int v = 0; v < 8; v++) a[v] = vdupq_n_f64(0.0);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
#pragma GCC unroll 4
    for (int q = 0; q < 4; q++) {
      float32x4_t f = vld1q_f32(x + i + 4 * q);
      float64x2_t lo = vcvt_f64_f32(vget_low_f32(f)), hi = vcvt_high_f64_f32(f);
      a[2 * q] = vfmaq_f64(a[2 * q], lo, lo);
      a[2 * q + 1] = vfmaq_f64(a[2 * q + 1], hi, hi);
    }
  }
  double acc[16];
#pragma GCC unroll 8
  for (int v = 0; v < 8; v++) vst1q_f64(acc + 2 * v, a[v]);
  for (int l = 0; i < n; i++, l++) acc[l] += (double)x[i] * (double)x[i];
  for (int w = 8; w > 0; w /= 2)
    for (int l = 0; l < w; l++) acc[l] += acc[l + w];
  double inv = 1.0 / std::sqrt(acc[0] / (double)n + (double)eps);
  if (!(inv >= 0x1p-126 && inv <= 0x1.fffffep127)) {
    // 1/rms is no normal float (|x| near FLT_MAX, eps 0 with tiny x, inf or NaN): the
    // reference's arithmetic, in double.
    for (int64_t j = 0; j < n; j++)
      y[j] = (float)((double)x[j] * inv * (scale ? (double)scale[j] : 1.0));
    return;
  }
  float fi = (float)inv;
  float32x4_t vi = vdupq_n_f32(fi);
  int64_t j = 0;
  if (scale) {
    for (; j + 4 <= n; j += 4)
      vst1q_f32(y + j, vmulq_f32(vmulq_f32(vld1q_f32(x + j), vi), vld1q_f32(scale + j)));
    for (; j < n; j++) y[j] = x[j] * fi * scale[j];
  } else {
    for (; j + 4 <= n; j += 4) vst1q_f32(y + j, vmulq_f32(vld1q_f32(x + j), vi));
    for (; j < n; j++) y[j] = x[j] * fi;
  }
}

void layer_norm_f32_row_neon(const float* x, const float* scale, const float* bias, float* y,
                             int64_t n, float eps, float* mean_out, float* inv_std_out) {
  float acc[16];
  float32x4_t a[4];
#pragma GCC unroll 4
  for (int q = 0; q < 4; q++) a[q] = vdupq_n_f32(0.0f);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
#pragma GCC unroll 4
    for (int q = 0; q < 4; q++) a[q] = vaddq_f32(a[q], vld1q_f32(x + i + 4 * q));
#pragma GCC unroll 4
  for (int q = 0; q < 4; q++) vst1q_f32(acc + 4 * q, a[q]);
  for (int l = 0; i < n; i++, l++) acc[l] += x[i];
  for (int w = 8; w > 0; w /= 2)
    for (int l = 0; l < w; l++) acc[l] += acc[l + w];
  float mean = acc[0] / (float)n;
  float32x4_t vm = vdupq_n_f32(mean);
#pragma GCC unroll 4
  for (int q = 0; q < 4; q++) a[q] = vdupq_n_f32(0.0f);
  i = 0;
  for (; i + 16 <= n; i += 16)
#pragma GCC unroll 4
    for (int q = 0; q < 4; q++) {
      float32x4_t d = vsubq_f32(vld1q_f32(x + i + 4 * q), vm);
      a[q] = vfmaq_f32(a[q], d, d);
    }
#pragma GCC unroll 4
  for (int q = 0; q < 4; q++) vst1q_f32(acc + 4 * q, a[q]);
  for (int l = 0; i < n; i++, l++) {
    float d = x[i] - mean;
    acc[l] = __builtin_fmaf(d, d, acc[l]);
  }
  for (int w = 8; w > 0; w /= 2)
    for (int l = 0; l < w; l++) acc[l] += acc[l + w];
  float inv = 1.0f / std::sqrt(acc[0] / (float)n + eps);
  float32x4_t vi = vdupq_n_f32(inv);
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) {
    float32x4_t t = vmulq_f32(vsubq_f32(vld1q_f32(x + j), vm), vi);
    vst1q_f32(y + j, bias ? vfmaq_f32(vld1q_f32(bias + j), t, vld1q_f32(scale + j))
                          : vmulq_f32(t, vld1q_f32(scale + j)));
  }
  for (; j < n; j++) {
    float t = (x[j] - mean) * inv;
    y[j] = bias ? __builtin_fmaf(t, scale[j], bias[j]) : t * scale[j];
  }
  if (mean_out) *mean_out = mean;
  if (inv_std_out) *inv_std_out = inv;
}

}  // namespace ember::cpu
