// PagedAttention on CUDA (paged_attention.cu; reference: cpu::paged_attention_f32,
// kernels/generic/llm_kernels.cpp): the step's new k, v into the paged KV cache, then causal
// grouped-query attention of each query token over its sequence's cached context. Plain C++:
// the adapter (cuda/src/ops_paged_attention.cpp) and the emulated tests include it.
#pragma once
#include <cstdint>

namespace ember::cuda {

struct PagedArgs {
  const float* q = nullptr;            // [tokens, heads * head_dim]
  const float* k = nullptr;            // [tokens, kv_heads * head_dim]
  const float* v = nullptr;            // [tokens, kv_heads * head_dim]
  void* k_cache = nullptr;             // [blocks, block_size, kv_heads, head_dim] f32 | f16
  void* v_cache = nullptr;
  bool cache_f16 = false;
  const int64_t* slots = nullptr;        // [tokens]: cache slot of each new token, -1 none
  const int32_t* query_start = nullptr;  // [seqs + 1]
  const int32_t* seq_lens = nullptr;     // [seqs]
  const int32_t* block_tables = nullptr; // [seqs, max_blocks]
  float* y = nullptr;                    // [tokens, heads * head_dim]
  int64_t tokens = 0, seqs = 0, heads = 0, kv_heads = 0, head_dim = 0;
  int64_t blocks = 0, block_size = 0, max_blocks = 0;
  float scale = 1.0f;
};

// Keys a block scores at once (a chunk of the context: scores and cache slots in shared
// memory), and the largest head_dim (two output dims a thread).
constexpr int kPagedChunk = 128, kPagedMaxHeadDim = 256;

// Writes the new k, v rows into their slots (slot -1: skipped), then one block per (token,
// query head) walks the token's context [0, position] in chunks of kPagedChunk keys with an
// online softmax (fp32 throughout; an f16 cache is read back to fp32). Padding tokens (past
// query_start[seqs]) get zeros. Metadata past its bounds is never followed (the adapter checks
// it on the host first, as the CPU kernel does). Returns at once when tokens is 0.
void paged_attention(const PagedArgs& a, void* stream);

}  // namespace ember::cuda
