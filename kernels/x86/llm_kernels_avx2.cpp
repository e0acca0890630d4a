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

// sum8 of four accumulators at once, the same tree: [sum8(a), sum8(b), sum8(c), sum8(d)].
inline __m128 sum8x4(__m256 a, __m256 b, __m256 c, __m256 d) {
  // Lanes l and l + 4 added: [a0+a4 .. a3+a7 | b0+b4 .. b3+b7], the same for c and d.
  const __m256 x = _mm256_add_ps(_mm256_permute2f128_ps(a, b, 0x20), _mm256_permute2f128_ps(a, b, 0x31));
  const __m256 y = _mm256_add_ps(_mm256_permute2f128_ps(c, d, 0x20), _mm256_permute2f128_ps(c, d, 0x31));
  // (0+4)+(2+6) and (1+5)+(3+7): [a, a, c, c | b, b, d, d] halves, then their sum.
  const __m256 w = _mm256_add_ps(_mm256_shuffle_ps(x, y, 0x44), _mm256_shuffle_ps(x, y, 0xee));
  const __m256 z = _mm256_add_ps(w, _mm256_shuffle_ps(w, w, 0xb1));
  return _mm256_castps256_ps128(
      _mm256_permutevar8x32_ps(z, _mm256_setr_epi32(0, 4, 2, 6, 0, 0, 0, 0)));
}

// Scores of RQ query rows (q[r], row length D) against keys 0 .. m - 1 (k, row stride ld),
// scaled, into sc[r][0 .. m): 4 keys at a time, RQ x 4 accumulators (each key row read once
// for RQ queries), then one key at a time.
template <int RQ>
inline void qk_rows(const float* const* q, const float* k, int64_t ld, int64_t m, int64_t D,
                    float scale, float* const* sc) {
  const __m128 sv = _mm_set1_ps(scale);
  int64_t i = 0;
  for (; i + 4 <= m; i += 4) {
    const float* k0 = k + i * ld;
    __m256 acc[RQ][4];
#pragma GCC unroll 3
    for (int r = 0; r < RQ; r++)
#pragma GCC unroll 4
      for (int c = 0; c < 4; c++) acc[r][c] = _mm256_setzero_ps();
    for (int64_t d = 0; d < D; d += 8) {
      __m256 qv[RQ];
#pragma GCC unroll 3
      for (int r = 0; r < RQ; r++) qv[r] = _mm256_loadu_ps(q[r] + d);
#pragma GCC unroll 4
      for (int c = 0; c < 4; c++) {
        const __m256 kv = _mm256_loadu_ps(k0 + c * ld + d);
#pragma GCC unroll 3
        for (int r = 0; r < RQ; r++) acc[r][c] = _mm256_fmadd_ps(qv[r], kv, acc[r][c]);
      }
    }
#pragma GCC unroll 3
    for (int r = 0; r < RQ; r++)
      _mm_storeu_ps(sc[r] + i, _mm_mul_ps(sum8x4(acc[r][0], acc[r][1], acc[r][2], acc[r][3]), sv));
  }
  for (; i < m; i++)
    for (int r = 0; r < RQ; r++) {
      __m256 acc = _mm256_setzero_ps();
      for (int64_t d = 0; d < D; d += 8)
        acc = _mm256_fmadd_ps(_mm256_loadu_ps(q[r] + d), _mm256_loadu_ps(k + i * ld + d), acc);
      sc[r][i] = sum8_avx2(acc) * scale;
    }
}

// out[r][d0 .. d0 + 8 W) += sum over keys i in [i0, i1) of w[r][i] * v[i][d0 ..], in order of i,
// for RQ rows: RQ x W accumulators, each V row read once for RQ rows.
template <int RQ, int W>
inline void pv_rows(const float* const* w, const float* v, int64_t ld, int64_t i0, int64_t i1,
                    int64_t d0, float* const* out) {
  __m256 acc[RQ][W];
#pragma GCC unroll 3
  for (int r = 0; r < RQ; r++)
#pragma GCC unroll 4
    for (int c = 0; c < W; c++) acc[r][c] = _mm256_loadu_ps(out[r] + d0 + 8 * c);
  for (int64_t i = i0; i < i1; i++) {
    __m256 wv[RQ];
#pragma GCC unroll 3
    for (int r = 0; r < RQ; r++) wv[r] = _mm256_broadcast_ss(w[r] + i);
    const float* vr = v + i * ld + d0;
#pragma GCC unroll 4
    for (int c = 0; c < W; c++) {
      const __m256 x = _mm256_loadu_ps(vr + 8 * c);
#pragma GCC unroll 3
      for (int r = 0; r < RQ; r++) acc[r][c] = _mm256_fmadd_ps(wv[r], x, acc[r][c]);
    }
  }
#pragma GCC unroll 3
  for (int r = 0; r < RQ; r++)
#pragma GCC unroll 4
    for (int c = 0; c < W; c++) _mm256_storeu_ps(out[r] + d0 + 8 * c, acc[r][c]);
}

