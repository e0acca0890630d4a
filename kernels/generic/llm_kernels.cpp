// Rope and PagedAttention, generic (the references; spec in cpp/src/ops/ops_llm.cpp). The
// attention work item is (token, kv head): the kv head's query heads share each K/V row read
// from the cache. Scores live in a per-thread buffer sized to the longest context seen.
#include "kernels/generic/llm_kernels.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "ember/dtype.h"

namespace ember::cpu {

void rope_f32(const RopeArgs& a) {
  const int64_t width = a.heads * a.head_dim, half = a.rot_half;
  std::vector<float> cs(2 * half);
  for (int64_t t = 0; t < a.tokens; t++) {
    const float pos = (float)a.positions[t];
    for (int64_t i = 0; i < half; i++) {
      const float ang = pos * a.inv_freq[i];
      cs[2 * i] = std::cos(ang);
      cs[2 * i + 1] = std::sin(ang);
    }
    for (int64_t h = 0; h < a.heads; h++) {
      const float* x = a.x + t * width + h * a.head_dim;
      float* y = a.y + t * width + h * a.head_dim;
      for (int64_t i = 0; i < half; i++) {
        const int64_t i0 = a.interleaved ? 2 * i : i, i1 = a.interleaved ? 2 * i + 1 : i + half;
        const float x0 = x[i0], x1 = x[i1], c = cs[2 * i], s = cs[2 * i + 1];
        y[i0] = x0 * c - x1 * s;
        y[i1] = x0 * s + x1 * c;
      }
      for (int64_t d = 2 * half; d < a.head_dim; d++) y[d] = x[d];
    }
  }
}

void paged_attention_write_kv(const PagedAttentionArgs& a) {
  const int64_t row = a.kv_heads * a.head_dim;
  for (int64_t t = 0; t < a.tokens; t++) {
    const int64_t slot = a.slots[t];
    if (slot < 0) continue;
    if (a.cache_f16) {
      uint16_t* kc = (uint16_t*)a.k_cache + slot * row;
      uint16_t* vc = (uint16_t*)a.v_cache + slot * row;
      for (int64_t i = 0; i < row; i++) {
        kc[i] = f32_to_f16(a.k[t * row + i]);
        vc[i] = f32_to_f16(a.v[t * row + i]);
      }
    } else {
      std::memcpy((float*)a.k_cache + slot * row, a.k + t * row, row * sizeof(float));
      std::memcpy((float*)a.v_cache + slot * row, a.v + t * row, row * sizeof(float));
    }
  }
}

namespace {

float sum8(const float* a) { return ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7])); }

// Row `pos` of sequence s's cache for one kv head, as float (f16 converted into `buf`).
const float* cache_row(const PagedAttentionArgs& a, const void* cache, int64_t s, int64_t pos,
                       int64_t kvh, float* buf) {
  const int64_t block = a.block_tables[s * a.max_blocks + pos / a.block_size];
  const int64_t off = ((block * a.block_size + pos % a.block_size) * a.kv_heads + kvh) * a.head_dim;
  if (!a.cache_f16) return (const float*)cache + off;
  const uint16_t* h = (const uint16_t*)cache + off;
  for (int64_t d = 0; d < a.head_dim; d++) buf[d] = f16_to_f32(h[d]);
  return buf;
}

}  // namespace

void paged_attention_f32(const PagedAttentionArgs& a, int64_t begin, int64_t end) {
  const int64_t D = a.head_dim, G = a.heads / a.kv_heads;
  const int64_t qrow = a.heads * D;
  std::vector<float> scores, out(G * D), kbuf(D), vbuf(D);
  for (int64_t item = begin; item < end; item++) {
    const int64_t t = item / a.kv_heads, kvh = item % a.kv_heads;
    float* y = a.y + t * qrow + kvh * G * D;
    if (t >= a.query_start[a.seqs]) {  // padding token
      std::fill(y, y + G * D, 0.0f);
      continue;
    }
    const int64_t s = std::upper_bound(a.query_start, a.query_start + a.seqs + 1, (int32_t)t) -
                      a.query_start - 1;
    const int64_t n_new = a.query_start[s + 1] - a.query_start[s];
    const int64_t ctx = a.seq_lens[s] - n_new + (t - a.query_start[s]) + 1;
    scores.resize(G * ctx);
    const float* q = a.q + t * qrow + kvh * G * D;
    for (int64_t j = 0; j < ctx; j++) {
      const float* k = cache_row(a, a.k_cache, s, j, kvh, kbuf.data());
      for (int64_t g = 0; g < G; g++) {
        float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (int64_t d = 0; d < D; d++) acc[d % 8] = std::fma(q[g * D + d], k[d], acc[d % 8]);
        scores[g * ctx + j] = sum8(acc) * a.scale;
      }
    }
    std::fill(out.begin(), out.end(), 0.0f);
    std::vector<float> l(G, 0.0f);
    for (int64_t g = 0; g < G; g++) {
      float* sc = scores.data() + g * ctx;
      float m = -INFINITY;
      for (int64_t j = 0; j < ctx; j++) m = std::max(m, sc[j]);
      for (int64_t j = 0; j < ctx; j++) {
        sc[j] = std::exp(sc[j] - m);
        l[g] += sc[j];
      }
    }
    for (int64_t j = 0; j < ctx; j++) {
      const float* v = cache_row(a, a.v_cache, s, j, kvh, vbuf.data());
      for (int64_t g = 0; g < G; g++) {
        const float w = scores[g * ctx + j];
        for (int64_t d = 0; d < D; d++) out[g * D + d] = std::fma(w, v[d], out[g * D + d]);
      }
    }
    for (int64_t g = 0; g < G; g++)
      for (int64_t d = 0; d < D; d++) y[g * D + d] = out[g * D + d] / l[g];
  }
}

}  // namespace ember::cpu
