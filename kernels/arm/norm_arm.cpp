// AArch64 row kernels (norm_f32_neon.cpp, softmax_f32_neon.cpp) on the shared row drivers
// (kernels/generic/norm_f32.cpp: shapes, attributes, threads). Each accepts what its generic
// kernel accepts and registers with the same supports() predicate.
#include "kernels/arm/kernels_arm.h"
#include "kernels/generic/kernels_generic.h"

namespace ember::cpu {

void softmax_f32_neon(const KernelCtx& ctx) { softmax_rows_with(ctx, softmax_f32_row_neon); }
void log_softmax_f32_neon(const KernelCtx& ctx) {
  softmax_rows_with(ctx, log_softmax_f32_row_neon);
}
void layer_norm_f32_neon(const KernelCtx& ctx) {
  layer_norm_f32_with(ctx, layer_norm_f32_row_neon);
}
void rms_norm_f32_neon(const KernelCtx& ctx) { rms_norm_f32_with(ctx, rms_norm_f32_row_neon); }

}  // namespace ember::cpu
