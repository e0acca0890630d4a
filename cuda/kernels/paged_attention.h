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
constexpr int64_t kPagedPartKeys = 512;
struct PagedSplit {
  int64_t part_keys = kPagedPartKeys;
  int64_t parts = 1;
  float* partial = nullptr;
  int* counters = nullptr;
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

// Writes the new k, v rows into their slots (slot -1: skipped), then attends each query token
// over its context [0, position] (fp32 throughout; an f16 cache is read back to fp32), split as
// `split` says. Padding tokens (past query_start[seqs]) get zeros. The adapter checks the
// metadata on the host first, as the CPU kernel does; the kernel still never follows a slot,
// block id, sequence length or query offset past its bounds. Returns at once when tokens is 0.
void paged_attention(const PagedArgs& a, const PagedSplit& split, void* stream);

}  // namespace ember::cuda
