// AVX-512 f32 rows for the bf16 kernels' fp32 parts (kernels/x86/gemm_bf16_x86.cpp): erf-Gelu
// for FusedMatMul epilogues and the attention score row (scale, mask, exp). Each is
// elementwise_avx2.cpp's algorithm op for op on 16 lanes: erf-Gelu has the AVX2 row's bits;
// the score row sums its exponentials in another lane order, and g++ may fuse its scale and
// mask add into an FMA here or there (tests/cpp/test_gemm_bf16.cpp compares the two).
// References: the Gelu and Attention OpDef rows.
// Raw pointers and intrinsics only (see CMakeLists.txt).
// NOTE: g++ 12 warns that the AVX-512 headers' own _mm512_undefined_* operands "may be used
// uninitialized" once inlined here (GCC PR 105593): a false positive, silenced for this file.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#include <math.h>
#include <stdint.h>

namespace ember::cpu {
namespace {

static inline __m512 w_set(float v) { return _mm512_set1_ps(v); }
static inline __mmask16 w_tail(int64_t n) { return (__mmask16)((1u << (n < 16 ? n : 16)) - 1); }
// c ? a : b per lane.
static inline __m512 w_select(__mmask16 c, __m512 a, __m512 b) {
  return _mm512_mask_blend_ps(c, b, a);
}
static inline __mmask16 w_is_nan(__m512 x) { return _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q); }

// exp(r) for |r| <= ln2 / 2 (Cephes' polynomial, as elementwise_avx2.cpp's v_exp_poly).
static inline __m512 w_exp_poly(__m512 r) {
  __m512 p = w_set(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, w_set(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, w_set(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, w_set(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, w_set(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, w_set(5.0000001201e-1f));
  return _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), w_set(1.0f));
}

// exp(x), <= 1 ulp (v_exp_scaled with no low part and bias 0).
static inline __m512 w_exp(__m512 x) {
  __m512 xc = _mm512_max_ps(x, w_set(-104.0f));
  xc = _mm512_min_ps(xc, w_set(89.0f));
  const __m512 round = w_set(12582912.0f);  // 1.5 * 2^23
  __m512 t = _mm512_fmadd_ps(xc, w_set(1.44269504088896341f), round);
  __m512 n = _mm512_sub_ps(t, round);
  __m512i ni = _mm512_sub_epi32(_mm512_castps_si512(t), _mm512_castps_si512(round));
  __m512 r = _mm512_fnmadd_ps(n, w_set(0.693359375f), xc);
  r = _mm512_add_ps(_mm512_fnmadd_ps(n, w_set(-2.12194440e-4f), r), _mm512_setzero_ps());
  __m512 p = w_exp_poly(r);
  __m512i n1 = _mm512_srai_epi32(ni, 1), n2 = _mm512_sub_epi32(ni, n1);
  const __m512i e127 = _mm512_set1_epi32(127);
  __m512 s1 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(n1, e127), 23));
  __m512 s2 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(n2, e127), 23));
  __m512 y = _mm512_mul_ps(_mm512_mul_ps(p, s1), s2);
  return w_select(w_is_nan(x), x, y);
}

// R(a) = erfc(a / sqrt2) exp(a^2 / 2), 0 <= a < 15: elementwise_avx2.cpp's piecewise
// polynomial and coefficients (8 intervals picked per lane).
alignas(32) static const float kErfcxCenter[8] = {0.25f, 0.75f, 1.5f, 2.5f,
                                                  4.0f,  6.0f,  9.0f, 13.0f};
alignas(32) static const float kErfcxC0Hi[8] = {
    0.828064203f, 0.60046494f, 0.41156134f, 0.28266266f,
    0.188821286f, 0.129558623f, 0.0875975788f, 0.0610188283f};
alignas(32) static const float kErfcxC0Lo[8] = {
    2.63255417e-09f, -1.53913149e-08f, -6.15057472e-09f, 2.87681567e-09f,
    -3.39211792e-09f, 5.81080073e-09f, -1.0445389e-09f, 6.8739725e-10f};
alignas(32) static const float kErfcxC[8][8] = {  // kErfcxC[j - 1]: coefficient of d^j
    {-0.590868533f, -0.347535878f, -0.180542558f, -0.091227904f, -0.0425994284f, -0.0205327887f,
     -0.00950636063f, -0.00463978387f},
    {0.340173572f, 0.169906527f, 0.0703737512f, 0.0272964519f, 0.00921178143f, 0.00318094762f,
     0.001020164f, 0.000350818969f},
    {-0.168605924f, -0.0733674914f, -0.0249940641f, -0.00766226137f, -0.00191746699f,
     -0.000482369971f, -0.000108298278f, -2.63792281e-05f},
    {0.0745018795f, 0.0287184883f, 0.0082206158f, 0.00203519431f, 0.000385507417f, 7.16852592e-05f,
     1.13756496e-05f, 1.97273675e-06f},
    {-0.0300681833f, -0.0104001928f, -0.00253127934f, -0.000514759216f, -7.49558167e-05f,
     -1.04440187e-05f, -1.17990908e-06f, -1.46614966e-07f},
    {0.011270863f, 0.00353533379f, 0.000737317372f, 0.000124713406f, 1.41890105e-05f,
     1.49572588e-06f, 1.21634912e-07f, 1.08469136e-08f},
    {-0.00327973324f, -0.000808274955f, -0.000211282459f, -2.96887083e-05f, -2.79113669e-06f,
     -2.19807134e-07f, -1.34949829e-08f, -8.38689285e-10f},
    {0.000366955734f, -5.64469628e-05f, 5.43093156e-05f, 6.54102178e-06f, 4.92597053e-07f,
     3.01550394e-08f, 1.34001676e-09f, 6.15643231e-11f},
};

