// Rope and PagedAttention, generic (the references; spec in cpp/src/ops/ops_llm.cpp). The
// attention work item is (token, kv head): the kv head's query heads share each K/V row read
// from the cache. Scores live in a per-thread buffer sized to the longest context seen.
#include "kernels/generic/llm_kernels.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "ember/dtype.h"
#include "kernels/generic/kernels_generic.h"

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

void swiglu_with(const KernelCtx& ctx, SigmoidRowFn sigmoid) {
  const Tensor& x = ctx.input(0);  // [..., 2F]
  const int64_t F = x.dim(-1) / 2, rows = F ? x.numel() / (2 * F) : 0;
  const float* xp = x.ptr<float>();
  float* yp = ctx.output(0).ptr<float>();  // [..., F]
  ctx.parallel_for(rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(F, 1)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      const float* g = xp + r * 2 * F;
      const float* u = g + F;
      float* y = yp + r * F;
      sigmoid(g, y, F);
      for (int64_t i = 0; i < F; i++) y[i] = (g[i] * y[i]) * u[i];
    }
  });
}

void swiglu_f32(const KernelCtx& ctx) { swiglu_with(ctx, sigmoid_f32_array); }

void f16_row(const float* x, uint16_t* y, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] = f32_to_f16(x[i]);
}

void paged_attention_write_kv(const PagedAttentionArgs& a, F16RowFn to_f16) {
  const int64_t row = a.kv_heads * a.head_dim;
  for (int64_t t = 0; t < a.tokens; t++) {
    const int64_t slot = a.slots[t];
    if (slot < 0) continue;
    if (a.cache_f16) {
      to_f16(a.k + t * row, (uint16_t*)a.k_cache + slot * row, row);
      to_f16(a.v + t * row, (uint16_t*)a.v_cache + slot * row, row);
    } else {
      std::memcpy((float*)a.k_cache + slot * row, a.k + t * row, row * sizeof(float));
      std::memcpy((float*)a.v_cache + slot * row, a.v + t * row, row * sizeof(float));
    }
  }
}

