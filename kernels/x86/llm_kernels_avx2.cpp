// PagedAttention work item with AVX2 + FMA + F16C: K/V rows converted 8 halves at a time, the
// dot8 lanes are the 8 vector lanes (d % 8), sum8 the same tree as the generic kernel, exp
// scalar (libm expf, as the generic), so results are bit-identical to paged_attention_item.
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

}  // namespace

// Context rows are visited block by block (no division per row). Each query head's output row
// is accumulated in registers, 64 dims at a time, over j in order: the generic kernel's sequence
// of fmas per element.
void paged_attention_item_avx2(const PagedAttentionArgs& a, int64_t t, int64_t kvh, int64_t s,
                               int64_t ctx, float* scores, float* out) {
  const int64_t D = a.head_dim, G = a.heads / a.kv_heads, qrow = a.heads * D, BS = a.block_size;
  const int64_t row_stride = a.kv_heads * D;  // between consecutive positions of a block
  const float* q = a.q + t * qrow + kvh * G * D;
  float* y = a.y + t * qrow + kvh * G * D;
  const int32_t* table = a.block_tables + s * a.max_blocks;
  for (int64_t j0 = 0; j0 < ctx; j0 += BS) {
    const int64_t base = ((int64_t)table[j0 / BS] * BS * a.kv_heads + kvh) * D;
    const int64_t n = ctx - j0 < BS ? ctx - j0 : BS;
    for (int64_t i = 0; i < n; i++) {
      const int64_t off = base + i * row_stride;
      for (int64_t g = 0; g < G; g++) {
        __m256 acc = _mm256_setzero_ps();
        for (int64_t d = 0; d < D; d += 8)
          acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + g * D + d), load8(a.k_cache, a.cache_f16, off + d), acc);
        scores[g * ctx + j0 + i] = sum8_avx2(acc) * a.scale;
      }
    }
  }
  for (int64_t g = 0; g < G; g++) {
    float* sc = scores + g * ctx;
    float m = -INFINITY;
    for (int64_t j = 0; j < ctx; j++) m = sc[j] > m ? sc[j] : m;
    for (int64_t j = 0; j < ctx; j++) sc[j] = expf(sc[j] - m);
  }
  for (int64_t g = 0; g < G; g++) {
    const float* sc = scores + g * ctx;
    for (int64_t d0 = 0; d0 < D; d0 += 64) {  // up to 8 accumulators in registers
      const int64_t w = D - d0 < 64 ? (D - d0) / 8 : 8;
      __m256 acc[8];
      for (int r = 0; r < 8; r++) acc[r] = _mm256_setzero_ps();
      for (int64_t j0 = 0; j0 < ctx; j0 += BS) {
        const int64_t base = ((int64_t)table[j0 / BS] * BS * a.kv_heads + kvh) * D + d0;
        const int64_t n = ctx - j0 < BS ? ctx - j0 : BS;
        for (int64_t i = 0; i < n; i++) {
          const __m256 wj = _mm256_set1_ps(sc[j0 + i]);
          const int64_t off = base + i * row_stride;
          if (w == 8) {
            for (int r = 0; r < 8; r++)
              acc[r] = _mm256_fmadd_ps(wj, load8(a.v_cache, a.cache_f16, off + 8 * r), acc[r]);
          } else {
            for (int r = 0; r < w; r++)
              acc[r] = _mm256_fmadd_ps(wj, load8(a.v_cache, a.cache_f16, off + 8 * r), acc[r]);
          }
        }
      }
      float l = 0.0f;
      for (int64_t j = 0; j < ctx; j++) l += sc[j];
      const __m256 lv = _mm256_set1_ps(l);
      for (int r = 0; r < w; r++) _mm256_storeu_ps(y + g * D + d0 + 8 * r, _mm256_div_ps(acc[r], lv));
    }
  }
  (void)out;
}

}  // namespace ember::cpu
