// AVX-512 row kernels of the GEMM drivers (gemm_x86.cpp): erf-Gelu rows for FusedMatMul's
// epilogue and Attention's score row, 16 lanes a step, tails by masked load/store. Each is the
// AVX2 kernel's algorithm (elementwise_avx2.cpp, which documents it) with the same operations
// in the same order, so the same bits (tested: the compiler may contract a multiply and an add
// into an FMA, so both rows write their FMAs out); the score row keeps AVX2's 8 partial sums.
// References: the Gelu and Attention OpDef rows (cpp/src/ops/); tests:
// tests/cpp/test_gemm_avx512.cpp.
// Raw pointers and intrinsics only, no ember header (see CMakeLists.txt).
#include <immintrin.h>
#include <math.h>
#include <stdint.h>

#include "kernels/x86/erfcx_table.h"

// NOTE: GCC 12's AVX-512 intrinsics start from _mm512_undefined_*() (a self-initialised
// variable), which -W(maybe-)uninitialized reports once they are inlined into masked code.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace ember::cpu {
namespace {

static inline __m512 z_set(float v) { return _mm512_set1_ps(v); }

// Lanes i < n of a 16-lane block (n may exceed 16).
static inline __mmask16 z_tail_mask(int64_t n) {
  return n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1);
}

static inline __m512 z_abs(__m512 x) {
  return _mm512_castsi512_ps(
      _mm512_andnot_si512(_mm512_castps_si512(z_set(-0.0f)), _mm512_castps_si512(x)));
}

// exp(r) for |r| <= ln2 / 2: elementwise_avx2.cpp's v_exp_poly.
static inline __m512 z_exp_poly(__m512 r) {
  __m512 p = z_set(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, z_set(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, z_set(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, z_set(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, z_set(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, z_set(5.0000001201e-1f));
  return _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), z_set(1.0f));
}

// exp(x) on R vectors in lockstep, <= 1 ulp: v_exp_scaled(x, 0, 0) (two normal halves of 2^n,
// NaN passes through). Step by step, R independent chains side by side in the instruction
// stream: R whole exps one after another filled the scheduler with one chain's waiting steps.
template <int R>
static inline void z_exp_n(__m512* x) {
  const __m512 round = z_set(12582912.0f);  // 1.5 * 2^23
  const __m512i e127 = _mm512_set1_epi32(127);
  __m512 t[R], n[R], r[R], p[R], r2[R];
  __m512i ni[R];
  for (int j = 0; j < R; j++)  // r = xc, the clamped x
    r[j] = _mm512_min_ps(_mm512_max_ps(x[j], z_set(-104.0f)), z_set(89.0f));
  for (int j = 0; j < R; j++) t[j] = _mm512_fmadd_ps(r[j], z_set(1.44269504088896341f), round);
  for (int j = 0; j < R; j++) n[j] = _mm512_sub_ps(t[j], round);
  for (int j = 0; j < R; j++)
    ni[j] = _mm512_sub_epi32(_mm512_castps_si512(t[j]), _mm512_castps_si512(round));
  for (int j = 0; j < R; j++) r[j] = _mm512_fnmadd_ps(n[j], z_set(0.693359375f), r[j]);
  for (int j = 0; j < R; j++)
    r[j] = _mm512_add_ps(_mm512_fnmadd_ps(n[j], z_set(-2.12194440e-4f), r[j]), _mm512_setzero_ps());
  for (int j = 0; j < R; j++) p[j] = z_set(1.9875691500e-4f);
  for (int j = 0; j < R; j++) p[j] = _mm512_fmadd_ps(p[j], r[j], z_set(1.3981999507e-3f));
  for (int j = 0; j < R; j++) p[j] = _mm512_fmadd_ps(p[j], r[j], z_set(8.3334519073e-3f));
  for (int j = 0; j < R; j++) p[j] = _mm512_fmadd_ps(p[j], r[j], z_set(4.1665795894e-2f));
  for (int j = 0; j < R; j++) p[j] = _mm512_fmadd_ps(p[j], r[j], z_set(1.6666665459e-1f));
  for (int j = 0; j < R; j++) p[j] = _mm512_fmadd_ps(p[j], r[j], z_set(5.0000001201e-1f));
  for (int j = 0; j < R; j++) r2[j] = _mm512_mul_ps(r[j], r[j]);
  for (int j = 0; j < R; j++) p[j] = _mm512_add_ps(_mm512_fmadd_ps(p[j], r2[j], r[j]), z_set(1.0f));
  for (int j = 0; j < R; j++) {
    __m512i n1 = _mm512_srai_epi32(ni[j], 1), n2 = _mm512_sub_epi32(ni[j], n1);
    __m512 s1 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(n1, e127), 23));
    __m512 s2 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(n2, e127), 23));
    __m512 y = _mm512_mul_ps(_mm512_mul_ps(p[j], s1), s2);
    x[j] = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x[j], x[j], _CMP_UNORD_Q), y, x[j]);
  }
}

