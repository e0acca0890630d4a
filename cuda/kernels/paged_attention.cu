// PagedAttention (paged_attention.h). Cache write: one thread per new element. Attention: a
// block of 128 threads per (query token, query head[, part of the context]), over the token's
// context [0, p] in parts of PagedSplit::part_keys keys, each in chunks of kPagedChunk keys
// (attend_keys), the parts' softmax states merged in order (merge_part). A thread scores a
// whole key (its own dot over head_dim): the earlier warp-per-key scoring spent five dependent
// shuffles a key and, with one block per (token, head), ran latency-bound at long contexts.
// Decode (one token a sequence) with few (token, head) pairs spreads a long context's parts
// over blocks. Prefill chunks of an fp16 cache take paged_prefill_kernel (tensor cores, 64
// tokens a block) where the launch asks for it; elsewhere a prefill token re-reads its prefix.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "cuda/kernels/intrinsics.cuh"
#include "cuda/kernels/mma_attention.cuh"
#include "cuda/kernels/paged_attention.h"

namespace ember::cuda {
namespace {

constexpr int kThreads = 128, kWarps = kThreads / 32;
static_assert(kPagedChunk == kThreads, "attend_keys scores a chunk's key per thread");
constexpr unsigned kFull = 0xffffffffu;

__device__ __forceinline__ float load_cache(const float* c, int64_t i) { return c[i]; }
__device__ __forceinline__ float load_cache(const __half* c, int64_t i) {
  return __half2float(c[i]);
}
__device__ __forceinline__ void store_cache(float* c, int64_t i, float x) { c[i] = x; }
__device__ __forceinline__ void store_cache(__half* c, int64_t i, float x) {
  c[i] = __float2half_rn(x);
}

template <class C>
__global__ void paged_write_kernel(PagedArgs a, int64_t total) {
  const int64_t row = a.kv_heads * a.head_dim;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t t = i / row, j = i % row, slot = a.slots[t];
    if (slot < 0 || slot >= a.blocks * a.block_size) continue;
    store_cache(static_cast<C*>(a.k_cache), slot * row + j, a.k[t * row + j]);
    store_cache(static_cast<C*>(a.v_cache), slot * row + j, a.v[t * row + j]);
  }
}

__device__ __forceinline__ float warp_sum(float x) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(kFull, x, o);
  return x;
}
__device__ __forceinline__ float warp_max(float x) {
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(kFull, x, o));
  return x;
}
// Every thread gets the block's reduction of x (`part`: kWarps floats of shared memory).
template <bool MAX>
__device__ __forceinline__ float block_reduce(float x, float* part) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  x = MAX ? warp_max(x) : warp_sum(x);
  __syncthreads();  // part's last readers are done
  if (lane == 0) part[warp] = x;
  __syncthreads();
  float r = part[0];
  for (int w = 1; w < kWarps; w++) r = MAX ? fmaxf(r, part[w]) : r + part[w];
  return r;
}

// A token's sequence s (the last with query_start[s] <= t, as the CPU's upper_bound) and its
// context [0, ctx); false for a padding token (past query_start[seqs] or past T).
__device__ __forceinline__ bool token_context(const PagedArgs& a, int64_t t, int64_t* s,
                                              int64_t* ctx, int64_t* n_new) {
  // Guards on the metadata (the adapter checks it on the host as the CPU does; these only keep a
  // bad value from being followed).
  if (t >= min((int64_t)a.query_start[a.seqs], a.tokens)) return false;
  int64_t lo = 0, hi = a.seqs;  // query_start[lo] <= t < query_start[hi]
  while (hi - lo > 1) {
    const int64_t mid = (lo + hi) / 2;
    if (a.query_start[mid] <= t)
      lo = mid;
    else
      hi = mid;
  }
  *n_new = a.query_start[lo + 1] - a.query_start[lo];
  *s = lo;
  *ctx = max((int64_t)0, min(a.seq_lens[lo] - *n_new + (t - a.query_start[lo]) + 1,
                             a.max_blocks * a.block_size));
  return true;
}

// Softmax state of a run of keys: running max m, sum of weights l, and this thread's output
// dims (d = tid + r * kThreads) of the weighted V sum.
struct SoftmaxState {
  float m = -INFINITY, l = 0.0f, acc[kPagedMaxHeadDim / kThreads] = {};
};

