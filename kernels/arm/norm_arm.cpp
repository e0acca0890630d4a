// AArch64 row-kernel drivers (rows in norm_f32_neon.cpp, softmax_f32_neon.cpp): shapes,
// attributes and threads, built for the baseline; whole rows per task, so results never depend
// on the split. Each accepts what its generic kernel accepts (kernels/generic/norm_f32.cpp) and
// registers with the same supports() predicate.
#include <algorithm>

#include "kernels/arm/kernels_arm.h"
#include "kernels/generic/kernels_generic.h"

namespace ember::cpu {
namespace {

// Elements from `axis` on (a negative axis counts from the end).
int64_t cols_from(const Tensor& x, int64_t axis) {
  if (axis < 0) axis += x.rank();
  int64_t cols = 1;
  for (int d = (int)axis; d < x.rank(); d++) cols *= x.dim(d);
  return cols;
}

// Rows per parallel task so that a task holds at least ~16K elements.
int64_t row_grain(int64_t cols) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(cols, 1)); }

void softmax_run(const KernelCtx& ctx, void (*row_fn)(const float*, float*, int64_t)) {
  const Tensor& x = ctx.input(0);  // [rows, cols] viewed from any shape
  int64_t axis =
      ctx.node.attrs.get_int("axis", ctx.node.attrs.get_int("legacy_axis_2d", 0) ? 1 : -1);
  int64_t cols = cols_from(x, axis);
  if (x.numel() == 0 || cols == 0) return;
  const float* px = x.ptr<float>();
  float* py = ctx.output(0).ptr<float>();  // [rows, cols]
  ctx.parallel_for(x.numel() / cols, row_grain(cols), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) row_fn(px + r * cols, py + r * cols, cols);
  });
}

}  // namespace

void softmax_f32_neon(const KernelCtx& ctx) { softmax_run(ctx, softmax_f32_row_neon); }
void log_softmax_f32_neon(const KernelCtx& ctx) { softmax_run(ctx, log_softmax_f32_row_neon); }

void layer_norm_f32_neon(const KernelCtx& ctx) {
  const Tensor& x = ctx.input(0);                                                // [rows, cols]
  const float* scale = ctx.input(1).ptr<float>();                               // [cols]
  const float* bias = ctx.has_input(2) ? ctx.input(2).ptr<float>() : nullptr;  // [cols]
  float* pmean = ctx.has_output(1) ? ctx.output(1).ptr<float>() : nullptr;      // [rows]
  float* pinv = ctx.has_output(2) ? ctx.output(2).ptr<float>() : nullptr;       // [rows]
  int64_t cols = cols_from(x, ctx.node.attrs.get_int("axis", -1));
  float eps = (float)ctx.node.attrs.get_float("epsilon", 1e-5);
  if (x.numel() == 0 || cols == 0) return;
  const float* px = x.ptr<float>();
  float* py = ctx.output(0).ptr<float>();  // [rows, cols]
  ctx.parallel_for(x.numel() / cols, row_grain(cols), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++)
      layer_norm_f32_row_neon(px + r * cols, scale, bias, py + r * cols, cols, eps,
                              pmean ? pmean + r : nullptr, pinv ? pinv + r : nullptr);
  });
}

void rms_norm_f32_neon(const KernelCtx& ctx) {
  const Tensor& x = ctx.input(0);  // [rows, cols], cols = prod(X.shape[axis:])
  const Tensor& s = ctx.input(1);  // [cols], or one element broadcast (fuse_rms_norm's ones)
  int64_t cols = cols_from(x, ctx.node.attrs.get_int("axis", -1));
  float eps = (float)ctx.node.attrs.get_float("epsilon", 1e-5);
  if (x.numel() == 0 || cols == 0) return;
  bool bcast = s.numel() != cols;
  const float* scale = bcast ? nullptr : s.ptr<float>();
  float s0 = s.ptr<float>()[0];
  const float* px = x.ptr<float>();
  float* py = ctx.output(0).ptr<float>();  // [rows, cols]
  ctx.parallel_for(x.numel() / cols, row_grain(cols), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      float* yr = py + r * cols;
      rms_norm_f32_row_neon(px + r * cols, scale, yr, cols, eps);
      if (bcast && s0 != 1.0f)
        for (int64_t j = 0; j < cols; j++) yr[j] *= s0;
    }
  });
}

}  // namespace ember::cpu
