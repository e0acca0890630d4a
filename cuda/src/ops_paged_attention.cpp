// CUDA adapter of PagedAttention (reference: cpu::paged_attention_f32, ops_llm.cpp's contract):
// the step metadata checked on the host copies of its feeds with the CPU's own checks
// (cpu::paged_attention_check), then paged_attention.cu. It runs here only where the KV caches
// are bound in device memory (runtime/plan.cpp, stateful_on_device); with host caches the plan
// keeps the node on the CPU.
#include <cmath>

#include "cuda/kernels/paged_attention.h"
#include "cuda/src/ops.h"
#include "kernels/generic/llm_kernels.h"

namespace ember::cuda {

// head_dim up to kPagedMaxHeadDim; tokens and heads within the grid's x and y.
bool paged_attention_cuda_supports(const InferCtx& ctx, const DeviceOptions& options) {
  const int64_t d = ctx.node.attrs.get_int("head_dim", 0);
  const int64_t heads = ctx.node.attrs.get_int("num_heads", 0);
  return d > 0 && d <= kPagedMaxHeadDim && heads < 65536 && ctx.in[0].shape.size() == 2 &&
         ctx.in[0].shape[0] < (int64_t(1) << 31);
}

void paged_attention_cuda(const KernelCtx& ctx) {
  const Attrs& at = ctx.node.attrs;
  PagedArgs a;
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
  // The metadata's host copies (feeds), checked as the CPU kernel checks them.
  const Tensor *slots = host_input(ctx, 5), *starts = host_input(ctx, 6);
  const Tensor *lens = host_input(ctx, 7), *tables = host_input(ctx, 8);
  if (slots && starts && lens && tables) {
    cpu::PagedAttentionArgs h;
    h.tokens = a.tokens, h.seqs = a.seqs, h.blocks = a.blocks, h.block_size = a.block_size;
    h.max_blocks = a.max_blocks;
    h.slots = slots->ptr<int64_t>();
    h.query_start = starts->ptr<int32_t>();
    h.seq_lens = lens->ptr<int32_t>();
    h.block_tables = tables->ptr<int32_t>();
    cpu::paged_attention_check(h, ctx.node.name);
  }
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
  paged_attention(a, stream(ctx));
  check_launch("[PagedAttention] paged attention kernel");
}

}  // namespace ember::cuda
