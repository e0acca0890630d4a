// CUDA adapter of PagedAttention (reference: cpu::paged_attention_f32, ops_llm.cpp's contract):
// the step metadata checked on the host copies of its feeds with the CPU's own checks
// (cpu::paged_attention_check), then paged_attention.cu. It runs here only where the KV caches
// are bound in device memory (runtime/plan.cpp, stateful_on_device); with host caches the plan
// keeps the node on the CPU. A long context over few (token, head) pairs (decode) is spread
// over blocks by parts (paged_parts), with scratch for their states. Sequences with 16 or more
// new tokens (kPagedPrefillMinRows) run on tensor cores where the cache fits
// (paged_prefill_fits: fp16, head_dim a multiple of 8 up to 128), except in deterministic
// sessions or with EMBER_CUDA_PAGED_PREFILL=0.
#include <cstdlib>
#include <cstring>
#include <memory>

#include "cuda/kernels/paged_attention.h"
#include "cuda/src/ops.h"
#include "kernels/generic/llm_kernels.h"

namespace ember::cuda {

namespace {

// EMBER_CUDA_PAGED_PREFILL=0 keeps prefill chunks on the scalar kernel. NOTE: no GPU has run
// paged_prefill_kernel yet; it passes the emulated-device tests
// (cuda/emu/tests/test_emu_paged_attention.cpp) and ptxas for sm_90. Read once.
bool paged_prefill_wanted() {
  static const bool wanted = [] {
    const char* e = std::getenv("EMBER_CUDA_PAGED_PREFILL");
    return !(e && std::strcmp(e, "0") == 0);
  }();
  return wanted;
}

}  // namespace

// head_dim up to kPagedMaxHeadDim; tokens and heads within the grid's x and y.
bool paged_attention_cuda_supports(const InferCtx& ctx, const DeviceOptions& options) {
  const int64_t d = ctx.node.attrs.get_int("head_dim", 0);
  const int64_t heads = ctx.node.attrs.get_int("num_heads", 0);
  return d > 0 && d <= kPagedMaxHeadDim && heads < 65536 && ctx.in[0].shape.size() == 2 &&
         ctx.in[0].shape[0] < (int64_t(1) << 31);
}

void paged_attention_cuda(const KernelCtx& ctx) {
  const PagedArgs a = cpu::paged_attention_fill(ctx);  // device pointers
  // The metadata's host copies (feeds), checked as the CPU kernel checks them.
  const Tensor *slots = host_input(ctx, 5), *starts = host_input(ctx, 6);
  const Tensor *lens = host_input(ctx, 7), *tables = host_input(ctx, 8);
  EMBER_CHECK(slots && starts && lens && tables, Input, "[PagedAttention] node '", ctx.node.name,
              "': its step metadata (inputs 5-8) must be graph inputs or constants, bound on the "
              "host, for the GPU kernel (it is checked there before the launch)");
  PagedArgs h = a;
  h.slots = slots->ptr<int64_t>();
  h.query_start = starts->ptr<int32_t>();
  h.seq_lens = lens->ptr<int32_t>();
  h.block_tables = tables->ptr<int32_t>();
  cpu::paged_attention_check(h, ctx.node.name);
  PagedSplit split;
  split.parts = paged_parts(h);
  std::unique_ptr<Scratch> partial;
  if (split.parts > 1) {  // a long context over few (token, head) pairs: parts in parallel
    const int64_t pairs = a.tokens * a.heads;
    partial = std::make_unique<Scratch>(ctx, (size_t)(pairs * split.parts * (a.head_dim + 2) * 4));
    split.partial = partial->as<float>();
    split.counters = tile_counters(ctx, pairs);
  }
  // Prefill chunks on tensor cores, unless deterministic: a prompt token's chunk depends on
  // the batch, and the two kernels round differently.
  if (!options(ctx).deterministic && paged_prefill_wanted() && paged_prefill_fits(a)) {
    split.prefill_tiles = paged_prefill_tiles(h, kPagedPrefillMinRows);
    if (split.prefill_tiles > 0) split.prefill_rows = kPagedPrefillMinRows;
  }
  paged_attention(a, split, stream(ctx));
  check_launch("[PagedAttention] paged attention kernel");
}

}  // namespace ember::cuda
