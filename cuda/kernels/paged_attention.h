// PagedAttention on CUDA (paged_attention.cu; reference: cpu::paged_attention_f32,
// kernels/generic/llm_kernels.cpp): the step's new k, v into the paged KV cache, then causal
// grouped-query attention of each query token over its sequence's cached context. No CUDA
// headers: the adapter (cuda/src/ops_paged_attention.cpp) and the emulated tests include it.
#pragma once
#include <algorithm>
#include <cstdint>

#include "kernels/generic/llm_kernels.h"

namespace ember::cuda {

// The CPU kernel's argument block (kernels/generic/llm_kernels.h), here with device pointers.
using PagedArgs = cpu::PagedAttentionArgs;

// Keys a block scores at once (a chunk of the context: scores and cache slots in shared
// memory), and the largest head_dim (two output dims a thread).
constexpr int kPagedChunk = 128, kPagedMaxHeadDim = 256;

// How each token's context is cut and spread (paged_attention.cu): parts of `part_keys` keys
// at fixed positions (a multiple of kPagedChunk), their softmax states merged in part order, so
// a token's result depends on its own context only, the same bits at any `parts`:
// - parts == 1: one block per (token, head) walks its parts in turn;
// - parts > 1 (at least the most parts any token has, paged_parts): a block per part, which
//   stores its state in `partial` ([tokens, heads, parts, head_dim + 2] floats); the last of a
//   token's parts to finish merges them, counted in `counters` ([tokens * heads] zeros, left 0).
// Prefill: with prefill_rows > 0 and a cache that paged_prefill_fits (else it is ignored), every
// sequence with at least that many new tokens runs on tensor cores instead
// (paged_prefill_kernel: tiles of kPagedPrefillTileRows new tokens, Q and P rounded to fp16,
// fp32 sums; prefill_tiles of them, paged_prefill_tiles), the rest as above.
constexpr int64_t kPagedPartKeys = 512;
struct PagedSplit {
  int64_t part_keys = kPagedPartKeys;
  int64_t parts = 1;
  float* partial = nullptr;
  int* counters = nullptr;
  int64_t prefill_rows = 0, prefill_tiles = 0;
};
// Blocks per (token, head) that spread the longest context of the step over parts, from the
// host copies of seq_lens (checked): 1 where it fits one part, where tokens x heads already
// give the GPU enough blocks (kPagedSpreadBlocks), or past kPagedMaxParts parts (the scratch
// stays under kPagedSpreadBlocks x kPagedMaxParts x (head_dim + 2) floats, 34 MB).
constexpr int64_t kPagedSpreadBlocks = 512, kPagedMaxParts = 64;
inline int64_t paged_parts(const PagedArgs& host, int64_t part_keys = kPagedPartKeys) {
  if (host.tokens * host.heads >= kPagedSpreadBlocks) return 1;
  int64_t longest = 0;
  for (int64_t s = 0; s < host.seqs; s++) longest = std::max<int64_t>(longest, host.seq_lens[s]);
  const int64_t parts = (longest + part_keys - 1) / part_keys;
  return parts > kPagedMaxParts ? 1 : std::max<int64_t>(1, parts);
}

// The tensor-core prefill: query tiles of 64 new tokens, key tiles of 64; sequences with at
// least kPagedPrefillMinRows new tokens take it where paged_prefill_fits.
constexpr int64_t kPagedPrefillTileRows = 64, kPagedPrefillKeys = 64, kPagedPrefillMinRows = 16;
// An fp16 cache, head_dim a multiple of 8 up to 128, caches 16-byte aligned (its row copies).
inline bool paged_prefill_fits(const PagedArgs& a) {
  const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  return a.cache_f16 && a.head_dim % 8 == 0 && a.head_dim <= 128 && aligned(a.k_cache) &&
         aligned(a.v_cache);
}
// Query tiles of the sequences with at least min_rows new tokens (host copies of query_start).
inline int64_t paged_prefill_tiles(const PagedArgs& host, int64_t min_rows) {
  int64_t tiles = 0;
  for (int64_t s = 0; s < host.seqs; s++) {
    const int64_t n = (int64_t)host.query_start[s + 1] - host.query_start[s];
    if (n >= min_rows) tiles += (n + kPagedPrefillTileRows - 1) / kPagedPrefillTileRows;
  }
  return tiles;
}

// Writes the new k, v rows into their slots (slot -1: skipped), then attends each query token
// over its context [0, position], split as `split` says: fp32 throughout (an f16 cache read back
// to fp32) but for the tensor-core prefill's fp16 Q and P (and so |q| up to 65504 there).
// Padding tokens (past query_start[seqs]) get zeros. The adapter checks the metadata on the
// host first, as the CPU kernel does; the kernels still never follow a slot, block id, sequence
// length or query offset past its bounds. Returns at once when tokens is 0.
void paged_attention(const PagedArgs& a, const PagedSplit& split, void* stream);

}  // namespace ember::cuda