// An 8-entry table in the low half of a zmm; indexes are 0..7, so the high half is never read.
static inline __m512 w_pick(const float* c, __m512i k) {
  return _mm512_permutexvar_ps(k, _mm512_castps256_ps512(_mm256_load_ps(c)));
}

static inline __m512 w_erfcx_div_sqrt2(__m512 a) {  // a in [0, 15)
  __m512i k = _mm512_sub_epi32(
      _mm512_srli_epi32(_mm512_castps_si512(_mm512_add_ps(a, w_set(1.0f))), 22),
      _mm512_set1_epi32(127 << 1));
  __m512 d = _mm512_sub_ps(a, w_pick(kErfcxCenter, k));
  __m512 p = w_pick(kErfcxC[7], k);
  for (int j = 6; j >= 0; j--) p = _mm512_fmadd_ps(p, d, w_pick(kErfcxC[j], k));
  p = _mm512_fmadd_ps(p, d, w_pick(kErfcxC0Lo, k));
  return _mm512_add_ps(p, w_pick(kErfcxC0Hi, k));
}

constexpr float kGeluClamp = 14.5f;

// exp(h + l) 2^32 for h in [-105.2, 0], |l| <= ulp(h) (v_exp_neg_scaled32).
static inline __m512 w_exp_neg_scaled32(__m512 h, __m512 l) {
  const __m512 round = w_set(12582912.0f);  // 1.5 * 2^23
  __m512 t = _mm512_fmadd_ps(h, w_set(1.44269504088896341f), round);
  __m512 n = _mm512_sub_ps(t, round);
  __m512 r = _mm512_fnmadd_ps(n, w_set(0.693359375f), h);
  r = _mm512_add_ps(_mm512_fnmadd_ps(n, w_set(-2.12194440e-4f), r), l);
  __m512 p = w_exp_poly(r);
  const __m512i k = _mm512_set1_epi32(0x4B400000 - 32 - 127);
  __m512i e = _mm512_slli_epi32(_mm512_sub_epi32(_mm512_castps_si512(t), k), 23);
  return _mm512_mul_ps(p, _mm512_castsi512_ps(e));
}

// erf-Gelu = x Phi(x), all in float (v_gelu_erf: Phi(-a) = R(a) exp(-a^2 / 2) / 2).
static inline __m512 w_gelu_erf(__m512 x) {
  __m512 ax = _mm512_abs_ps(x);
  __m512 a = _mm512_min_ps(ax, w_set(kGeluClamp));
  __m512 na = _mm512_mul_ps(a, w_set(-0.5f));
  __m512 h = _mm512_mul_ps(na, a);
  __m512 l = _mm512_fmsub_ps(na, a, h);
  __m512 e = w_exp_neg_scaled32(h, l);
  __m512 r = w_erfcx_div_sqrt2(a);
  __m512 u = _mm512_mul_ps(x, r);
  __m512 ul = _mm512_fmsub_ps(x, r, u);
  __m512 xp = _mm512_fmadd_ps(u, e, _mm512_mul_ps(ul, e));  // x Phi(-a) 2^33
  __m512 neg = _mm512_mul_ps(xp, w_set(0x1p-33f));
  __m512 pos = _mm512_fnmadd_ps(xp, w_set(0x1p-33f), x);
  const __m512 zero = _mm512_setzero_ps();
  __m512 y = w_select(_mm512_cmp_ps_mask(x, zero, _CMP_GE_OQ), pos, neg);
  __m512 tail = w_select(_mm512_cmp_ps_mask(x, zero, _CMP_GT_OQ), x, _mm512_mul_ps(x, zero));
  return w_select(_mm512_cmp_ps_mask(ax, w_set(kGeluClamp), _CMP_GT_OQ), tail, y);
}

}  // namespace

void gelu_erf_f32_array_avx512(const float* x, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, w_gelu_erf(_mm512_loadu_ps(x + i)));
  if (i < n) {
    __mmask16 m = w_tail(n - i);
    _mm512_mask_storeu_ps(y + i, m, w_gelu_erf(_mm512_maskz_loadu_ps(m, x + i)));
  }
}

float attention_scores_row_avx512(float* s, int64_t n, float scale, bool div, const float* mask,
                                  int64_t mask_t) {
  const __m512 vs = w_set(scale), ninf = w_set(-INFINITY);
  __m512 vmax = ninf;
  for (int64_t i = 0; i < n; i += 16) {
    __mmask16 m = w_tail(n - i);
    __m512 v = _mm512_maskz_loadu_ps(m, s + i);
    v = div ? _mm512_div_ps(v, vs) : _mm512_mul_ps(v, vs);
    if (mask) {
      const float* mi = mask + i * mask_t;
      v = _mm512_add_ps(v, mask_t == 0 ? w_set(*mi) : _mm512_maskz_loadu_ps(m, mi));
    }
    _mm512_mask_storeu_ps(s + i, m, v);
    vmax = _mm512_max_ps(w_select(m, v, ninf), vmax);  // a NaN score leaves the max alone
  }
  // Pairwise trees across the lanes (a row is short: a 16-step scalar chain cost as much as
  // the row's exps).
  const __m512 vm = w_set(_mm512_reduce_max_ps(vmax));
  __m512 sum = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) {
    __mmask16 m = w_tail(n - i);
    __m512 e = w_exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, s + i), vm));
    _mm512_mask_storeu_ps(s + i, m, e);
    sum = _mm512_add_ps(sum, w_select(m, e, _mm512_setzero_ps()));
  }
  return _mm512_reduce_add_ps(sum);
}

}  // namespace ember::cpu