// Adds part p's state to the merged one (in part order, the same arithmetic whichever block
// does it). A part of -inf scores only (m = -inf) adds nothing.
__device__ __forceinline__ void merge_part(SoftmaxState& to, const SoftmaxState& p, int64_t D) {
  if (p.m == -INFINITY) return;
  if (to.m == -INFINITY) {
    to = p;
    return;
  }
  const float mn = fmaxf(to.m, p.m), a = expf(to.m - mn), b = expf(p.m - mn);
  to.l = to.l * a + p.l * b;
#pragma unroll
  for (int r = 0; r < kPagedMaxHeadDim / kThreads; r++) to.acc[r] = to.acc[r] * a + p.acc[r] * b;
  to.m = mn;
}

// q . K row (head_dim D), d in order; 16-byte loads where whole rows allow.
__device__ __forceinline__ float dot_row(const float* qs, const float* k, int64_t D) {
  float dot = 0.0f;
  if (D % 4 == 0 && reinterpret_cast<uintptr_t>(k) % 16 == 0) {
#pragma unroll 4
    for (int64_t d = 0; d < D; d += 4) {
      const float4 v = *reinterpret_cast<const float4*>(k + d);
      dot = fmaf(qs[d], v.x, dot);
      dot = fmaf(qs[d + 1], v.y, dot);
      dot = fmaf(qs[d + 2], v.z, dot);
      dot = fmaf(qs[d + 3], v.w, dot);
    }
    return dot;
  }
  for (int64_t d = 0; d < D; d++) dot = fmaf(qs[d], k[d], dot);
  return dot;
}
__device__ __forceinline__ float dot_row(const float* qs, const __half* k, int64_t D) {
  float dot = 0.0f;
  if (D % 8 == 0 && reinterpret_cast<uintptr_t>(k) % 16 == 0) {
#pragma unroll 2
    for (int64_t d = 0; d < D; d += 8) {
      const uint4 raw = *reinterpret_cast<const uint4*>(k + d);
      const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};  // no address taken: registers
#pragma unroll
      for (int i = 0; i < 4; i++) {
        dot = fmaf(qs[d + 2 * i], __half2float(__ushort_as_half((uint16_t)(w[i] & 0xffffu))), dot);
        dot = fmaf(qs[d + 2 * i + 1], __half2float(__ushort_as_half((uint16_t)(w[i] >> 16))), dot);
      }
    }
    return dot;
  }
  for (int64_t d = 0; d < D; d++) dot = fmaf(qs[d], __half2float(k[d]), dot);
  return dot;
}

// Shared memory of a block: the query row, a chunk's scores (then weights) and cache rows.
struct PagedSmem {
  float qs[kPagedMaxHeadDim];
  float sc[kPagedChunk];
  int64_t slot_of[kPagedChunk];
  float part[kWarps];
};

// Keys [k0, k1) of sequence s for query head h (its kv head kvh), from a fresh state, in
// chunks of kPagedChunk: a thread scores one key of a chunk (its own dot over head_dim, no
// shuffles), the block takes the chunk's max and weights (online softmax: the state is
// rescaled by exp(m_old - m_new)), and each thread adds the weighted V rows into its output dims
// (threads over head_dim: every V row is read in one coalesced pass).
template <class C>
__device__ __forceinline__ SoftmaxState attend_keys(const PagedArgs& a, PagedSmem& sm, int64_t s,
                                                    int64_t kvh, int64_t k0, int64_t k1) {
  const int tid = threadIdx.x;
  const int64_t D = a.head_dim;
  const C* kc = static_cast<const C*>(a.k_cache);
  const C* vc = static_cast<const C*>(a.v_cache);
  SoftmaxState st;
  for (int64_t c0 = k0; c0 < k1; c0 += kPagedChunk) {
    const int n = (int)min((int64_t)kPagedChunk, k1 - c0);
    __syncthreads();  // qs written (first chunk); sc and slot_of free again
    if (tid < n) {
      const int64_t pos = c0 + tid;
      const int64_t blk = a.block_tables[s * a.max_blocks + pos / a.block_size];
      const bool ok = blk >= 0 && blk < a.blocks;  // checked on the host; never followed if not
      const int64_t base = ((blk * a.block_size + pos % a.block_size) * a.kv_heads + kvh) * D;
      sm.sc[tid] = ok ? dot_row(sm.qs, kc + base, D) * a.scale : -INFINITY;
      sm.slot_of[tid] = ok ? base : -1;
    }
    __syncthreads();
    const float x = tid < n ? sm.sc[tid] : -INFINITY;
    const float mn = fmaxf(st.m, block_reduce<true>(x, sm.part));
    // A chunk (so far) of -inf scores only: weights 0, not exp(-inf - -inf) = NaN.
    const float shift = mn == -INFINITY ? 0.0f : mn;
    const float alpha = expf(st.m - shift);
    const float w = tid < n ? expf(x - shift) : 0.0f;
    st.l = st.l * alpha + block_reduce<false>(w, sm.part);
    st.m = mn;
    if (tid < n) sm.sc[tid] = w;
    __syncthreads();
#pragma unroll
    for (int r = 0; r < kPagedMaxHeadDim / kThreads; r++) {
      const int64_t d = tid + r * kThreads;
      if (d >= D) break;
      float o = st.acc[r] * alpha;
      for (int j = 0; j < n; j++)
        if (sm.slot_of[j] >= 0) o = fmaf(sm.sc[j], load_cache(vc, sm.slot_of[j] + d), o);
      st.acc[r] = o;
    }
  }
  return st;
}

