// AVX2+FMA f32 elementwise maps and row kernels, 8 lanes a step, tails by masked load/store.
// exp, tanh, sigmoid: the generic algorithms (kernels/generic/elementwise_f32.cpp) in vector
// form. erf and erf-Gelu share Phi(-a) = R(a) exp(-a^2 / 2) / 2, R a piecewise polynomial (8
// intervals, coefficients picked per lane with vpermps), a^2 split exactly by FMA; erf-Gelu
// stays in float, tanh-Gelu forms its exponent in float-float and rounds once from double.
// Softmax sums in double, LayerNorm in two float passes, RMSNorm x^2 in double, in a fixed
// lane order (batch invariant). References: OpDef rows (cpp/src/ops/ops_unary.cpp, ops_linalg.cpp); tests:
// tests/cpp/test_x86_kernels.cpp, test_rms_norm.cpp. Built with
// -mavx2 -mfma: raw pointers and intrinsics only, no ember header (op.h's inline functions would
// be emitted with AVX2); declared in kernels_x86.h (a mismatch fails to link: names are mangled).
#include <immintrin.h>
#include <math.h>
#include <stdint.h>

#include "kernels/x86/erfcx_table.h"

namespace ember::cpu {
namespace {

static inline __m256 v_set(float v) { return _mm256_set1_ps(v); }

// Lanes i < n of an 8-lane block (n may exceed 8).
static inline __m256i v_tail_mask(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n < 8 ? n : 8)),
                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

static inline __m256 v_abs(__m256 x) { return _mm256_andnot_ps(v_set(-0.0f), x); }
static inline __m256 v_copy_sign(__m256 mag, __m256 sign) {
  return _mm256_or_ps(v_abs(mag), _mm256_and_ps(sign, v_set(-0.0f)));
}
static inline __m256 v_is_nan(__m256 x) { return _mm256_cmp_ps(x, x, _CMP_UNORD_Q); }
// c ? a : b per lane (c a compare mask).
static inline __m256 v_select(__m256 c, __m256 a, __m256 b) { return _mm256_blendv_ps(b, a, c); }

// Lanes 0-3 / 4-7 widened to double, and back: tails that should round once.
static inline __m256d v_lo_pd(__m256 x) { return _mm256_cvtps_pd(_mm256_castps256_ps128(x)); }
static inline __m256d v_hi_pd(__m256 x) { return _mm256_cvtps_pd(_mm256_extractf128_ps(x, 1)); }
static inline __m256 v_from_pd(__m256d lo, __m256d hi) {
  return _mm256_insertf128_ps(_mm256_castps128_ps256(_mm256_cvtpd_ps(lo)), _mm256_cvtpd_ps(hi), 1);
}

// exp(r) for |r| <= ln2 / 2 by Cephes' polynomial: 1 + r + r^2 p(r), p of degree 5.
static inline __m256 v_exp_poly(__m256 r) {
  __m256 p = v_set(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, v_set(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, v_set(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, v_set(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, v_set(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, v_set(5.0000001201e-1f));
  return _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), v_set(1.0f));
}

// exp(x + xl) * 2^bias, <= 1 ulp, the generic exp_scaled: x = n ln2 + r, Cephes' degree-6
// polynomial, 2^(n + bias) applied as two normal halves so subnormal results round once.
// xl (|xl| <= ulp(x)) is a low part of the argument, added to r where it costs no rounding.
static inline __m256 v_exp_scaled(__m256 x, __m256 xl, int bias) {
  __m256 xc = _mm256_max_ps(x, v_set(-104.0f - 0.693147181f * (float)bias));
  xc = _mm256_min_ps(xc, v_set(89.0f));
  const __m256 round = v_set(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
  __m256 t = _mm256_fmadd_ps(xc, v_set(1.44269504088896341f), round);
  __m256 n = _mm256_sub_ps(t, round);
  __m256i ni = _mm256_add_epi32(
      _mm256_sub_epi32(_mm256_castps_si256(t), _mm256_castps_si256(round)),
      _mm256_set1_epi32(bias));
  __m256 r = _mm256_fnmadd_ps(n, v_set(0.693359375f), xc);
  r = _mm256_add_ps(_mm256_fnmadd_ps(n, v_set(-2.12194440e-4f), r), xl);
  __m256 p = v_exp_poly(r);
  __m256i n1 = _mm256_srai_epi32(ni, 1), n2 = _mm256_sub_epi32(ni, n1);
  const __m256i e127 = _mm256_set1_epi32(127);
  __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, e127), 23));
  __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, e127), 23));
  __m256 y = _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
  return v_select(v_is_nan(x), x, y);
}

