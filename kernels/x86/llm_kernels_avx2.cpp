// PagedAttention work item with AVX2 + FMA + F16C: K/V rows converted 8 halves at a time, the
// dot8 lanes are the 8 vector lanes (d % 8), sum8 the same tree as the generic kernel, exp
// attention_exp on 8 lanes (exp8), so results are bit-identical to paged_attention_item.
#include <immintrin.h>
#include <math.h>

#include "kernels/generic/llm_kernels.h"

namespace ember::cpu {

namespace {

// ((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7))
inline float sum8_avx2(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps(t, t, 1)));
}

inline __m256 load8(const void* cache, bool f16, int64_t off) {
  if (f16) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)((const uint16_t*)cache + off)));
  return _mm256_loadu_ps((const float*)cache + off);
}

// attention_exp on 8 lanes: the same operations, so the same bits.
inline __m256 exp8(__m256 x) {
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(kExpLog2e)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fmadd_ps(n, _mm256_set1_ps(-kExpLn2Hi), x);
  r = _mm256_fmadd_ps(n, _mm256_set1_ps(-kExpLn2Lo), r);
  __m256 p = _mm256_set1_ps(kExpPoly[0]);
  for (int i = 1; i < 6; i++) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kExpPoly[i]));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  const __m256 y = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
  const __m256 keep = _mm256_cmp_ps(x, _mm256_set1_ps(kExpMin), _CMP_NLT_UQ);  // x >= min or NaN
  const __m256 nan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
  return _mm256_blendv_ps(_mm256_and_ps(y, keep), x, nan);
}

}  // namespace

// Rows `n` (<= kRows) of the cache from `off`, `stride` apart, as float: f32 caches are read in
// place, f16 ones converted once into buf (so G query heads share one conversion).
constexpr int64_t kRows = 16;
inline const float* rows_f32(const void* cache, bool f16, int64_t off, int64_t stride, int64_t n,
                             int64_t D, float* buf, int64_t* ld) {
  if (!f16) {
    *ld = stride;
    return (const float*)cache + off;
  }
  for (int64_t i = 0; i < n; i++)
    for (int64_t d = 0; d < D; d += 8)
      _mm256_storeu_ps(buf + i * D + d, load8(cache, true, off + i * stride + d));
  *ld = D;
  return buf;
}