// exp(x), <= 1 ulp: v_exp_scaled(x, 0, 0) (two normal halves of 2^n, NaN passes through).
static inline __m512 z_exp(__m512 x) {
  z_exp_n<1>(&x);
  return x;
}

// exp(h + l) 2^32 for h in [-105.2, 0]: v_exp_neg_scaled32.
static inline __m512 z_exp_neg_scaled32(__m512 h, __m512 l) {
  const __m512 round = z_set(12582912.0f);  // 1.5 * 2^23
  __m512 t = _mm512_fmadd_ps(h, z_set(1.44269504088896341f), round);
  __m512 n = _mm512_sub_ps(t, round);
  __m512 r = _mm512_fnmadd_ps(n, z_set(0.693359375f), h);
  r = _mm512_add_ps(_mm512_fnmadd_ps(n, z_set(-2.12194440e-4f), r), l);
  __m512 p = z_exp_poly(r);
  const __m512i k = _mm512_set1_epi32(0x4B400000 - 32 - 127);
  __m512i e = _mm512_slli_epi32(_mm512_sub_epi32(_mm512_castps_si512(t), k), 23);
  return _mm512_mul_ps(p, _mm512_castsi512_ps(e));
}

// R(a) = erfc(a / sqrt2) exp(a^2 / 2), 0 <= a < 15: v_erfcx_div_sqrt2's 8 intervals and
// coefficients (erfcx_table.h; each table of 8 floats is repeated in both halves for vpermps).
static inline __m512 z_pick(const float* c, __m512i k) {
  return _mm512_permutexvar_ps(k, _mm512_broadcast_f32x8(_mm256_load_ps(c)));
}

static inline __m512 z_erfcx_div_sqrt2(__m512 a) {  // a in [0, 15)
  __m512i k = _mm512_sub_epi32(
      _mm512_srli_epi32(_mm512_castps_si512(_mm512_add_ps(a, z_set(1.0f))), 22),
      _mm512_set1_epi32(127 << 1));
  __m512 d = _mm512_sub_ps(a, z_pick(kErfcxCenter, k));
  __m512 p = z_pick(kErfcxC[7], k);
  for (int j = 6; j >= 0; j--) p = _mm512_fmadd_ps(p, d, z_pick(kErfcxC[j], k));
  p = _mm512_fmadd_ps(p, d, z_pick(kErfcxC0Lo, k));
  return _mm512_add_ps(p, z_pick(kErfcxC0Hi, k));
}

constexpr float kGeluClamp = 14.5f;

// erf-Gelu = x Phi(x): v_gelu_erf, operation for operation.
static inline __m512 z_gelu_erf(__m512 x) {
  __m512 ax = z_abs(x);
  __m512 a = _mm512_min_ps(ax, z_set(kGeluClamp));
  __m512 na = _mm512_mul_ps(a, z_set(-0.5f));
  __m512 h = _mm512_mul_ps(na, a);
  __m512 l = _mm512_fmsub_ps(na, a, h);
  __m512 e = z_exp_neg_scaled32(h, l);
  __m512 r = z_erfcx_div_sqrt2(a);
  __m512 u = _mm512_mul_ps(x, r);
  __m512 ul = _mm512_fmsub_ps(x, r, u);
  __m512 xp = _mm512_fmadd_ps(u, e, _mm512_mul_ps(ul, e));  // x Phi(-a) 2^33
  __m512 neg = _mm512_mul_ps(xp, z_set(0x1p-33f));
  __m512 pos = _mm512_fnmadd_ps(xp, z_set(0x1p-33f), x);
  const __m512 zero = _mm512_setzero_ps();
  __m512 y = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, zero, _CMP_GE_OQ), neg, pos);
  __m512 tail = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, zero, _CMP_GT_OQ),
                                     _mm512_mul_ps(x, zero), x);
  return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(ax, z_set(kGeluClamp), _CMP_GT_OQ), y, tail);
}

}  // namespace