static inline __m256 v_exp(__m256 x) { return v_exp_scaled(x, _mm256_setzero_ps(), 0); }

// tanh: Cephes' odd polynomial below 0.625, else 1 - 2 / (exp(2|x|) + 1).
static inline __m256 v_tanh(__m256 x) {
  __m256 ax = v_abs(x), z = _mm256_mul_ps(x, x);
  __m256 p = v_set(-5.70498872745e-3f);
  p = _mm256_fmadd_ps(p, z, v_set(2.06390887954e-2f));
  p = _mm256_fmadd_ps(p, z, v_set(-5.37397155531e-2f));
  p = _mm256_fmadd_ps(p, z, v_set(1.33314422036e-1f));
  p = _mm256_fmadd_ps(p, z, v_set(-3.33332819422e-1f));
  p = _mm256_fmadd_ps(_mm256_mul_ps(p, z), x, x);
  __m256 e = v_exp(_mm256_add_ps(ax, ax));
  __m256 big =
      _mm256_sub_ps(v_set(1.0f), _mm256_div_ps(v_set(2.0f), _mm256_add_ps(e, v_set(1.0f))));
  __m256 small = _mm256_cmp_ps(ax, v_set(0.625f), _CMP_LT_OQ);  // NaN: exp branch, stays NaN
  return v_copy_sign(v_select(small, p, big), x);
}

// 1 / (1 + exp(-x)) written with exp(-|x|) so that neither side overflows.
static inline __m256 v_sigmoid(__m256 x) {
  __m256 e = v_exp(_mm256_sub_ps(_mm256_setzero_ps(), v_abs(x)));
  __m256 num = v_select(_mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_GE_OQ), v_set(1.0f), e);
  return _mm256_div_ps(num, _mm256_add_ps(v_set(1.0f), e));
}

// R(a) = erfc(a / sqrt2) exp(a^2 / 2) for 0 <= a < 15: the table in erfcx_table.h.
static inline __m256 v_erfcx_div_sqrt2(__m256 a) {  // a in [0, 15)
  __m256i k = _mm256_sub_epi32(
      _mm256_srli_epi32(_mm256_castps_si256(_mm256_add_ps(a, v_set(1.0f))), 22),
      _mm256_set1_epi32(127 << 1));
  auto pick = [k](const float* c) { return _mm256_permutevar8x32_ps(_mm256_load_ps(c), k); };
  __m256 d = _mm256_sub_ps(a, pick(kErfcxCenter));
  __m256 p = pick(kErfcxC[7]);
  for (int j = 6; j >= 0; j--) p = _mm256_fmadd_ps(p, d, pick(kErfcxC[j]));
  p = _mm256_fmadd_ps(p, d, pick(kErfcxC0Lo));
  return _mm256_add_ps(p, pick(kErfcxC0Hi));
}

// erf: x + x r(x^2) below 0.875 (r degree 6, minimax, relative error < 1.2e-9), else
// 1 - erfc(|x|) with erfc(z) = R(z sqrt2) exp(-z^2); erfc < 0.22 there, so its rounding
// shrinks. |x| >= 4 gives 1.
static inline __m256 v_erf(__m256 x) {
  __m256 a = _mm256_min_ps(v_abs(x), v_set(4.0f));
  __m256 s = _mm256_mul_ps(a, a);
  __m256 r = v_set(8.66869668e-05f);
  r = _mm256_fmadd_ps(r, s, v_set(-0.000820745889f));
  r = _mm256_fmadd_ps(r, s, v_set(0.00520620635f));
  r = _mm256_fmadd_ps(r, s, v_set(-0.0268612467f));
  r = _mm256_fmadd_ps(r, s, v_set(0.112837233f));
  r = _mm256_fmadd_ps(r, s, v_set(-0.376126349f));
  r = _mm256_fmadd_ps(r, s, v_set(0.128379166f));
  __m256 small = _mm256_fmadd_ps(a, r, a);
  __m256 sl = _mm256_fmsub_ps(a, a, s);  // a^2 = s + sl
  const __m256 zero = _mm256_setzero_ps();
  __m256 e = v_exp_scaled(_mm256_sub_ps(zero, s), _mm256_sub_ps(zero, sl), 0);  // exp(-a^2)
  __m256 erfc = _mm256_mul_ps(v_erfcx_div_sqrt2(_mm256_mul_ps(a, v_set(1.41421354f))), e);
  __m256 big = _mm256_sub_ps(v_set(1.0f), erfc);
  __m256 y = v_select(_mm256_cmp_ps(a, v_set(0.875f), _CMP_LT_OQ), small, big);
  y = v_copy_sign(y, x);
  return v_select(v_is_nan(x), x, y);
}

