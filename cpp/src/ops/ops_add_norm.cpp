// AddNorm: residual add + norm over the last axis, made by fuse_add_norm (graph/fuse_add_norm.cpp)
// from Add(x, r) -> LayerNormalization(., scale[, bias]) | RMSNormalization(., scale):
//   y = norm(x + r)   (output 0)
//   s = x + r         (output 1, optional: wired where the sum has other readers)
//   codes, scales     (outputs 2 and 3, optional, together: y's per-token int8 quantization,
//                      ops/quantize_rows.h, for QMatMuls of a_mode "rows"; fuse_norm_quant)
// attrs: kind "layer" | "rms", axis (-1 only), epsilon. Bias only with kind "layer". r broadcasts
// onto x like Add's operands (the pass fuses only where it sees no broadcast; fast kernels take
// equal shapes). The op is its decomposition: the reference runs the Add reference, then the
// norm's reference on the sum; add_norm_cpu runs each part's best CPU kernel. So a fused node
// gives what the unfused pair gives on the same path, bit for bit.
#include <string>

#include "ops/op_util.h"
#include "ops/quantize_rows.h"
#include "runtime/registry.h"

namespace ember {
namespace {

OpType norm_op(const Node& node) {
  const std::string kind = node.attrs.get_string("kind", "");
  if (kind == "layer") return OpType::LayerNormalization;
  if (kind == "rms") return OpType::RMSNormalization;
  fail(ErrorKind::Model, "[AddNorm] node '", node.name, "': kind must be 'layer' or 'rms', got '",
       kind, "'");
}

// The two nodes AddNorm stands for. Value ids are placeholders: kernels read the tensors.
Node add_part(const Node& node) {
  Node a;
  a.op = OpType::Add;
  a.name = node.name;
  a.inputs = {0, 1};
  a.outputs = {2};
  return a;
}

Node norm_part(const Node& node, bool bias) {
  Node n;
  n.op = norm_op(node);
  n.name = node.name;
  n.inputs = bias ? std::vector<int>{0, 1, 2} : std::vector<int>{0, 1};
  n.outputs = {3};  // Y only: LayerNormalization's Mean / InvStdDev are not AddNorm's
  n.attrs.set("axis", int64_t(-1));
  n.attrs.set("epsilon", node.attrs.get_float("epsilon", 1e-5));
  return n;
}

bool has_bias(const Node& node) { return node.inputs.size() > 3 && node.inputs[3] >= 0; }

std::vector<TensorType> infer_add_norm(const InferCtx& ctx) {
  const Node& node = ctx.node;
  norm_op(node);
  if (node.attrs.get_int("axis", -1) != -1)
    ctx.fail("axis must be -1, got ", node.attrs.get_int("axis", -1));
  if (has_bias(node) && node.attrs.get_string("kind", "") != "layer")
    ctx.fail("bias is only for kind 'layer'");
  // The parts' own checks (dtypes, broadcasting, scale and bias shapes), in their words.
  Node a = add_part(node);
  InferCtx actx{a, {ctx.in[0], ctx.in[1]}, {}, ctx.error_kind};
  TensorType s = op_def(OpType::Add).infer(actx).at(0);
  Node n = norm_part(node, has_bias(node));
  std::vector<TensorType> nin = {s, ctx.in[2]};
  if (has_bias(node)) nin.push_back(ctx.in[3]);
  InferCtx nctx{n, nin, {}, ctx.error_kind};
  TensorType y = op_def(n.op).infer(nctx).at(0);
  if (node.outputs.size() < 2) return {y};
  if (node.outputs.size() == 3) ctx.fail("outputs 2 and 3 (codes and scales) come together");
  if (node.outputs.size() < 3) return {y, s};
  if (y.dtype != DType::F32 || y.shape.empty()) ctx.fail("quantized outputs need a float32 Y");
  return {y, s, {DType::I8, y.shape}, {DType::F32, Shape(y.shape.begin(), y.shape.end() - 1)}};
}

// Outputs 2 and 3 where wired: Y's rows quantized as QMatMul's token mode does.
void quantize_outputs(const KernelCtx& ctx) {
  if (!ctx.has_output(2) || !ctx.has_output(3)) return;
  const Tensor& y = ctx.output(0);
  const int64_t k = y.dim(-1), rows = k ? y.numel() / k : 0;
  quantize_rows_token(y.ptr<float>(), rows, k, ctx.output(2).ptr<int8_t>(),
                      ctx.output(3).ptr<float>());
}

// Runs Add then the norm with the kernels `pick` chooses for them; the sum goes to output 1,
// or to a temporary where the node does not output it.
template <class Pick>
void run_parts(const KernelCtx& ctx, Pick pick) {
  const Node& node = ctx.node;
  const bool bias = has_bias(node);
  Tensor tmp;
  Tensor* sum = ctx.has_output(1) ? &ctx.output(1) : nullptr;
  if (!sum) {
    tmp = Tensor::empty(ctx.output(0).dtype(), ctx.output(0).shape());
    sum = &tmp;
  }
  Node a = add_part(node);
  KernelCtx actx{a, {ctx.in[0], ctx.in[1]}, {sum}, ctx.max_threads, ctx.subgraphs};
  pick(actx, {{ctx.input(0).dtype(), ctx.input(0).shape()}, {ctx.input(1).dtype(), ctx.input(1).shape()}})(actx);
  Node n = norm_part(node, bias);
  std::vector<const Tensor*> nin = {sum, ctx.in[2]};
  std::vector<TensorType> types = {{sum->dtype(), sum->shape()},
                                   {ctx.input(2).dtype(), ctx.input(2).shape()}};
  if (bias) {
    nin.push_back(ctx.in[3]);
    types.push_back({ctx.input(3).dtype(), ctx.input(3).shape()});
  }
  KernelCtx nctx{n, nin, {ctx.out[0]}, ctx.max_threads, ctx.subgraphs};
  pick(nctx, std::move(types))(nctx);
}

void ref_add_norm(const KernelCtx& ctx) {
  run_parts(ctx, [](const KernelCtx& part, std::vector<TensorType>) {
    return op_def(part.node.op).reference;
  });
  quantize_outputs(ctx);
}

}  // namespace

void add_norm_cpu(const KernelCtx& ctx) {
  // The planner's choice for each part at the run's types: the CPU registry's first match.
  run_parts(ctx, [](const KernelCtx& part, std::vector<TensorType> types) {
    InferCtx ictx{part.node, std::move(types), {}};
    const KernelEntry* e = cpu_kernel_find(ictx, cpu_isa());
    return e ? e->fn : op_def(part.node.op).reference;
  });
  quantize_outputs(ctx);
}

static const OpDef kOps[] = {
    {OpType::AddNorm, "AddNorm", 3, 4, 1, 4, kOpFused,
     {{"kind", AttrKind::String, true}, {"axis", AttrKind::Int}, {"epsilon", AttrKind::Float}},
     infer_add_norm, ref_add_norm},
};

std::span<const OpDef> op_defs_add_norm() { return kOps; }

}  // namespace ember