namespace {

constexpr int64_t kMaxHeadDim = 1024;

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

float attention_exp(float x) {
  if (std::isnan(x)) return x;
  if (x < kExpMin) return 0.0f;
  const float n = std::nearbyint(x * kExpLog2e);
  float r = std::fma(n, -kExpLn2Hi, x);
  r = std::fma(n, -kExpLn2Lo, r);
  float p = kExpPoly[0];
  for (int i = 1; i < 6; i++) p = std::fma(p, r, kExpPoly[i]);
  p = std::fma(p, r, 1.0f);
  uint32_t bits = (uint32_t)((int32_t)n + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, 4);
  return p * scale;
}

void paged_attention_item(const PagedAttentionArgs& a, int64_t t, int64_t kvh, int64_t s,
                          int64_t ctx, float* scores, float* out) {
  const int64_t D = a.head_dim, G = a.heads / a.kv_heads, qrow = a.heads * D;
  float kbuf[kMaxHeadDim], vbuf[kMaxHeadDim];
  const float* q = a.q + t * qrow + kvh * G * D;
  float* y = a.y + t * qrow + kvh * G * D;
  for (int64_t j = 0; j < ctx; j++) {
    const float* k = cache_row(a, a.k_cache, s, j, kvh, kbuf);
    for (int64_t g = 0; g < G; g++) {
      float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      for (int64_t d = 0; d < D; d++) acc[d % 8] = std::fma(q[g * D + d], k[d], acc[d % 8]);
      scores[g * ctx + j] = sum8(acc) * a.scale;
    }
  }
  std::fill(out, out + G * D, 0.0f);
  for (int64_t g = 0; g < G; g++) {
    float* sc = scores + g * ctx;
    float m = -INFINITY;
    for (int64_t j = 0; j < ctx; j++) m = std::max(m, sc[j]);
    for (int64_t j = 0; j < ctx; j++) sc[j] = attention_exp(sc[j] - m);
  }
  for (int64_t j = 0; j < ctx; j++) {
    const float* v = cache_row(a, a.v_cache, s, j, kvh, vbuf);
    for (int64_t g = 0; g < G; g++) {
      const float w = scores[g * ctx + j];
      for (int64_t d = 0; d < D; d++) out[g * D + d] = std::fma(w, v[d], out[g * D + d]);
    }
  }
  for (int64_t g = 0; g < G; g++) {
    float l = 0.0f;
    for (int64_t j = 0; j < ctx; j++) l += scores[g * ctx + j];
    for (int64_t d = 0; d < D; d++) y[g * D + d] = out[g * D + d] / l;
  }
}

void paged_attention_run(const PagedAttentionArgs& a, int64_t begin, int64_t end,
                         PagedAttentionItemFn item) {
  const int64_t D = a.head_dim, G = a.heads / a.kv_heads;
  // Per calling thread, sized to the longest context seen (taken here, on the thread that runs).
  thread_local std::vector<float> scores, out;
  out.resize(G * D);
  const int64_t items = a.tokens * a.kv_heads;
  for (int64_t k = begin; k < end; k++) {
    // Zigzag order (0, n-1, 1, n-2, ...): a causal prefill's late tokens cost the most, and
    // the pool hands each thread a contiguous run of k.
    const int64_t it = k % 2 == 0 ? k / 2 : items - 1 - k / 2;
    const int64_t t = it / a.kv_heads, kvh = it % a.kv_heads;
    if (t >= a.query_start[a.seqs]) {  // padding token
      std::fill(a.y + t * a.heads * D + kvh * G * D, a.y + t * a.heads * D + (kvh + 1) * G * D, 0.0f);
      continue;
    }
    const int64_t s = std::upper_bound(a.query_start, a.query_start + a.seqs + 1, (int32_t)t) -
                      a.query_start - 1;
    const int64_t n_new = a.query_start[s + 1] - a.query_start[s];
    const int64_t ctx = a.seq_lens[s] - n_new + (t - a.query_start[s]) + 1;
    if ((int64_t)scores.size() < G * ctx) scores.resize(G * ctx);
    item(a, t, kvh, s, ctx, scores.data(), out.data());
  }
}

void paged_attention_check(const PagedAttentionArgs& a, const std::string& who) {
  const int64_t slots = a.blocks * a.block_size;
  for (int64_t t = 0; t < a.tokens; t++)
    EMBER_CHECK(a.slots[t] >= -1 && a.slots[t] < slots, Input, "[PagedAttention] node '", who,
                "': slot_mapping[", t, "] = ", a.slots[t], " is outside the cache's ", slots, " slots");
  EMBER_CHECK(a.query_start[0] == 0, Input, "[PagedAttention] node '", who, "': query_start[0] is ",
              a.query_start[0], ", not 0");
  for (int64_t s = 0; s < a.seqs; s++) {
    const int64_t n = (int64_t)a.query_start[s + 1] - a.query_start[s];
    EMBER_CHECK(n >= 0 && a.query_start[s + 1] <= a.tokens, Input, "[PagedAttention] node '", who,
                "': query_start is not increasing within ", a.tokens, " tokens at sequence ", s);
    EMBER_CHECK(a.seq_lens[s] >= n && a.seq_lens[s] <= a.max_blocks * a.block_size, Input,
                "[PagedAttention] node '", who, "': seq_lens[", s, "] = ", a.seq_lens[s],
                " is below its ", n, " new tokens or past its block table (",
                a.max_blocks * a.block_size, " slots)");
    const int64_t used = (a.seq_lens[s] + a.block_size - 1) / a.block_size;
    for (int64_t b = 0; b < used; b++) {
      int32_t id = a.block_tables[s * a.max_blocks + b];
      EMBER_CHECK(id >= 0 && id < a.blocks, Input, "[PagedAttention] node '", who,
                  "': block_tables[", s, ", ", b, "] = ", id, " is outside [0, ", a.blocks, ")");
    }
  }
}

namespace {

// The step metadata is untrusted (it may come from a caller's own feeds): every offset,
// length and block id is checked before the kernel reads the cache.
PagedAttentionArgs paged_attention_args(const KernelCtx& ctx) {
  PagedAttentionArgs a = paged_attention_fill(ctx);
  paged_attention_check(a, ctx.node.name);
  return a;
}

}  // namespace

PagedAttentionArgs paged_attention_fill(const KernelCtx& ctx) {
  const Attrs& at = ctx.node.attrs;
  PagedAttentionArgs a;
  a.heads = at.get_int("num_heads", 0);
  a.kv_heads = at.get_int("num_kv_heads", 0);
  a.head_dim = at.get_int("head_dim", 0);
  a.scale = (float)at.get_float("scale", 1.0 / std::sqrt((double)a.head_dim));
  const Tensor& kc = ctx.input(3);
  a.tokens = ctx.input(0).dim(0);
  a.blocks = kc.dim(0);
  a.block_size = kc.dim(1);
  a.seqs = ctx.input(6).numel() - 1;
  a.max_blocks = ctx.input(8).dim(1);
  a.q = ctx.input(0).ptr<float>();
  a.k = ctx.input(1).ptr<float>();
  a.v = ctx.input(2).ptr<float>();
  a.k_cache = kc.data();
  a.v_cache = ctx.input(4).data();
  a.cache_f16 = kc.dtype() == DType::F16;
  a.slots = ctx.input(5).ptr<int64_t>();
  a.query_start = ctx.input(6).ptr<int32_t>();
  a.seq_lens = ctx.input(7).ptr<int32_t>();
  a.block_tables = ctx.input(8).ptr<int32_t>();
  a.y = ctx.output(0).ptr<float>();
  return a;
}

void paged_attention_with(const KernelCtx& ctx, PagedAttentionItemFn item) {
  PagedAttentionArgs a = paged_attention_args(ctx);
  paged_attention_write_kv(a);
  // Items get at least ~64k flops each, so a short decode step does not pay for a fork/join.
  double flops = 0;
  for (int64_t s = 0; s < a.seqs; s++)
    flops += (double)(a.query_start[s + 1] - a.query_start[s]) * a.seq_lens[s];
  flops *= 4.0 * a.heads * a.head_dim;
  const int64_t items = a.tokens * a.kv_heads;
  const int64_t grain = std::max<int64_t>(1, (int64_t)(65536.0 * items / std::max(flops, 1.0)));
  ctx.parallel_for(items, grain, [&](int64_t b, int64_t e) {
    paged_attention_run(a, b, e, item);
  });
}


void paged_attention_tiled_with(const KernelCtx& ctx, PagedAttentionTileFn tile,
                                F16RowFn to_f16) {
  PagedAttentionArgs a = paged_attention_args(ctx);
  paged_attention_write_kv(a, to_f16);
  const int64_t D = a.head_dim, G = a.heads / a.kv_heads, qrow = a.heads * D;
  struct Tile {
    int64_t t0, nt, s;
  };
  std::vector<Tile> tiles;
  double flops = 0;
  for (int64_t s = 0; s < a.seqs; s++) {
    for (int64_t t0 = a.query_start[s]; t0 < a.query_start[s + 1]; t0 += kPagedAttentionTile)
      tiles.push_back({t0, std::min<int64_t>(kPagedAttentionTile, a.query_start[s + 1] - t0), s});
    flops += (double)(a.query_start[s + 1] - a.query_start[s]) * a.seq_lens[s];
  }
  flops *= 4.0 * a.heads * a.head_dim;
  std::fill(a.y + a.query_start[a.seqs] * qrow, a.y + a.tokens * qrow, 0.0f);  // padding tokens
  const int64_t items = (int64_t)tiles.size() * a.kv_heads;
  const int64_t grain = std::max<int64_t>(1, (int64_t)(65536.0 * items / std::max(flops, 1.0)));
  ctx.parallel_for(items, grain, [&](int64_t b, int64_t e) {
    thread_local std::vector<float> scores, out;  // per running thread, grown as needed
    for (int64_t k = b; k < e; k++) {
      const int64_t it = k % 2 == 0 ? k / 2 : items - 1 - k / 2;  // zigzag, as paged_attention_run
      const Tile& tl = tiles[it / a.kv_heads];
      const int64_t kvh = it % a.kv_heads;
      const int64_t n_new = a.query_start[tl.s + 1] - a.query_start[tl.s];
      const int64_t ctx0 = a.seq_lens[tl.s] - n_new + (tl.t0 - a.query_start[tl.s]) + 1;
      const int64_t need = tl.nt * G * (ctx0 + tl.nt - 1);
      if ((int64_t)scores.size() < need) scores.resize(need);
      if ((int64_t)out.size() < tl.nt * G * D) out.resize(tl.nt * G * D);
      tile(a, tl.t0, tl.nt, kvh, tl.s, ctx0, scores.data(), out.data());
    }
  });
}

void paged_attention_f32(const KernelCtx& ctx) { paged_attention_with(ctx, paged_attention_item); }

}  // namespace ember::cpu