// Gelu tails: beyond kGeluClamp, x Phi(x) (either form) is x, or 0 in float (-inf: NaN).
constexpr float kGeluClamp = 14.5f;

static inline __m256 v_gelu_tails(__m256 x, __m256 y) {
  y = v_select(_mm256_cmp_ps(x, v_set(kGeluClamp), _CMP_GT_OQ), x, y);
  y = v_select(_mm256_cmp_ps(x, v_set(-kGeluClamp), _CMP_LT_OQ),
               _mm256_mul_ps(x, _mm256_setzero_ps()), y);
  return v_select(v_is_nan(x), x, y);
}

// exp(h + l) 2^32 for h in [-105.2, 0], |l| <= ulp(h): v_exp_scaled without its clamps, NaN
// lane or split scale, which that range never needs (n + 32 >= -120: one normal scale).
static inline __m256 v_exp_neg_scaled32(__m256 h, __m256 l) {
  const __m256 round = v_set(12582912.0f);  // 1.5 * 2^23
  __m256 t = _mm256_fmadd_ps(h, v_set(1.44269504088896341f), round);
  __m256 n = _mm256_sub_ps(t, round);
  __m256 r = _mm256_fnmadd_ps(n, v_set(0.693359375f), h);
  r = _mm256_add_ps(_mm256_fnmadd_ps(n, v_set(-2.12194440e-4f), r), l);
  __m256 p = v_exp_poly(r);
  // 2^(n + 32): t's low bits hold n + round's; one integer subtract rebiases them.
  const __m256i k = _mm256_set1_epi32(0x4B400000 - 32 - 127);  // bits of round, - bias - 127
  __m256i e = _mm256_slli_epi32(_mm256_sub_epi32(_mm256_castps_si256(t), k), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

// erf-Gelu = x Phi(x), all in float: Phi(-a) = R(a) exp(-a^2 / 2) / 2 (a = |x| <= 14.5),
// -a^2 / 2 = h + l exactly (FMA), exp scaled by 2^32 so that it stays normal. x R = u + ul
// exactly, so x Phi(-a) 2^33 = (u + ul) e rounds once; x < 0 scales it by 2^-33 (rounding once
// more only where it is subnormal), x >= 0 takes x - x Phi(-x) (that term < x / 2: its error
// shrinks). Max 2 ulp over every 3rd float (tests/cpp/test_x86_kernels.cpp). |x| > 14.5: x, or
// x * 0 (-0, and NaN for -inf), as the double reference rounds; NaN passes through u.
static inline __m256 v_gelu_erf(__m256 x) {
  __m256 ax = v_abs(x);
  __m256 a = _mm256_min_ps(ax, v_set(kGeluClamp));
  __m256 na = _mm256_mul_ps(a, v_set(-0.5f));
  __m256 h = _mm256_mul_ps(na, a);
  __m256 l = _mm256_fmsub_ps(na, a, h);
  __m256 e = v_exp_neg_scaled32(h, l);
  __m256 r = v_erfcx_div_sqrt2(a);
  __m256 u = _mm256_mul_ps(x, r);
  __m256 ul = _mm256_fmsub_ps(x, r, u);
  __m256 xp = _mm256_fmadd_ps(u, e, _mm256_mul_ps(ul, e));  // x Phi(-a) 2^33
  __m256 neg = _mm256_mul_ps(xp, v_set(0x1p-33f));
  __m256 pos = _mm256_fnmadd_ps(xp, v_set(0x1p-33f), x);
  __m256 y = v_select(_mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_GE_OQ), pos, neg);
  __m256 tail = v_select(_mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_GT_OQ), x,
                         _mm256_mul_ps(x, _mm256_setzero_ps()));
  return v_select(_mm256_cmp_ps(ax, v_set(kGeluClamp), _CMP_GT_OQ), tail, y);
}

