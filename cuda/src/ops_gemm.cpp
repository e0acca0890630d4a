// MatMul and Gemm through cuBLASLt, F32 tensors (DeviceOptions::precision: fp32, or A and B
// rounded to fp16 / bf16 for cuBLASLt's 16-bit kernels, with fp32 accumulation; a constant B
// at load). The shapes become a GemmPlan (gemm_plan.h: batch folding, strided batches,
// transposes, how C enters); cublaslt_matmul runs it. Other dtypes, two-sided batch broadcasts
// and dims past 2^31 run on the CPU.
#include <optional>
#include <utility>

#include "cuda/kernels/elementwise.h"
#include "cuda/kernels/gemm_epilogue.h"
#include "cuda/src/cublaslt.h"
#include "cuda/src/gemm_plan.h"
#include "cuda/src/ops.h"
#include "ember/dtype.h"
#include "ops/op_util.h"

namespace ember::cuda {
namespace {

std::optional<GemmPlan> gemm_node_plan(const Node& node, const Shape& a, const Shape& b,
                                       const Shape* c, const DeviceOptions& options) {
  const Attrs& at = node.attrs;
  // Deterministic runs keep one path for every C (no BIAS epilogue, whose kernels differ).
  return gemm_plan_gemm(a, b, c, at.get_int("transA", 0) != 0, at.get_int("transB", 0) != 0,
                        at.get_float("alpha", 1.0), at.get_float("beta", 1.0),
                        !options.deterministic);
}

void fill_c(const KernelCtx& ctx, const GemmPlan& p, const float* c, float* d, float scale) {
  gemm_fill_c(c, d, p.batch * p.m, p.n, p.c_rs, p.c_cs, scale, stream(ctx));
  check_launch(str_cat("[", op_name(ctx.node.op), "] gemm_fill_c").c_str());
}

// At fp16 / bf16, A and B (F32 tensors) of a call big enough (lt_rounding_pays) go to
// cuBLASLt rounded once into 16-bit scratch copies, element for element (the plan's strides
// stand), and run its 16-bit kernels.
struct RoundedOperands {
  std::optional<Scratch> a, b;
};
// A B rounded at load (weight_prepare_*: F16 / BF16) always takes this path.
void round_operands(const KernelCtx& ctx, const GemmPlan& plan, const Tensor& a, const Tensor& b,
                    LtOperands* ops, RoundedOperands* keep) {
  const int type = lt_input_type(options(ctx).precision);
  const bool b_ready = b.dtype() != DType::F32;
  if (type == lt::kR32F || (!b_ready && !lt_rounding_pays(plan.m, plan.n))) return;
  const bool bf16 = type == lt::kR16BF;
  keep->a.emplace(ctx, (size_t)a.numel() * 2);
  gemm_round_16(a.ptr<const float>(), keep->a->data(), a.numel(), bf16, stream(ctx));
  ops->a = keep->a->data();
  if (!b_ready) {
    keep->b.emplace(ctx, (size_t)b.numel() * 2);
    gemm_round_16(b.ptr<const float>(), keep->b->data(), b.numel(), bf16, stream(ctx));
    ops->b = keep->b->data();
  }
  check_launch(str_cat("[", op_name(ctx.node.op), "] gemm_round_16").c_str());
  ops->ab_type = type;
}

// ops: the operands as the node has them (a and b the tensors behind ops.a and ops.b; b F16 /
// BF16 when rounded at load).
void run_plan(const KernelCtx& ctx, GemmPlan plan, const LtOperands& ops, const Tensor& a,
              const Tensor& b) {
  if (plan.m == 0 || plan.n == 0 || plan.batch == 0) return;
  if (plan.k == 0) {
    // An empty sum: D is beta * C broadcast (plan.beta is 0 when C is not read), or zeros.
    fill_c(ctx, plan, plan.c == GemmC::None ? nullptr : ops.c, ops.d, plan.beta);
    return;
  }
  if (plan.c == GemmC::Broadcast) fill_c(ctx, plan, ops.c, ops.d, 1.0f);
  const char* what = op_name(ctx.node.op);
  // cuBLASLt's workspace: a Scratch of the step, made only when the algorithm wants one.
  std::optional<Scratch> ws;
  auto workspace = [&](size_t bytes) {
    ws.emplace(ctx, bytes);
    return ws->data();
  };
  RoundedOperands keep;
  LtOperands use = ops;
  round_operands(ctx, plan, a, b, &use, &keep);
  if (cublaslt_matmul(plan, use, options(ctx), workspace, stream(ctx), what)) return;
  // No 16-bit algorithm for a call whose B is F32: F32 operands (FAST_16F / 16BF) instead.
  if (use.ab_type != lt::kR32F && b.dtype() == DType::F32) {
    use = ops;
    if (cublaslt_matmul(plan, use, options(ctx), workspace, stream(ctx), what)) return;
  }
  if (plan.c == GemmC::Bias) {
    // No BIAS-epilogue kernel for this call: broadcast the row into D and add it through beta.
    plan.c = GemmC::Broadcast;
    fill_c(ctx, plan, ops.c, ops.d, 1.0f);
    if (cublaslt_matmul(plan, use, options(ctx), workspace, stream(ctx), what)) return;
  }
  fail(ErrorKind::Internal, "[", what, "] node '", ctx.node.name,
       "': cuBLASLt has no algorithm for m=", plan.m, ", n=", plan.n, ", k=", plan.k,
       ", batch=", plan.batch);
}

}  // namespace

// ---- 16-bit weights ----------------------------------------------------------------------------

namespace {

Tensor round_weight(const Node& node, int input, const Tensor& host, DType to) {
  if (input != 1 || host.dtype() != DType::F32) return Tensor();
  // A depthwise W (one input channel per group) feeds the direct fp32 kernel, not a GEMM.
  if (node.op == OpType::Conv && host.rank() >= 2 && host.shape()[1] == 1) return Tensor();
  Tensor out = Tensor::empty(to, host.shape());
  const float* x = host.ptr<const float>();
  auto* y = static_cast<uint16_t*>(out.data());
  for (int64_t i = 0; i < host.numel(); i++)
    y[i] = to == DType::F16 ? f32_to_f16(x[i]) : f32_to_bf16(x[i]);
  return out;
}

}  // namespace

Tensor weight_prepare_f16(const Node& node, int input, const Tensor& host) {
  return round_weight(node, input, host, DType::F16);
}

Tensor weight_prepare_bf16(const Node& node, int input, const Tensor& host) {
  return round_weight(node, input, host, DType::BF16);
}

// ---- MatMul -----------------------------------------------------------------------------------

bool matmul_cuda_supports(const InferCtx& ctx, const DeviceOptions& options) {
  if (ctx.in[0].dtype != DType::F32 || ctx.in[1].dtype != DType::F32) return false;
  return gemm_plan_matmul(ctx.in[0].shape, ctx.in[1].shape).has_value();
}

namespace {

// Output 0 = input 0 @ input 1 (MatMul, FusedMatMul): the plan and operands, no C yet.
std::pair<GemmPlan, LtOperands> matmul_call(const KernelCtx& ctx) {
  const Tensor& a = ctx.input(0);
  const Tensor& b = ctx.input(1);
  std::optional<GemmPlan> plan = gemm_plan_matmul(a.shape(), b.shape());
  if (!plan)
    fail(ErrorKind::Internal, "[", op_name(ctx.node.op), "] node '", ctx.node.name,
         "': no GEMM plan for ", shape_str(a.shape()), " @ ", shape_str(b.shape()),
         " (supports() accepted it)");
  LtOperands ops;
  ops.a = a.ptr<const float>();
  ops.b = b.data();
  ops.d = ctx.output(0).ptr<float>();
  return {*plan, ops};
}

}  // namespace

void matmul_cuda(const KernelCtx& ctx) {
  auto [plan, ops] = matmul_call(ctx);
  run_plan(ctx, plan, ops, ctx.input(0), ctx.input(1));
}

// ---- Gemm -------------------------------------------------------------------------------------

bool gemm_cuda_supports(const InferCtx& ctx, const DeviceOptions& options) {
  for (int i = 0; i < ctx.num_inputs(); i++)
    if (ctx.has(i) && ctx.in[i].dtype != DType::F32) return false;
  if (!ctx.has(0) || !ctx.has(1)) return false;
  const Shape* c = ctx.has(2) ? &ctx.in[2].shape : nullptr;
  return gemm_node_plan(ctx.node, ctx.in[0].shape, ctx.in[1].shape, c, options).has_value();
}

void gemm_cuda(const KernelCtx& ctx) {
  const Tensor& a = ctx.input(0);
  const Tensor& b = ctx.input(1);
  const Tensor* c = ctx.has_input(2) ? &ctx.input(2) : nullptr;
  std::optional<GemmPlan> plan = gemm_node_plan(ctx.node, a.shape(), b.shape(),
                                                c ? &c->shape() : nullptr, options(ctx));
  if (!plan)
    fail(ErrorKind::Internal, "[Gemm] node '", ctx.node.name, "': no GEMM plan for A ",
         shape_str(a.shape()), ", B ", shape_str(b.shape()), " (supports() accepted it)");
  LtOperands ops;
  ops.a = a.ptr<const float>();
  ops.b = b.data();
  ops.c = c ? c->ptr<const float>() : nullptr;
  ops.d = ctx.output(0).ptr<float>();
  run_plan(ctx, *plan, ops, a, b);
}

// ---- FusedMatMul (device sessions: W unpacked) --------------------------------------------------

namespace {

// The activation kernel run in place after the GEMM; false for "none".
bool fused_act_op(FusedAct act, EwUnary* op) {
  switch (act) {
    case FusedAct::Relu: *op = EwUnary::Relu; return true;
    case FusedAct::Gelu: *op = EwUnary::Gelu; return true;
    case FusedAct::GeluTanh: *op = EwUnary::GeluTanh; return true;
    default: return false;
  }
}

}  // namespace

bool fused_matmul_cuda_supports(const InferCtx& ctx, const DeviceOptions& options) {
  if (fused_matmul_packed(ctx.node)) return false;  // CPU panels
  for (int i = 0; i < ctx.num_inputs(); i++)
    if (ctx.has(i) && ctx.in[i].dtype != DType::F32) return false;
  return gemm_plan_matmul(ctx.in[0].shape, ctx.in[1].shape).has_value();
}

void fused_matmul_cuda(const KernelCtx& ctx) {
  auto [plan, ops] = matmul_call(ctx);
  if (ctx.has_input(2)) {
    // The bias row: cuBLASLt's BIAS epilogue, or (deterministic runs, as Gemm) written into D
    // first and added through beta 1.
    ops.c = ctx.input(2).ptr<const float>();
    plan.beta = 1.0f;
    plan.c_rs = 0;
    plan.c_cs = 1;
    plan.c = options(ctx).deterministic ? GemmC::Broadcast : GemmC::Bias;
  }
  run_plan(ctx, plan, ops, ctx.input(0), ctx.input(1));
  EwUnary act;
  if (fused_act_op(fused_activation(nullptr, ctx.node), &act)) {
    float* y = ctx.output(0).ptr<float>();
    elementwise_unary_f32(act, y, y, ctx.output(0).numel(), 0.0f, 0.0f, stream(ctx));
    check_launch(str_cat("[FusedMatMul] node '", ctx.node.name, "' activation").c_str());
  }
}

}  // namespace ember::cuda
