// CUDA adapter of the fused Attention op (reference: ref_attention in cpp/src/ops/ops_fused.cpp):
// the geometry on the host (ops/attention_geom.h), merged to an AttnArgs, then one launch of
// the kernel attention_plan picks for the precision (cuda/kernels/attention.cu).
#include <string>

#include "cuda/kernels/attention.h"
#include "cuda/src/attention_plan.h"
#include "cuda/src/ops.h"

namespace ember::cuda {
namespace {

AttnGeom geom_of(const InferCtx& ctx) {
  return attention_geom(ctx, ctx.in[0].shape, ctx.in[1].shape, ctx.in[2].shape,
                        ctx.has(3) ? &ctx.in[3].shape : nullptr);
}

// The device's opt-in shared memory, asked once (a plan-time question, asked per node).
size_t smem_limit() {
  static const size_t bytes = attention_smem_limit();
  return bytes;
}

}  // namespace

bool attention_cuda_supports(const InferCtx& ctx, const DeviceOptions& options) {
  for (int i = 0; i < ctx.num_inputs(); i++)
    if (ctx.has(i) && ctx.in[i].dtype != DType::F32) return false;
  std::string op = ctx.node.attrs.get_string("scale_op", "mul");
  std::string layout = ctx.node.attrs.get_string("layout", "bhsd");
  if ((op != "mul" && op != "div") || (layout != "bhsd" && layout != "bshd")) return false;
  AttnArgs a;
  if (!attention_args(geom_of(ctx), &a)) return false;
  return attention_plan(a, options.precision, smem_limit()).ok;
}

void attention_cuda(const KernelCtx& ctx) {
  InferCtx ic{ctx.node, {}, {}};
  for (const Tensor* t : ctx.in) ic.in.push_back(t ? TensorType{t->dtype(), t->shape()} : TensorType{});
  AttnArgs a;
  EMBER_CHECK(attention_args(geom_of(ic), &a), Internal, "[attention] too many batch dims");
  a.q = ctx.input(0).ptr<float>();
  a.k = ctx.input(1).ptr<float>();
  a.v = ctx.input(2).ptr<float>();
  a.mask = ctx.has_input(3) ? ctx.input(3).ptr<float>() : nullptr;
  a.y = ctx.output(0).ptr<float>();
  a.scale = (float)ctx.node.attrs.get_float("scale", 1.0);
  a.div = ctx.node.attrs.get_string("scale_op", "mul") == "div";
  AttnPlan plan = attention_plan(a, options(ctx).precision, smem_limit());
  EMBER_CHECK(plan.ok, Internal, "[attention] no CUDA kernel: ", plan.why);
  if (plan.blocks == 0 || a.Dv == 0) return;
  if (plan.path == AttnPath::F32)
    attention_f32(a, stream(ctx));
  else if (plan.mma)
    attention_mma(a, plan.head_pad, plan.path == AttnPath::BF16, stream(ctx));
  else
    attention_tc(a, plan.head_pad, plan.path == AttnPath::BF16, stream(ctx));
  check_launch("[attention] flash attention kernel");
}

}  // namespace ember::cuda