// x sigmoid(v) from x and e = exp(-|v|) 2^32, in double so that it rounds once.
static inline __m256d v_gelu_tanh_pd(__m256d x, __m256d e) {
  __m256d es = _mm256_mul_pd(e, _mm256_set1_pd(0x1p-32));
  __m256d q = _mm256_div_pd(x, _mm256_add_pd(_mm256_set1_pd(1.0), es));  // x sigmoid(|v|)
  __m256d pos = _mm256_cmp_pd(x, _mm256_setzero_pd(), _CMP_GE_OQ);
  return _mm256_blendv_pd(_mm256_mul_pd(q, es), q, pos);
}

// tanh-Gelu = x sigmoid(v), v = k x + k2 x^3 (k = 2 sqrt(2/pi), k2 = 0.044715 k). v reaches
// ~200, so a float v would lose ~|v| ulp in exp(-|v|): v = vh + vl is formed in float-float
// (FMA products, a two-sum) and exp gets -|v| as -|vh| plus a low part.
static inline __m256 v_gelu_tanh(__m256 x) {
  __m256 xc = _mm256_min_ps(_mm256_max_ps(x, v_set(-kGeluClamp)), v_set(kGeluClamp));
  const __m256 kh = v_set(1.59576917f), kl = v_set(-4.53406805e-08f);
  const __m256 k2h = v_set(0.0713548139f), k2l = v_set(2.39883247e-09f);
  __m256 x2 = _mm256_mul_ps(xc, xc);
  __m256 x2l = _mm256_fmsub_ps(xc, xc, x2);
  __m256 ph = _mm256_mul_ps(k2h, x2);
  __m256 pl = _mm256_fmsub_ps(k2h, x2, ph);
  __m256 wh = _mm256_add_ps(kh, ph);  // two-sum: wh + ws == kh + ph exactly
  __m256 bv = _mm256_sub_ps(wh, kh);
  __m256 ws = _mm256_add_ps(_mm256_sub_ps(kh, _mm256_sub_ps(wh, bv)), _mm256_sub_ps(ph, bv));
  __m256 wl = _mm256_add_ps(_mm256_add_ps(ws, pl),
                            _mm256_add_ps(_mm256_fmadd_ps(k2h, x2l, _mm256_mul_ps(k2l, x2)), kl));
  __m256 vh = _mm256_mul_ps(xc, wh);  // w = wh + wl = k + k2 x^2, v = x w
  __m256 vl = _mm256_fmadd_ps(xc, wl, _mm256_fmsub_ps(xc, wh, vh));
  __m256 flip = _mm256_andnot_ps(vh, v_set(-0.0f));  // -|v| = -|vh| + (vh < 0 ? vl : -vl)
  __m256 e = v_exp_scaled(_mm256_or_ps(vh, v_set(-0.0f)), _mm256_xor_ps(vl, flip), 32);
  __m256 y = v_from_pd(v_gelu_tanh_pd(v_lo_pd(xc), v_lo_pd(e)),
                       v_gelu_tanh_pd(v_hi_pd(xc), v_hi_pd(e)));
  return v_gelu_tails(x, y);
}

// y[i] = f(x[i]); x == y is allowed (each block is loaded before it is stored). Two blocks
// a step: f is one long dependency chain, two independent ones keep the FMA ports busy.
template <class F>
static inline void v_map(const float* x, float* y, int64_t n, F f) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m256 a = f(_mm256_loadu_ps(x + i)), b = f(_mm256_loadu_ps(x + i + 8));
    _mm256_storeu_ps(y + i, a);
    _mm256_storeu_ps(y + i + 8, b);
  }
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, f(_mm256_loadu_ps(x + i)));
  if (i < n) {
    __m256i m = v_tail_mask(n - i);
    _mm256_maskstore_ps(y + i, m, f(_mm256_maskload_ps(x + i, m)));
  }
}