// One block per (query token, query head, part z). The token's context is cut into parts of
// sp.part_keys keys at fixed positions and their states merged in part order, so a token's
// result depends on its own context only, never on the batch or on how parts were spread:
// - sp.parts == 1, or a token of one part: the block walks its token's parts in turn;
// - else block z computes part z (if the token has one), stores its state in sp.partial, and
//   the last of the token's parts to finish (sp.counters, back to 0 after) merges them all.
template <class C>
__global__ void __maxnreg__(128) paged_attention_kernel(PagedArgs a, PagedSplit sp) {
  __shared__ PagedSmem sm;
  __shared__ bool last;
  const int64_t t = blockIdx.x, h = blockIdx.y, z = blockIdx.z, D = a.head_dim;
  const int64_t kvh = h / (a.heads / a.kv_heads);
  const int tid = threadIdx.x;
  float* y = a.y + t * a.heads * D + h * D;
  int64_t s = 0, ctx = 0, n_new = 0;
  if (!token_context(a, t, &s, &ctx, &n_new)) {  // padding token
    if (z == 0)
      for (int64_t d = tid; d < D; d += kThreads) y[d] = 0.0f;
    return;
  }
  if (sp.prefill_rows > 0 && n_new >= sp.prefill_rows) return;  // paged_prefill_kernel's
  const int64_t parts = max((int64_t)1, (ctx + sp.part_keys - 1) / sp.part_keys);
  // One block walks every part (block z = 0) unless the grid has a block for each; more parts
  // than blocks only if the device metadata differed from the host's, which it cannot.
  const bool walk = sp.parts == 1 || parts == 1 || parts > sp.parts;
  if (walk ? z > 0 : z >= parts) return;
  for (int64_t d = tid; d < D; d += kThreads) sm.qs[d] = a.q[t * a.heads * D + h * D + d];

  SoftmaxState out;
  if (walk) {
    for (int64_t p = 0; p < parts; p++) {
      const int64_t k0 = p * sp.part_keys;
      merge_part(out, attend_keys<C>(a, sm, s, kvh, k0, min(ctx, k0 + sp.part_keys)), D);
    }
  } else {
    // The part's state: [m, l, acc over head_dim] at (t, h, z) of [tokens, heads, parts, D + 2].
    const int64_t k0 = z * sp.part_keys;
    const SoftmaxState st = attend_keys<C>(a, sm, s, kvh, k0, min(ctx, k0 + sp.part_keys));
    const int64_t stride = D + 2;
    float* mine = sp.partial + ((t * a.heads + h) * sp.parts + z) * stride;
    if (tid == 0) mine[0] = st.m, mine[1] = st.l;
#pragma unroll
    for (int r = 0; r < kPagedMaxHeadDim / kThreads; r++)
      if (tid + r * kThreads < D) mine[2 + tid + r * kThreads] = st.acc[r];
    __threadfence();  // the state is visible to the device before the count
    __syncthreads();
    int* count = sp.counters + t * a.heads + h;
    if (tid == 0) last = atomicAdd(count, 1) == (int)parts - 1;
    __syncthreads();
    if (!last) return;
    __threadfence();
    const float* all = sp.partial + (t * a.heads + h) * sp.parts * stride;
    for (int64_t p = 0; p < parts; p++) {
      SoftmaxState q;
      q.m = __ldcg(all + p * stride);
      q.l = __ldcg(all + p * stride + 1);
#pragma unroll
      for (int r = 0; r < kPagedMaxHeadDim / kThreads; r++)
        if (tid + r * kThreads < D) q.acc[r] = __ldcg(all + p * stride + 2 + tid + r * kThreads);
      merge_part(out, q, D);
    }
    if (tid == 0) *count = 0;  // ready for the next launch
  }
#pragma unroll
  for (int r = 0; r < kPagedMaxHeadDim / kThreads; r++) {
    const int64_t d = tid + r * kThreads;
    if (d < D) y[d] = ctx > 0 ? out.acc[r] / out.l : 0.0f;
  }
}