// Every dim of RQ rows over keys [i0, i1): 32 dims at a time, then 8.
template <int RQ>
inline void pv_all(const float* const* w, const float* v, int64_t ld, int64_t i0, int64_t i1,
                   int64_t D, float* const* out) {
  if (i0 >= i1) return;
  int64_t d0 = 0;
  for (; d0 + 32 <= D; d0 += 32) pv_rows<RQ, 4>(w, v, ld, i0, i1, d0, out);
  for (; d0 < D; d0 += 8) pv_rows<RQ, 1>(w, v, ld, i0, i1, d0, out);
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
// converted once for every token and query head of the tile. Query rows (token, head) go in
// groups of 3: scores take 3 rows x 4 keys at once (each key row loaded once for 3 queries,
// 4 sum8 trees at once), the weighted V sums 3 rows x 32 dims (each V row loaded once for 3
// rows); each output element is still one fma chain over j in order, kept in `out` between row
// chunks. Per token this is exactly the generic kernel's sequence of operations, so neither
// the tile size nor the grouping changes a bit.
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
      // Query rows r = token * G + head in groups of 3; a group computes keys up to its last
      // row's limit (scores past a row's own limit are never read).
      for (int64_t r0 = 0; r0 < nt * G; r0 += 3) {
        const int rq = nt * G - r0 < 3 ? (int)(nt * G - r0) : 3;
        const float* q[3];
        float* sc[3];
        for (int r = 0; r < rq; r++) {
          const int64_t ti = (r0 + r) / G, g = (r0 + r) % G;
          q[r] = a.q + (t0 + ti) * qrow + (kvh * G + g) * D;
          sc[r] = scores + (r0 + r) * cmax + j0 + c0;
        }
        const int64_t left = ctx0 + (r0 + rq - 1) / G - (j0 + c0);
        const int64_t m = left < n ? left : n;
        if (m <= 0) continue;
        if (rq == 3) qk_rows<3>(q, k, ld, m, D, a.scale, sc);
        else if (rq == 2) qk_rows<2>(q, k, ld, m, D, a.scale, sc);
        else qk_rows<1>(q, k, ld, m, D, a.scale, sc);
      }
    }
  }
  for (int64_t r = 0; r < nt * G; r++) {
    const int64_t ctx = ctx0 + r / G;
    float* sc = scores + r * cmax;
    // The max in 8 lanes (NaN never wins, as in the scalar loop; a max does not depend on the
    // order, but for the sign of a zero, which score - max then cannot tell).
    __m256 m8 = _mm256_set1_ps(-INFINITY);
    int64_t j = 0;
    for (; j + 8 <= ctx; j += 8) m8 = _mm256_max_ps(_mm256_loadu_ps(sc + j), m8);
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, m8);
    float mx = -INFINITY;
    for (int i = 0; i < 8; i++) mx = lanes[i] > mx ? lanes[i] : mx;
    for (; j < ctx; j++) mx = sc[j] > mx ? sc[j] : mx;
    const __m256 mv = _mm256_set1_ps(mx);
    j = 0;
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
      // Groups of 3 rows over the keys all of them see, then each row over the rest of its own:
      // every output element still sums its keys in order.
      for (int64_t r0 = 0; r0 < nt * G; r0 += 3) {
        const int rq = nt * G - r0 < 3 ? (int)(nt * G - r0) : 3;
        const float* w[3];
        float* o[3];
        int64_t m[3] = {0, 0, 0};
        for (int r = 0; r < rq; r++) {
          const int64_t left = ctx0 + (r0 + r) / G - (j0 + c0);
          m[r] = left < n ? (left > 0 ? left : 0) : n;
          w[r] = scores + (r0 + r) * cmax + j0 + c0;
          o[r] = out + (r0 + r) * D;
        }
        const int64_t common = m[0];  // rows ascend by token: the first sees the fewest keys
        if (rq == 3) pv_all<3>(w, v, ld, 0, common, D, o);
        else if (rq == 2) pv_all<2>(w, v, ld, 0, common, D, o);
        else pv_all<1>(w, v, ld, 0, common, D, o);
        for (int r = 0; r < rq; r++) pv_all<1>(w + r, v, ld, common, m[r], D, o + r);
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

void f16_row_avx2(const float* x, uint16_t* y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    // F16C rounds as f32_to_f16 does (nearest even, subnormals, overflow to inf) but keeps a
    // NaN's payload: blocks holding a NaN take the scalar conversion.
    if (_mm256_movemask_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)) != 0) {
      f16_row(x + i, y + i, 8);
      continue;
    }
    _mm_storeu_si128((__m128i*)(y + i), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
  }
  f16_row(x + i, y + i, n - i);
}

void paged_attention_item_avx2(const PagedAttentionArgs& a, int64_t t, int64_t kvh, int64_t s,
                               int64_t ctx, float* scores, float* out) {
  paged_attention_tile_avx2(a, t, 1, kvh, s, ctx, scores, out);
}

}  // namespace ember::cpu