// Sums of 4 accumulators, always folded in the same order.
static inline float v_fold(__m256 a0, __m256 a1, __m256 a2, __m256 a3) {
  __m256 s = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
  __m128 q = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
  q = _mm_add_ps(q, _mm_movehl_ps(q, q));
  q = _mm_add_ss(q, _mm_movehdup_ps(q));
  return _mm_cvtss_f32(q);
}

// sum of f(x[i]) over a row in 32 fixed lanes; f(0-padding) is masked out of the tail.
template <class F>
static inline float v_row_sum(const float* x, int64_t n, F f) {
  __m256 a[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                 _mm256_setzero_ps()};
  int64_t i = 0;
  for (; i + 32 <= n; i += 32)
    for (int l = 0; l < 4; l++) a[l] = _mm256_add_ps(a[l], f(_mm256_loadu_ps(x + i + 8 * l)));
  for (int l = 0; i < n; i += 8, l++) {
    __m256i m = v_tail_mask(n - i);
    __m256 v = _mm256_and_ps(f(_mm256_maskload_ps(x + i, m)), _mm256_castsi256_ps(m));
    a[l] = _mm256_add_ps(a[l], v);
  }
  return v_fold(a[0], a[1], a[2], a[3]);
}

// exp(x - m) with x - m = d + err exactly (two-sum): a rounded d alone would cost up to
// |d| / 2 ulp (32 at d = -64). A -inf x gives 0 (its NaN err is dropped).
static inline __m256 v_exp_diff(__m256 x, __m256 m) {
  __m256 d = _mm256_sub_ps(x, m);
  __m256 bv = _mm256_sub_ps(d, x);
  __m256 err = _mm256_sub_ps(_mm256_sub_ps(x, _mm256_sub_ps(d, bv)), _mm256_add_ps(m, bv));
  err = _mm256_and_ps(err, _mm256_cmp_ps(err, err, _CMP_ORD_Q));
  return v_exp_scaled(d, err, 0);
}

// y[i] = f(x[i]) (y == nullptr: not stored) and the sum of all f(x[i]) in double, in 8 fixed
// lanes: softmax's denominator then costs half an ulp, whatever the row length.
template <class F>
static inline double v_map_sum_f64(const float* x, float* y, int64_t n, F f) {
  __m256d a0 = _mm256_setzero_pd(), a1 = _mm256_setzero_pd();
  auto add = [&a0, &a1](__m256 v) {
    a0 = _mm256_add_pd(a0, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
    a1 = _mm256_add_pd(a1, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
  };
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 v = f(_mm256_loadu_ps(x + i));
    if (y) _mm256_storeu_ps(y + i, v);
    add(v);
  }
  if (i < n) {
    __m256i m = v_tail_mask(n - i);
    __m256 v = _mm256_and_ps(f(_mm256_maskload_ps(x + i, m)), _mm256_castsi256_ps(m));
    if (y) _mm256_maskstore_ps(y + i, m, v);
    add(v);
  }
  __m256d s = _mm256_add_pd(a0, a1);
  __m128d q = _mm_add_pd(_mm256_castpd256_pd128(s), _mm256_extractf128_pd(s, 1));
  return _mm_cvtsd_f64(_mm_add_sd(q, _mm_unpackhi_pd(q, q)));
}

// Row max; NaN lanes are skipped (max(x, acc) keeps acc), as in the generic kernel: a NaN
// still makes the whole row NaN through exp(NaN - max).
static inline float v_row_max(const float* x, int64_t n) {
  const __m256 ninf = v_set(-__builtin_inff());
  __m256 acc = ninf;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) acc = _mm256_max_ps(_mm256_loadu_ps(x + i), acc);
  if (i < n) {
    __m256i m = v_tail_mask(n - i);
    acc = _mm256_max_ps(v_select(_mm256_castsi256_ps(m), _mm256_maskload_ps(x + i, m), ninf), acc);
  }
  __m128 q = _mm_max_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
  q = _mm_max_ps(q, _mm_movehl_ps(q, q));
  q = _mm_max_ss(q, _mm_movehdup_ps(q));
  return _mm_cvtss_f32(q);
}