// ---- prefill: a tile of a sequence's new tokens on tensor cores ----

// The block's sequence s and first row (of s's new tokens) for tile `tile`, counting in order
// the tiles of kPagedPrefillTileRows rows of every sequence with at least min_rows new tokens;
// false past the last (paged_prefill_tiles counts them on the host).
__device__ __forceinline__ bool prefill_tile(const PagedArgs& a, int64_t min_rows, int64_t tile,
                                             int64_t* s, int64_t* row0) {
  for (int64_t q = 0; q < a.seqs; q++) {
    const int64_t n = a.query_start[q + 1] - a.query_start[q];
    if (n < min_rows) continue;
    const int64_t tiles = (n + kPagedPrefillTileRows - 1) / kPagedPrefillTileRows;
    if (tile < tiles) {
      *s = q;
      *row0 = tile * kPagedPrefillTileRows;
      return true;
    }
    tile -= tiles;
  }
  return false;
}

// FlashAttention-2 style over the paged cache (fp16 cache, head_dim D <= HD, D % 8 == 0): a
// block owns 64 new tokens of one sequence (a warp 16, as A fragments of Q rounded to fp16) for
// one query head, and walks the keys of its last row's context in 64-key tiles, each K and V row
// copied from its cache slot (cp.async, zero past D and for keys past the context), S = Q Kt and
// O = P V on mma.sync m16n8k16 with fp32 sums, the online softmax on the S fragments (a row's
// keys past its own position masked). A key tile past a row's context changes nothing in that
// row (its scores are all -inf), so a row's result does not depend on the tile's other rows.
// The fragment steps are attention_mma_kernel's (mma_attention.cuh).
template <int HD>
__global__ void __launch_bounds__(kThreads) paged_prefill_kernel(PagedArgs a, int64_t min_rows) {
  constexpr int BT = kPagedPrefillKeys, LH = HD + 8;  // keys a tile; smem row pitch (halves)
  constexpr int NK = HD / 16, NS = BT / 8, NP = BT / 16, NO = HD / 8;
  static_assert(kPagedPrefillTileRows == 16 * kWarps, "a warp per 16 rows");
  __shared__ __align__(16) __half ks[BT * LH];
  __shared__ __align__(16) __half vs[BT * LH];
  __shared__ bool valid[BT];
  int64_t s, row0;
  if (!prefill_tile(a, min_rows, blockIdx.x, &s, &row0)) return;
  const int64_t h = blockIdx.y, D = a.head_dim, HDq = a.heads * D;
  const int64_t kvh = h / (a.heads / a.kv_heads);
  const int64_t q0 = a.query_start[s], n_new = a.query_start[s + 1] - q0;
  const int64_t first = a.seq_lens[s] - n_new;  // position of the sequence's first new token
  const int64_t n_rows = min((int64_t)kPagedPrefillTileRows, n_new - row0);
  const int64_t ctx_end = max((int64_t)0, min(first + row0 + n_rows, a.max_blocks * a.block_size));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, c = lane & 3;
  // This lane's two rows (of s's new tokens), whether each is one, and its position.
  int64_t rows[2], pos[2];
  bool live[2];
#pragma unroll
  for (int i = 0; i < 2; i++) {
    rows[i] = row0 + warp * 16 + g + 8 * i;
    live[i] = rows[i] < row0 + n_rows && q0 + rows[i] < a.tokens;  // tokens: a guard only
    pos[i] = first + rows[i];
  }

  // Q as A fragments, zero past D and for rows past the tile (D % 8 == 0: a pair is in or out).
  uint32_t qf[NK][4];
#pragma unroll
  for (int kk = 0; kk < NK; kk++)
#pragma unroll
    for (int e = 0; e < 4; e++) {
      const int d = 16 * kk + 8 * (e >> 1) + 2 * c;
      float2 x = make_float2(0.0f, 0.0f);
      if (live[e & 1] && d < D) {
        const float* qr = a.q + (q0 + rows[e & 1]) * HDq + h * D + d;
        x = make_float2(qr[0], qr[1]);
      }
      qf[kk][e] = pack2(__half{}, x.x, x.y);
    }

  float o[NO][4], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};  // l: this lane's part
#pragma unroll
  for (int n = 0; n < NO; n++)