// Query tokens t0 .. t0 + nt - 1 of sequence s (token i's context: positions [0, ctx0 + i)),
// kv head kvh. Context rows are visited block by block, kRows at a time (no division per row),
// converted once for every token and query head of the tile. Scores take four keys at once
// (four independent fma chains); each output row is accumulated over j in order, 64 dims in
// registers per pass, kept in `out` between row chunks. Per token this is exactly the generic
// kernel's sequence of operations, so the tile size never changes a bit.
void paged_attention_tile_avx2(const PagedAttentionArgs& a, int64_t t0, int64_t nt, int64_t kvh,
                               int64_t s, int64_t ctx0, float* scores, float* out) {
  const int64_t D = a.head_dim, G = a.heads / a.kv_heads, qrow = a.heads * D, BS = a.block_size;
  const int64_t row_stride = a.kv_heads * D;  // between consecutive positions of a block
  const int64_t cmax = ctx0 + nt - 1;         // the last token's context: scores row stride
  const int32_t* table = a.block_tables + s * a.max_blocks;
  float buf[kRows * 1024];  // head_dim <= 1024 (checked by the op)
  for (int64_t j0 = 0; j0 < cmax; j0 += BS) {
    const int64_t base = ((int64_t)table[j0 / BS] * BS * a.kv_heads + kvh) * D;
    const int64_t nb = cmax - j0 < BS ? cmax - j0 : BS;
    for (int64_t c0 = 0; c0 < nb; c0 += kRows) {
      const int64_t n = nb - c0 < kRows ? nb - c0 : kRows;
      int64_t ld;
      const float* k = rows_f32(a.k_cache, a.cache_f16, base + c0 * row_stride, row_stride, n, D, buf, &ld);
      for (int64_t ti = 0; ti < nt; ti++) {
        const int64_t left = ctx0 + ti - (j0 + c0);  // this token's keys in the chunk
        const int64_t m = left < n ? left : n;
        for (int64_t g = 0; g < G; g++) {
          const float* qg = a.q + (t0 + ti) * qrow + (kvh * G + g) * D;
          float* sc = scores + (ti * G + g) * cmax + j0 + c0;
          int64_t i = 0;
          for (; i + 4 <= m; i += 4) {
            const float* k0 = k + i * ld;
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            for (int64_t d = 0; d < D; d += 8) {
              const __m256 qv = _mm256_loadu_ps(qg + d);
              a0 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + d), a0);
              a1 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + ld + d), a1);
              a2 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + 2 * ld + d), a2);
              a3 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + 3 * ld + d), a3);
            }
            sc[i] = sum8_avx2(a0) * a.scale;
            sc[i + 1] = sum8_avx2(a1) * a.scale;
            sc[i + 2] = sum8_avx2(a2) * a.scale;
            sc[i + 3] = sum8_avx2(a3) * a.scale;
          }
          for (; i < m; i++) {
            __m256 acc = _mm256_setzero_ps();
            for (int64_t d = 0; d < D; d += 8)
              acc = _mm256_fmadd_ps(_mm256_loadu_ps(qg + d), _mm256_loadu_ps(k + i * ld + d), acc);
            sc[i] = sum8_avx2(acc) * a.scale;
          }
        }
      }
    }
  }
  for (int64_t r = 0; r < nt * G; r++) {
    const int64_t ctx = ctx0 + r / G;
    float* sc = scores + r * cmax;
    float mx = -INFINITY;
    for (int64_t j = 0; j < ctx; j++) mx = sc[j] > mx ? sc[j] : mx;
    const __m256 mv = _mm256_set1_ps(mx);
    int64_t j = 0;
    for (; j + 8 <= ctx; j += 8) _mm256_storeu_ps(sc + j, exp8(_mm256_sub_ps(_mm256_loadu_ps(sc + j), mv)));
    if (j < ctx) {
      float tmp[8];
      for (int i = 0; i < 8; i++) tmp[i] = j + i < ctx ? sc[j + i] : mx;
      _mm256_storeu_ps(tmp, exp8(_mm256_sub_ps(_mm256_loadu_ps(tmp), mv)));
      for (int64_t i = 0; j + i < ctx; i++) sc[j + i] = tmp[i];
    }
  }
  for (int64_t i = 0; i < nt * G * D; i++) out[i] = 0.0f;
  for (int64_t j0 = 0; j0 < cmax; j0 += BS) {
    const int64_t base = ((int64_t)table[j0 / BS] * BS * a.kv_heads + kvh) * D;
    const int64_t nb = cmax - j0 < BS ? cmax - j0 : BS;
    for (int64_t c0 = 0; c0 < nb; c0 += kRows) {
      const int64_t n = nb - c0 < kRows ? nb - c0 : kRows;
      int64_t ld;
      const float* v = rows_f32(a.v_cache, a.cache_f16, base + c0 * row_stride, row_stride, n, D, buf, &ld);
      for (int64_t r = 0; r < nt * G; r++) {
        const int64_t left = ctx0 + r / G - (j0 + c0);
        const int64_t m = left < n ? left : n;
        const float* sc = scores + r * cmax + j0 + c0;
        int64_t d0 = 0;
        for (; d0 + 64 <= D; d0 += 64) {  // 8 accumulators in registers
          float* o = out + r * D + d0;
          __m256 c0v = _mm256_loadu_ps(o), c1 = _mm256_loadu_ps(o + 8), c2 = _mm256_loadu_ps(o + 16),
                 c3 = _mm256_loadu_ps(o + 24), c4 = _mm256_loadu_ps(o + 32), c5 = _mm256_loadu_ps(o + 40),
                 c6 = _mm256_loadu_ps(o + 48), c7 = _mm256_loadu_ps(o + 56);
          for (int64_t i = 0; i < m; i++) {
            const __m256 wj = _mm256_set1_ps(sc[i]);
            const float* vr = v + i * ld + d0;
            c0v = _mm256_fmadd_ps(wj, _mm256_loadu_ps(vr), c0v);
            c1 = _mm256_fmadd_ps(wj, _mm256_loadu_ps(vr + 8), c1);
            c2 = _mm256_fmadd_ps(wj, _mm256_loadu_ps(vr + 16), c2);
            c3 = _mm256_fmadd_ps(wj, _mm256_loadu_ps(vr + 24), c3);
            c4 = _mm256_fmadd_ps(wj, _mm256_loadu_ps(vr + 32), c4);
            c5 = _mm256_fmadd_ps(wj, _mm256_loadu_ps(vr + 40), c5);
            c6 = _mm256_fmadd_ps(wj, _mm256_loadu_ps(vr + 48), c6);
            c7 = _mm256_fmadd_ps(wj, _mm256_loadu_ps(vr + 56), c7);
          }
          _mm256_storeu_ps(o, c0v);
          _mm256_storeu_ps(o + 8, c1);
          _mm256_storeu_ps(o + 16, c2);
          _mm256_storeu_ps(o + 24, c3);
          _mm256_storeu_ps(o + 32, c4);
          _mm256_storeu_ps(o + 40, c5);
          _mm256_storeu_ps(o + 48, c6);
          _mm256_storeu_ps(o + 56, c7);
        }
        for (; d0 < D; d0 += 8) {  // head_dim % 64 tail, one vector at a time
          float* o = out + r * D + d0;
          __m256 c = _mm256_loadu_ps(o);
          for (int64_t i = 0; i < m; i++)
            c = _mm256_fmadd_ps(_mm256_set1_ps(sc[i]), _mm256_loadu_ps(v + i * ld + d0), c);
          _mm256_storeu_ps(o, c);
        }
      }
    }
  }
  for (int64_t r = 0; r < nt * G; r++) {
    const int64_t ctx = ctx0 + r / G;
    const float* sc = scores + r * cmax;
    float l = 0.0f;
    for (int64_t j = 0; j < ctx; j++) l += sc[j];
    const __m256 lv = _mm256_set1_ps(l);
    float* y = a.y + (t0 + r / G) * qrow + (kvh * G + r % G) * D;
    for (int64_t d = 0; d < D; d += 8)
      _mm256_storeu_ps(y + d, _mm256_div_ps(_mm256_loadu_ps(out + r * D + d), lv));
  }
}

void paged_attention_item_avx2(const PagedAttentionArgs& a, int64_t t, int64_t kvh, int64_t s,
                               int64_t ctx, float* scores, float* out) {
  paged_attention_tile_avx2(a, t, 1, kvh, s, ctx, scores, out);
}

}  // namespace ember::cpu