// Sum of x[i]^2 in double (each square exact, no overflow), 16 fixed lanes: 16 elements a
// step into four accumulators, the tail (< 16, masked) into the first two or all four.
static inline double v_row_sum_sq_f64(const float* x, int64_t n) {
  __m256d a[4] = {_mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd(),
                  _mm256_setzero_pd()};
  auto add = [&a](__m256 v, int l) {
    __m256d lo = v_lo_pd(v), hi = v_hi_pd(v);
    a[l] = _mm256_fmadd_pd(lo, lo, a[l]);
    a[l + 1] = _mm256_fmadd_pd(hi, hi, a[l + 1]);
  };
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    add(_mm256_loadu_ps(x + i), 0);
    add(_mm256_loadu_ps(x + i + 8), 2);
  }
  for (int l = 0; i < n; i += 8, l += 2) add(_mm256_maskload_ps(x + i, v_tail_mask(n - i)), l);
  __m256d s = _mm256_add_pd(_mm256_add_pd(a[0], a[1]), _mm256_add_pd(a[2], a[3]));
  __m128d q = _mm_add_pd(_mm256_castpd256_pd128(s), _mm256_extractf128_pd(s, 1));
  return _mm_cvtsd_f64(_mm_add_sd(q, _mm_unpackhi_pd(q, q)));
}

}  // namespace

void exp_f32_array_avx2(const float* x, float* y, int64_t n) { v_map(x, y, n, v_exp); }
void tanh_f32_array_avx2(const float* x, float* y, int64_t n) { v_map(x, y, n, v_tanh); }
void sigmoid_f32_array_avx2(const float* x, float* y, int64_t n) { v_map(x, y, n, v_sigmoid); }
void erf_f32_array_avx2(const float* x, float* y, int64_t n) { v_map(x, y, n, v_erf); }
void gelu_erf_f32_array_avx2(const float* x, float* y, int64_t n) { v_map(x, y, n, v_gelu_erf); }
void gelu_tanh_f32_array_avx2(const float* x, float* y, int64_t n) {
  v_map(x, y, n, v_gelu_tanh);
}

void softmax_f32_row_avx2(const float* x, float* y, int64_t n) {
  __m256 mx = v_set(v_row_max(x, n));
  auto e = [mx](__m256 v) { return v_exp_diff(v, mx); };
  __m256 s = v_set((float)v_map_sum_f64(x, y, n, e));
  v_map(y, y, n, [s](__m256 v) { return _mm256_div_ps(v, s); });
}

float attention_scores_row_avx2(float* s, int64_t n, float scale, bool div, const float* mask,
                                int64_t mask_t) {
  __m256 vs = v_set(scale), vmax = v_set(-INFINITY);
  // s * scale + mask as one FMA, written out: left to the compiler's contraction it was an FMA
  // in the main loop but not in the tail with a broadcast mask value (the AVX-512 row, which
  // must give these bits, writes the same FMA).
  auto scaled = [&](__m256 v, const float* m, __m256i lanes, bool tail) {
    if (!mask) return div ? _mm256_div_ps(v, vs) : _mm256_mul_ps(v, vs);
    __m256 mv = mask_t == 0 ? v_set(*m) : tail ? _mm256_maskload_ps(m, lanes) : _mm256_loadu_ps(m);
    return div ? _mm256_add_ps(_mm256_div_ps(v, vs), mv) : _mm256_fmadd_ps(v, vs, mv);
  };
  int64_t i = 0;
  __m256i all = _mm256_set1_epi32(-1);
  for (; i + 8 <= n; i += 8) {
    __m256 v = scaled(_mm256_loadu_ps(s + i), mask ? mask + i * mask_t : nullptr, all, false);
    _mm256_storeu_ps(s + i, v);
    vmax = _mm256_max_ps(v, vmax);  // a NaN score leaves the max alone, as std::max does
  }
  if (i < n) {
    __m256i lanes = v_tail_mask(n - i);
    __m256 v = scaled(_mm256_maskload_ps(s + i, lanes), mask ? mask + i * mask_t : nullptr, lanes, true);
    _mm256_maskstore_ps(s + i, lanes, v);
    vmax = _mm256_max_ps(v_select(_mm256_castsi256_ps(lanes), v, v_set(-INFINITY)), vmax);
  }
  float lane[8];
  _mm256_storeu_ps(lane, vmax);
  float mx = lane[0];
  for (int l = 1; l < 8; l++) mx = lane[l] > mx ? lane[l] : mx;
  __m256 vm = v_set(mx), sum = _mm256_setzero_ps();
  for (i = 0; i + 8 <= n; i += 8) {
    __m256 e = v_exp(_mm256_sub_ps(_mm256_loadu_ps(s + i), vm));
    _mm256_storeu_ps(s + i, e);
    sum = _mm256_add_ps(sum, e);
  }
  if (i < n) {
    __m256i lanes = v_tail_mask(n - i);
    __m256 e = v_exp(_mm256_sub_ps(_mm256_maskload_ps(s + i, lanes), vm));
    _mm256_maskstore_ps(s + i, lanes, e);
    sum = _mm256_add_ps(sum, v_select(_mm256_castsi256_ps(lanes), e, _mm256_setzero_ps()));
  }
  _mm256_storeu_ps(lane, sum);
  float total = 0.0f;
  for (int l = 0; l < 8; l++) total += lane[l];
  return total;
}