#pragma unroll
    for (int e = 0; e < 4; e++) o[n][e] = 0.0f;
  const __half* kc = static_cast<const __half*>(a.k_cache);
  const __half* vc = static_cast<const __half*>(a.v_cache);
  for (int64_t t0 = 0; t0 < ctx_end; t0 += BT) {
    __syncthreads();  // every warp is done with the last tile
    for (int i = threadIdx.x; i < BT * (HD / 8); i += kThreads) {
      const int key = i / (HD / 8), d8 = i % (HD / 8) * 8;
      const int64_t p = t0 + key;
      int64_t blk = -1;
      if (p < ctx_end) blk = a.block_tables[s * a.max_blocks + p / a.block_size];
      const bool ok = blk >= 0 && blk < a.blocks;  // checked on the host; never followed if not
      if (d8 == 0) valid[key] = ok;
      const int64_t at = ((blk * a.block_size + p % a.block_size) * a.kv_heads + kvh) * D + d8;
      const int bytes = ok && d8 < D ? 16 : 0;
      cp_async16(ks + key * LH + d8, bytes ? kc + at : kc, bytes);
      cp_async16(vs + key * LH + d8, bytes ? vc + at : vc, bytes);
    }
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();

    float sc[NS][4];
    mma_scores<__half, LH>(sc, qf, ks, lane);

    // Element e of n-tile n: row e >> 1, key t0 + 8n + 2c + (e & 1); kept where the key is in
    // the row's context [0, pos] and its block valid.
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int n = 0; n < NS; n++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int key = 8 * n + 2 * c + (e & 1);
        const int64_t t = t0 + key;
        const bool keep = live[e >> 1] && t <= pos[e >> 1] && t < ctx_end && valid[key];
        const float x = keep ? sc[n][e] * a.scale : -INFINITY;
        sc[n][e] = x;
        mx[e >> 1] = fmaxf(mx[e >> 1], x);
      }
    uint32_t pf[NP][4];
    mma_softmax<__half>(sc, mx, m, l, o, pf);
    mma_pv<__half, LH>(o, pf, vs, lane);
  }

  mma_row_sums(l);
#pragma unroll
  for (int r = 0; r < 2; r++) {
    if (!live[r]) continue;
    float* yr = a.y + (q0 + rows[r]) * HDq + h * D;
    const bool any = pos[r] >= 0 && ctx_end > 0;  // a context to attend over
#pragma unroll
    for (int n = 0; n < NO; n++) {
      const int j = 8 * n + 2 * c;
      if (j < D) {
        yr[j] = any ? o[n][2 * r] / l[r] : 0.0f;
        yr[j + 1] = any ? o[n][2 * r + 1] / l[r] : 0.0f;
      }
    }
  }
}

template <class C>
void launch(const PagedArgs& a, const PagedSplit& sp, cudaStream_t s) {
  const int64_t total = a.tokens * a.kv_heads * a.head_dim;
  if (total > 0) {
    const int64_t blocks = std::min<int64_t>((total + 255) / 256, 1 << 20);
    EMBER_LAUNCH(paged_write_kernel<C>, (unsigned)blocks, 256, 0, s)(a, total);
  }
  const dim3 grid((unsigned)a.tokens, (unsigned)a.heads, (unsigned)std::max<int64_t>(sp.parts, 1));
  EMBER_LAUNCH(paged_attention_kernel<C>, grid, kThreads, 0, s)(a, sp);
  if constexpr (std::is_same_v<C, __half>) {
    if (sp.prefill_rows <= 0 || sp.prefill_tiles <= 0) return;
    const dim3 tiles((unsigned)sp.prefill_tiles, (unsigned)a.heads);
    if (a.head_dim <= 64)
      EMBER_LAUNCH(paged_prefill_kernel<64>, tiles, kThreads, 0, s)(a, sp.prefill_rows);
    else
      EMBER_LAUNCH(paged_prefill_kernel<128>, tiles, kThreads, 0, s)(a, sp.prefill_rows);
  }
}

}  // namespace

void paged_attention(const PagedArgs& a, const PagedSplit& asked, void* stream) {
  if (a.tokens == 0 || a.heads == 0 || a.head_dim == 0) return;
  auto s = static_cast<cudaStream_t>(stream);
  PagedSplit split = asked;  // the prefill kernel only where it fits: else nothing writes those rows
  if (!paged_prefill_fits(a) || split.prefill_tiles <= 0) split.prefill_rows = 0;
  if (a.cache_f16)
    launch<__half>(a, split, s);
  else
    launch<float>(a, split, s);
}

}  // namespace ember::cuda