void gelu_erf_f32_array_avx512(const float* x, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {  // two independent chains a step
    __m512 a = z_gelu_erf(_mm512_loadu_ps(x + i)), b = z_gelu_erf(_mm512_loadu_ps(x + i + 16));
    _mm512_storeu_ps(y + i, a);
    _mm512_storeu_ps(y + i + 16, b);
  }
  for (; i < n; i += 16) {
    __mmask16 m = z_tail_mask(n - i);
    _mm512_mask_storeu_ps(y + i, m, z_gelu_erf(_mm512_maskz_loadu_ps(m, x + i)));
  }
}

float attention_scores_row_avx512(float* s, int64_t n, float scale, bool div, const float* mask,
                                  int64_t mask_t) {
  // Pass 1: scale, mask (one FMA, as the AVX2 row), max; pass 2: exp and AVX2's 8 partial sums
  // (a 16-float block adds its low half, then its high half).
  const __m512 vs = z_set(scale);
  __m512 vmax = z_set(-INFINITY);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = z_tail_mask(n - i);
    __m512 v = _mm512_maskz_loadu_ps(m, s + i);
    if (!mask) {
      v = div ? _mm512_div_ps(v, vs) : _mm512_mul_ps(v, vs);
    } else {
      __m512 mv = mask_t == 0 ? z_set(*mask) : _mm512_maskz_loadu_ps(m, mask + i);
      v = div ? _mm512_add_ps(_mm512_div_ps(v, vs), mv) : _mm512_fmadd_ps(v, vs, mv);
    }
    _mm512_mask_storeu_ps(s + i, m, v);
    vmax = _mm512_mask_max_ps(vmax, m, v, vmax);  // a NaN score leaves the max alone
  }
  float lane[16];
  _mm512_storeu_ps(lane, vmax);
  float mx = lane[0];
  for (int l = 1; l < 16; l++) mx = lane[l] > mx ? lane[l] : mx;
  const __m512 vm = z_set(mx);
  __m256 sum = _mm256_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = z_tail_mask(n - i);
    __m512 e = z_exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, s + i), vm));
    _mm512_mask_storeu_ps(s + i, m, e);
    e = _mm512_maskz_mov_ps(m, e);
    sum = _mm256_add_ps(sum, _mm512_castps512_ps256(e));
    if (n - i > 8) sum = _mm256_add_ps(sum, _mm512_extractf32x8_ps(e, 1));
  }
  _mm256_storeu_ps(lane, sum);
  float total = 0.0f;
  for (int l = 0; l < 8; l++) total += lane[l];
  return total;
}