void log_softmax_f32_row_avx2(const float* x, float* y, int64_t n) {
  __m256 mx = v_set(v_row_max(x, n));
  auto e = [mx](__m256 v) { return v_exp(_mm256_sub_ps(v, mx)); };
  __m256 lse = v_set((float)log(v_map_sum_f64(x, nullptr, n, e)));
  v_map(x, y, n, [mx, lse](__m256 v) { return _mm256_sub_ps(_mm256_sub_ps(v, mx), lse); });
}

void layer_norm_f32_row_avx2(const float* x, const float* scale, const float* bias, float* y,
                             int64_t n, float eps, float* mean_out, float* inv_std_out) {
  float mean = v_row_sum(x, n, [](__m256 v) { return v; }) / (float)n;
  __m256 vm = v_set(mean);
  float var = v_row_sum(x, n, [vm](__m256 v) {
                __m256 d = _mm256_sub_ps(v, vm);
                return _mm256_mul_ps(d, d);
              }) / (float)n;
  float inv = 1.0f / _mm_cvtss_f32(_mm_sqrt_ss(_mm_set_ss(var + eps)));
  __m256 vi = v_set(inv);
  auto norm = [vm, vi](__m256 v, __m256 s, __m256 b) {
    return _mm256_fmadd_ps(_mm256_mul_ps(_mm256_sub_ps(v, vm), vi), s, b);
  };
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 b = bias ? _mm256_loadu_ps(bias + i) : _mm256_setzero_ps();
    _mm256_storeu_ps(y + i, norm(_mm256_loadu_ps(x + i), _mm256_loadu_ps(scale + i), b));
  }
  if (i < n) {
    __m256i m = v_tail_mask(n - i);
    __m256 b = bias ? _mm256_maskload_ps(bias + i, m) : _mm256_setzero_ps();
    _mm256_maskstore_ps(y + i, m,
                        norm(_mm256_maskload_ps(x + i, m), _mm256_maskload_ps(scale + i, m), b));
  }
  if (mean_out) *mean_out = mean;
  if (inv_std_out) *inv_std_out = inv;
}

void rms_norm_f32_row_avx2(const float* x, const float* scale, float* y, int64_t n, float eps) {
  double inv = 1.0 / sqrt(v_row_sum_sq_f64(x, n) / (double)n + (double)eps);
  if (!(inv >= 0x1p-126 && inv <= 0x1.fffffep127)) {
    // 1/rms is no normal float (|x| near FLT_MAX, eps 0 with tiny x, inf or NaN): the
    // reference's arithmetic, in double.
    for (int64_t j = 0; j < n; j++)
      y[j] = (float)((double)x[j] * inv * (scale ? (double)scale[j] : 1.0));
    return;
  }
  __m256 vi = v_set((float)inv);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + i), vi);
    _mm256_storeu_ps(y + i, scale ? _mm256_mul_ps(v, _mm256_loadu_ps(scale + i)) : v);
  }
  if (i < n) {
    __m256i m = v_tail_mask(n - i);
    __m256 v = _mm256_mul_ps(_mm256_maskload_ps(x + i, m), vi);
    _mm256_maskstore_ps(y + i, m, scale ? _mm256_mul_ps(v, _mm256_maskload_ps(scale + i, m)) : v);
  }
}

}  // namespace ember::cpu
