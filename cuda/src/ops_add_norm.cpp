// CUDA adapter of AddNorm (residual add + LayerNorm / RMSNorm, made by fuse_add_norm): float32,
// x and r of one shape (no broadcasting), scale and bias per column of the last axis or a
// single value. Anything else (a broadcast residual, other dtypes) runs on the CPU, where
// AddNorm is the unfused pair's kernels. Kernel: cuda/kernels/add_norm.cu, which with outputs 2
// and 3 (fuse_norm_quant) also quantizes Y's rows per token in the same launch.
#include <string>

#include "cuda/kernels/add_norm.h"
#include "cuda/src/elementwise_plan.h"
#include "cuda/src/ops.h"
#include "ops/op_util.h"

namespace ember::cuda {
namespace {

// Scale / bias modes (ew_norm_param_mode: 0 scalar, 1 per column) for this node at these
// shapes; false where the kernel does not compute it.
bool add_norm_layout(const Node& node, const Shape& x, const Shape& r, const Shape& scale,
                     const Shape* bias, int* scale_mode, int* bias_mode) {
  const std::string kind = node.attrs.get_string("kind", "");
  if (kind != "layer" && kind != "rms") return false;
  if (bias && kind != "layer") return false;
  if (x.empty() || x != r || node.attrs.get_int("axis", -1) != -1) return false;
  const int axis = (int)x.size() - 1;
  *scale_mode = ew_norm_param_mode(scale, x, axis);
  *bias_mode = bias ? ew_norm_param_mode(*bias, x, axis) : 0;
  return *scale_mode >= 0 && *bias_mode >= 0;
}

}  // namespace

bool add_norm_cuda_supports(const InferCtx& ctx, const DeviceOptions&) {
  const int n = ctx.has(3) ? 4 : 3;
  for (int i = 0; i < n; i++)
    if (!ctx.has(i) || ctx.in[i].dtype != DType::F32) return false;
  int sm, bm;
  return add_norm_layout(ctx.node, ctx.in[0].shape, ctx.in[1].shape, ctx.in[2].shape,
                         ctx.has(3) ? &ctx.in[3].shape : nullptr, &sm, &bm);
}

void add_norm_cuda(const KernelCtx& ctx) {
  const Tensor& x = ctx.input(0);
  const Tensor* bias = ctx.has_input(3) ? &ctx.input(3) : nullptr;
  int sm, bm;
  if (!add_norm_layout(ctx.node, x.shape(), ctx.input(1).shape(), ctx.input(2).shape(),
                       bias ? &bias->shape() : nullptr, &sm, &bm))
    fail(ErrorKind::Internal, "[AddNorm] node '", ctx.node.name, "': unsupported layout");
  const int64_t cols = x.shape().back();
  const int64_t rows = cols == 0 ? 0 : x.numel() / cols;
  if (rows * cols == 0) return;
  float* sum = ctx.has_output(1) ? ctx.output(1).ptr<float>() : nullptr;
  AddNormCodes q;  // outputs 2 and 3 (fuse_norm_quant): Y's rows quantized per token
  if (ctx.has_output(2) && ctx.has_output(3))
    q = {ctx.output(2).ptr<int8_t>(), ctx.output(3).ptr<float>()};
  add_norm_f32(x.ptr<float>(), ctx.input(1).ptr<float>(), ctx.input(2).ptr<float>(),
               bias ? bias->ptr<float>() : nullptr, ctx.output(0).ptr<float>(), sum, rows, cols,
               ctx.node.attrs.get_string("kind", "") == "rms", sm == 0, bm == 0,
               ctx.node.attrs.get_float("epsilon", 1e-5), stream(ctx), q);
  const std::string what = str_cat("[AddNorm] node '", ctx.node.name, "'");
  check_launch(what.c_str());
}

}  // namespace ember::cuda
