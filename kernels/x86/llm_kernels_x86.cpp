// Drivers of the x86 LLM kernels (llm_kernels_avx2.cpp): the generic PagedAttention driver
// with the AVX2 work item.
#include "kernels/generic/llm_kernels.h"
#include "kernels/x86/kernels_x86.h"

namespace ember::cpu {

void swiglu_f32_avx2(const KernelCtx& ctx) { swiglu_with(ctx, sigmoid_f32_array_avx2); }

bool paged_attention_avx2_supports(const InferCtx& ctx) {
  return ctx.node.attrs.get_int("head_dim", 0) % 8 == 0;
}

void paged_attention_f32_avx2(const KernelCtx& ctx) {
  paged_attention_tiled_with(ctx, paged_attention_tile_avx2, f16_row_avx2);
}

}  // namespace ember::cpu
