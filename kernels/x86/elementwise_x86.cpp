// Drivers for the AVX2 elementwise and row kernels (elementwise_avx2.cpp), built for the
// baseline. Elementwise maps split into chunks of kChunk elements here; row kernels run on the
// shared row drivers (kernels/generic/norm_f32.cpp), whole rows per task. Results never depend
// on the split. Each accepts
// what its generic kernel accepts (kernels/generic/elementwise_f32.cpp, norm_f32.cpp) and
// registers with the same supports() predicate.
#include "kernels/generic/kernels_generic.h"
#include "kernels/x86/kernels_x86.h"

namespace ember::cpu {
namespace {

constexpr int64_t kChunk = 16384;

using ArrayFn = void (*)(const float* x, float* y, int64_t n);

void unary_run(const KernelCtx& ctx, ArrayFn fn) {
  const float* x = ctx.input(0).ptr<float>();  // [n]
  float* y = ctx.output(0).ptr<float>();        // [n]
  int64_t n = ctx.output(0).numel();
  if (n == 0) return;
  ctx.parallel_for(n, kChunk, [&](int64_t b, int64_t e) { fn(x + b, y + b, e - b); });
}

}  // namespace

void exp_f32_avx2(const KernelCtx& ctx) { unary_run(ctx, exp_f32_array_avx2); }
void tanh_f32_avx2(const KernelCtx& ctx) { unary_run(ctx, tanh_f32_array_avx2); }
void sigmoid_f32_avx2(const KernelCtx& ctx) { unary_run(ctx, sigmoid_f32_array_avx2); }
void erf_f32_avx2(const KernelCtx& ctx) { unary_run(ctx, erf_f32_array_avx2); }
void gelu_f32_avx2(const KernelCtx& ctx) {
  bool tanh = ctx.node.attrs.get_string("approximate", "none") == "tanh";
  unary_run(ctx, tanh ? gelu_tanh_f32_array_avx2 : gelu_erf_f32_array_avx2);
}

void softmax_f32_avx2(const KernelCtx& ctx) { softmax_rows_with(ctx, softmax_f32_row_avx2); }
void log_softmax_f32_avx2(const KernelCtx& ctx) {
  softmax_rows_with(ctx, log_softmax_f32_row_avx2);
}

void layer_norm_f32_avx2(const KernelCtx& ctx) {
  layer_norm_f32_with(ctx, layer_norm_f32_row_avx2);
}
void rms_norm_f32_avx2(const KernelCtx& ctx) { rms_norm_f32_with(ctx, rms_norm_f32_row_avx2); }

}  // namespace ember::cpu