namespace {

// R rows of attention_scores_row_avx512 interleaved, each with its own operations in the same
// order (the same bits): one row is a chain of dependent steps (max, then exp, then the sum's
// 16 adds a 128-float row) that left the FP pipes half idle; R rows keep them busy.
template <int R>
void scores_rows(float* s, int64_t ld, int64_t n, float scale, bool div, const float* mask,
                 int64_t mask_s, int64_t mask_t, float* sums) {
  const __m512 vs = z_set(scale);
  __m512 vmax[R];
  for (int r = 0; r < R; r++) vmax[r] = z_set(-INFINITY);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = z_tail_mask(n - i);
    const bool full = n - i >= 16;
    for (int r = 0; r < R; r++) {
      float* sr = s + r * ld;
      __m512 v = full ? _mm512_loadu_ps(sr + i) : _mm512_maskz_loadu_ps(m, sr + i);
      if (!mask) {
        v = div ? _mm512_div_ps(v, vs) : _mm512_mul_ps(v, vs);
      } else {
        const float* mr = mask + r * mask_s;
        __m512 mv = mask_t == 0 ? z_set(*mr)
                    : full      ? _mm512_loadu_ps(mr + i)
                                : _mm512_maskz_loadu_ps(m, mr + i);
        v = div ? _mm512_add_ps(_mm512_div_ps(v, vs), mv) : _mm512_fmadd_ps(v, vs, mv);
      }
      if (full) {
        _mm512_storeu_ps(sr + i, v);
        vmax[r] = _mm512_max_ps(v, vmax[r]);
        continue;
      }
      _mm512_mask_storeu_ps(sr + i, m, v);
      vmax[r] = _mm512_mask_max_ps(vmax[r], m, v, vmax[r]);
    }
  }
  // No lane of vmax is NaN (max_ps keeps vmax on a NaN score), so any reduction order gives
  // the row loop's maximum (up to the sign of a zero, which s - max cannot show: exp(+-0) = 1).
  __m512 vm[R];
  __m256 sum[R];
  for (int r = 0; r < R; r++) {
    vm[r] = z_set(_mm512_reduce_max_ps(vmax[r]));
    sum[r] = _mm256_setzero_ps();
  }
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = z_tail_mask(n - i);
    const bool full = n - i >= 16;
    __m512 ex[R];
    for (int r = 0; r < R; r++) {
      __m512 x = full ? _mm512_loadu_ps(s + r * ld + i) : _mm512_maskz_loadu_ps(m, s + r * ld + i);
      ex[r] = _mm512_sub_ps(x, vm[r]);
    }
    // Lanes at or below -104 (masked keys: the mask adds about -3.4e38) come out +0 from z_exp
    // (clamped to -104), through products that underflow: on this CPU they took microcode
    // assists (a half-masked row cost 1.5x). They get +0 here; a block with no other lane
    // skips its exps.
    __mmask16 under[R];
    bool any = false, all = true;
    for (int r = 0; r < R; r++) {
      under[r] = _mm512_mask_cmp_ps_mask(m, ex[r], z_set(-104.0f), _CMP_LE_OQ);
      any = any || under[r] != 0;
      all = all && under[r] == m;
    }
    if (all) {
      for (int r = 0; r < R; r++) ex[r] = _mm512_setzero_ps();
    } else if (any) {
      for (int r = 0; r < R; r++) ex[r] = _mm512_mask_mov_ps(ex[r], under[r], _mm512_setzero_ps());
      z_exp_n<R>(ex);
      for (int r = 0; r < R; r++) ex[r] = _mm512_mask_mov_ps(ex[r], under[r], _mm512_setzero_ps());
    } else {
      z_exp_n<R>(ex);
    }
    for (int r = 0; r < R; r++) {
      float* sr = s + r * ld;
      __m512 e = ex[r];
      if (full) {
        _mm512_storeu_ps(sr + i, e);
      } else {
        _mm512_mask_storeu_ps(sr + i, m, e);
        e = _mm512_maskz_mov_ps(m, e);
      }
      sum[r] = _mm256_add_ps(sum[r], _mm512_castps512_ps256(e));
      if (n - i > 8) sum[r] = _mm256_add_ps(sum[r], _mm512_extractf32x8_ps(e, 1));
    }
  }
  for (int r = 0; r < R; r++) {
    float lane[8];
    _mm256_storeu_ps(lane, sum[r]);
    float total = 0.0f;
    for (int l = 0; l < 8; l++) total += lane[l];
    sums[r] = total;
  }
}

}  // namespace

void attention_scores_rows_avx512(float* s, int64_t rows, int64_t ld, int64_t n, float scale,
                                  bool div, const float* mask, int64_t mask_s, int64_t mask_t,
                                  float* sums) {
  int64_t r = 0;
  for (; r + 4 <= rows; r += 4)
    scores_rows<4>(s + r * ld, ld, n, scale, div, mask ? mask + r * mask_s : nullptr, mask_s,
                   mask_t, sums + r);
  for (; r < rows; r++)
    scores_rows<1>(s + r * ld, ld, n, scale, div, mask ? mask + r * mask_s : nullptr, mask_s,
                   mask_t, sums + r);
}

}  // namespace ember::cpu
