// PagedAttention (paged_attention.h). Cache write: one thread per new element. Attention: a
// block of 128 threads per (query token, query head), over the token's context [0, p] in chunks
// of kPagedChunk keys: each warp scores every 4th key of the chunk (lanes over head_dim, a
// shuffle sum), then the block takes the chunk's max and weights (online softmax: the running
// sum and output are rescaled by exp(m_old - m_new)), and each thread adds the weighted V rows
// into its output dims (threads over head_dim: every V row is read in one coalesced pass).
// Decode (one token a sequence) runs tokens x heads blocks; a prefill token re-reads its
// prefix, which is fine at the chunk sizes the scheduler gives.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>

#include "cuda/kernels/intrinsics.cuh"
#include "cuda/kernels/paged_attention.h"

namespace ember::cuda {
namespace {

constexpr int kThreads = 128, kWarps = kThreads / 32;
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

template <class C>
__global__ void __launch_bounds__(kThreads) paged_attention_kernel(PagedArgs a) {
  __shared__ float qs[kPagedMaxHeadDim];
  __shared__ float sc[kPagedChunk];
  __shared__ int64_t slot_of[kPagedChunk];
  __shared__ float part[kWarps];
  const int64_t t = blockIdx.x, h = blockIdx.y, D = a.head_dim;
  const int64_t kvh = h / (a.heads / a.kv_heads);
  float* y = a.y + t * a.heads * D + h * D;
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  // Guards on the metadata (the adapter checks it on the host as the CPU does; these only keep a
  // bad value from being followed): tokens past query_start[seqs] or past T are padding.
  const int64_t qend = min((int64_t)a.query_start[a.seqs], a.tokens);
  if (t >= qend) {  // padding token
    for (int64_t d = tid; d < D; d += kThreads) y[d] = 0.0f;
    return;
  }
  // The token's sequence: the last s with query_start[s] <= t (binary search, as the CPU's
  // upper_bound), its position p and context [0, p].
  int64_t lo = 0, hi = a.seqs;  // query_start[lo] <= t < query_start[hi]
  while (hi - lo > 1) {
    const int64_t mid = (lo + hi) / 2;
    if (a.query_start[mid] <= t)
      lo = mid;
    else
      hi = mid;
  }
  const int64_t s = lo, n_new = a.query_start[s + 1] - a.query_start[s];
  const int64_t ctx = max((int64_t)0, min(a.seq_lens[s] - n_new + (t - a.query_start[s]) + 1,
                                          a.max_blocks * a.block_size));
  const C* kc = static_cast<const C*>(a.k_cache);
  const C* vc = static_cast<const C*>(a.v_cache);
  for (int64_t d = tid; d < D; d += kThreads) qs[d] = a.q[t * a.heads * D + h * D + d];

  float m = -INFINITY, l = 0.0f, acc[kPagedMaxHeadDim / kThreads] = {};
  for (int64_t c0 = 0; c0 < ctx; c0 += kPagedChunk) {
    const int n = (int)min((int64_t)kPagedChunk, ctx - c0);
    __syncthreads();  // qs written (first chunk); sc and slot_of free again
    for (int j = warp; j < n; j += kWarps) {
      const int64_t pos = c0 + j;
      const int64_t blk = a.block_tables[s * a.max_blocks + pos / a.block_size];
      const bool ok = blk >= 0 && blk < a.blocks;  // checked on the host; never followed if not
      const int64_t base = ((blk * a.block_size + pos % a.block_size) * a.kv_heads + kvh) * D;
      float dot = 0.0f;
      if (ok)
        for (int64_t d = lane; d < D; d += 32) dot = fmaf(qs[d], load_cache(kc, base + d), dot);
      dot = warp_sum(dot);
      if (lane == 0) {
        sc[j] = ok ? dot * a.scale : -INFINITY;
        slot_of[j] = ok ? base : -1;
      }
    }
    __syncthreads();
    const float x = tid < n ? sc[tid] : -INFINITY;
    const float mn = fmaxf(m, block_reduce<true>(x, part));
    // A chunk (so far) of -inf scores only: weights 0, not exp(-inf - -inf) = NaN.
    const float shift = mn == -INFINITY ? 0.0f : mn;
    const float alpha = expf(m - shift);
    const float w = tid < n ? expf(x - shift) : 0.0f;
    l = l * alpha + block_reduce<false>(w, part);
    m = mn;
    if (tid < n) sc[tid] = w;
    __syncthreads();
#pragma unroll
    for (int r = 0; r < kPagedMaxHeadDim / kThreads; r++) {
      const int64_t d = tid + r * kThreads;
      if (d >= D) break;
      float o = acc[r] * alpha;
      for (int j = 0; j < n; j++)
        if (slot_of[j] >= 0) o = fmaf(sc[j], load_cache(vc, slot_of[j] + d), o);
      acc[r] = o;
    }
  }
#pragma unroll
  for (int r = 0; r < kPagedMaxHeadDim / kThreads; r++) {
    const int64_t d = tid + r * kThreads;
    if (d < D) y[d] = ctx > 0 ? acc[r] / l : 0.0f;
  }
}

template <class C>
void launch(const PagedArgs& a, cudaStream_t s) {
  const int64_t total = a.tokens * a.kv_heads * a.head_dim;
  if (total > 0) {
    const int64_t blocks = std::min<int64_t>((total + 255) / 256, 1 << 20);
    EMBER_LAUNCH(paged_write_kernel<C>, (unsigned)blocks, 256, 0, s)(a, total);
  }
  const dim3 grid((unsigned)a.tokens, (unsigned)a.heads);
  EMBER_LAUNCH(paged_attention_kernel<C>, grid, kThreads, 0, s)(a);
}

}  // namespace

void paged_attention(const PagedArgs& a, void* stream) {
  if (a.tokens == 0 || a.heads == 0 || a.head_dim == 0) return;
  auto s = static_cast<cudaStream_t>(stream);
  if (a.cache_f16)
    launch<__half>(a, s);
  else
    launch<float>(a, s);
}

}  // namespace ember::cuda
