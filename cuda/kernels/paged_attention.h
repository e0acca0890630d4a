// PagedAttention on CUDA (paged_attention.cu; reference: cpu::paged_attention_f32,
// kernels/generic/llm_kernels.cpp): the step's new k, v into the paged KV cache, then causal
// grouped-query attention of each query token over its sequence's cached context. No CUDA
// headers: the adapter (cuda/src/ops_paged_attention.cpp) and the emulated tests include it.
#pragma once
#include <cstdint>

#include "kernels/generic/llm_kernels.h"

namespace ember::cuda {

// The CPU kernel's argument block (kernels/generic/llm_kernels.h), here with device pointers.
using PagedArgs = cpu::PagedAttentionArgs;

// Keys a block scores at once (a chunk of the context: scores and cache slots in shared
// memory), and the largest head_dim (two output dims a thread).
constexpr int kPagedChunk = 128, kPagedMaxHeadDim = 256;

// Writes the new k, v rows into their slots (slot -1: skipped), then one block per (token,
// query head) walks the token's context [0, position] in chunks of kPagedChunk keys with an
// online softmax (fp32 throughout; an f16 cache is read back to fp32). Padding tokens (past
// query_start[seqs]) get zeros. The adapter checks the metadata on the host first, as the CPU
// kernel does; the kernel still never follows a slot, block id, sequence length or query offset
// past its bounds. Returns at once when tokens is 0.
void paged_attention(const PagedArgs& a, void* stream);

}  // namespace ember::cuda
