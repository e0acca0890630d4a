// ElementwiseChain: elementwise ops applied in turn, made by fuse_elementwise_chain
// (graph/fuse_chain.cpp) from a run of single-reader nodes:
//   inputs  0 x (the chain's start), 1.. the binary steps' other operands
//   attrs   ops  [n] OpType of each step (Relu, Sigmoid, ... unary; Add, Sub, Mul, Div binary)
//           sides [n] per step: -1 (unary) or the input index of its other operand
//           swap [n] per step: 1 where the chain's value is the binary op's right operand
//   v = x; for each step v = op(v) | op(v, side) | op(side, v); output 0 = v.
// The op is its decomposition: the reference runs each step's reference on whole tensors;
// elementwise_chain_cpu runs each step's best CPU kernel, on L1-sized blocks where every step
// keeps the chain's shape (a side operand the same size, a scalar or a row), so the value
// stays in cache between steps; else on whole tensors. Each step's kernel is elementwise, so
// blocks change no bit: a fused chain gives what the unfused nodes give on the same path.
#include <algorithm>
#include <numeric>
#include <vector>

#include "ember/thread_pool.h"
#include "ops/op_util.h"
#include "runtime/registry.h"

namespace ember {

bool chainable_unary(OpType op) {
  switch (op) {
    case OpType::Relu: case OpType::Sigmoid: case OpType::Tanh: case OpType::Exp:
    case OpType::Erf: case OpType::Neg: case OpType::Abs: case OpType::Sqrt:
    case OpType::Reciprocal:
      return true;
    default:
      return false;
  }
}

bool chainable_binary(OpType op) {
  return op == OpType::Add || op == OpType::Sub || op == OpType::Mul || op == OpType::Div;
}

namespace {

struct ChainStep {
  OpType op;
  int side;   // input index of the other operand, -1 for a unary step
  bool swap;  // the chain's value is the right operand
};

std::vector<ChainStep> chain_steps(const Node& node, const InferCtx* ctx) {
  std::vector<int64_t> ops = node.attrs.get_ints("ops"), sides = node.attrs.get_ints("sides"),
                       swap = node.attrs.get_ints("swap");
  auto bad = [&](auto&&... what) {
    if (ctx) ctx->fail(what...);
    fail(ErrorKind::Model, "[ElementwiseChain] node '", node.name, "': ", what...);
  };
  if (ops.empty() || sides.size() != ops.size() || swap.size() != ops.size())
    bad("ops, sides and swap must be non-empty and of one length");
  std::vector<ChainStep> steps;
  for (size_t i = 0; i < ops.size(); i++) {
    if (ops[i] < 0 || ops[i] >= (int64_t)OpType::Count) bad("step ", i, " has no op");
    OpType op = (OpType)ops[i];
    const bool binary = chainable_binary(op);
    if (!binary && !chainable_unary(op)) bad("step ", i, ": ", op_name(op), " cannot be chained");
    if (binary ? (sides[i] < 1 || sides[i] >= (int64_t)node.inputs.size()) : sides[i] != -1)
      bad("step ", i, " (", op_name(op), ") has side input ", sides[i]);
    steps.push_back({op, (int)sides[i], swap[i] != 0});
  }
  return steps;
}

// Step i as a node of its own: inputs 0 and 1 (the operands in order), output 2.
Node step_node(const ChainStep& s, const std::string& name) {
  Node n;
  n.op = s.op;
  n.name = name;
  n.inputs = chainable_binary(s.op) ? std::vector<int>{0, 1} : std::vector<int>{0};
  n.outputs = {2};
  return n;
}

std::vector<TensorType> infer_chain(const InferCtx& ctx) {
  std::vector<ChainStep> steps = chain_steps(ctx.node, &ctx);
  TensorType v = ctx.in[0];
  for (const ChainStep& s : steps) {
    Node n = step_node(s, ctx.node.name);
    std::vector<TensorType> in = {v};
    if (s.side >= 0) in.insert(s.swap ? in.begin() : in.end(), ctx.in[s.side]);
    InferCtx sctx{n, in, {}, ctx.error_kind};
    v = op_def(s.op).infer(sctx).at(0);
  }
  return {v};
}

// Runs the steps on whole tensors with the kernels `pick` chooses, temporaries between them.
template <class Pick>
void run_whole(const KernelCtx& ctx, const std::vector<ChainStep>& steps, Pick pick) {
  Tensor cur = ctx.input(0), next;
  for (size_t i = 0; i < steps.size(); i++) {
    const ChainStep& s = steps[i];
    Node n = step_node(s, ctx.node.name);
    std::vector<const Tensor*> in = {&cur};
    if (s.side >= 0) in.insert(s.swap ? in.begin() : in.end(), ctx.in[s.side]);
    std::vector<TensorType> types;
    for (const Tensor* t : in) types.push_back({t->dtype(), t->shape()});
    InferCtx ictx{n, types, {}};
    TensorType out = op_def(s.op).infer(ictx).at(0);
    Tensor* dst = &ctx.output(0);
    if (i + 1 < steps.size() || out.shape != dst->shape() || out.dtype != dst->dtype()) {
      next = Tensor::empty(out.dtype, out.shape);
      dst = &next;
    }
    KernelCtx kctx{n, in, {dst}, ctx.max_threads, ctx.subgraphs};
    pick(ictx)(kctx);
    if (i + 1 < steps.size()) cur = next;
  }
}

void ref_chain(const KernelCtx& ctx) {
  run_whole(ctx, chain_steps(ctx.node, nullptr),
            [](const InferCtx& ictx) { return op_def(ictx.node.op).reference; });
}

KernelFn best_cpu(const InferCtx& ictx) {
  const KernelEntry* e = cpu_kernel_find(ictx, cpu_isa());
  return e ? e->fn : op_def(ictx.node.op).reference;
}

// A side operand that blocks of the chain's value can meet: the same shape, one element, or a
// row (out without leading dims); its row length, 0 for the first two.
bool blockable_side(const Shape& side, const Shape& out, int64_t* row) {
  *row = 0;
  if (side == out || shape_numel(side) == 1) return true;
  size_t lead = 0;
  while (lead < side.size() && side[lead] == 1) lead++;
  const size_t k = side.size() - lead;
  if (k == 0 || k > out.size() || !std::equal(side.begin() + lead, side.end(), out.end() - k))
    return false;
  *row = shape_numel(side);
  return true;
}

// A scalar or row side operand as the blocks see it: [1] or [row].
Shape side_shape(const Tensor& t) { return {t.numel()}; }

}  // namespace

void elementwise_chain_cpu(const KernelCtx& ctx) {
  const std::vector<ChainStep> steps = chain_steps(ctx.node, nullptr);
  const Tensor& x = ctx.input(0);
  Tensor& y = ctx.output(0);
  // Blocks need every step to keep x's shape, in float32: else whole tensors.
  bool blocks = x.dtype() == DType::F32 && y.dtype() == DType::F32 && x.shape() == y.shape();
  int64_t row = 1;  // block lengths are a multiple of every row side's length
  for (const ChainStep& s : steps) {
    if (s.side < 0 || !blocks) continue;
    const Tensor& t = ctx.input(s.side);
    int64_t r = 0;
    blocks = t.dtype() == DType::F32 && blockable_side(t.shape(), y.shape(), &r);
    if (r > 0) row = std::lcm(row, r);
  }
  const int64_t n = y.numel();
  blocks = blocks && row <= 16384;
  if (!blocks) return run_whole(ctx, steps, best_cpu);
  if (n == 0) return;
  const int64_t block = std::max<int64_t>(row, 16384 / row * row);  // ~64 KiB: stays in L2
  // Each step's kernel, chosen for a full block's types (the same kernel serves a shorter
  // last block: elementwise kernels take any length).
  std::vector<KernelFn> fns;
  std::vector<Node> nodes;
  const Shape bshape = {block / row, row};
  for (const ChainStep& s : steps) {
    nodes.push_back(step_node(s, ctx.node.name));
    std::vector<TensorType> types = {{DType::F32, bshape}};
    if (s.side >= 0) {
      const Tensor& t = ctx.input(s.side);
      TensorType st{DType::F32, t.shape() == y.shape() ? bshape : side_shape(t)};
      types.insert(s.swap ? types.begin() : types.end(), st);
    }
    InferCtx ictx{nodes.back(), types, {}};
    fns.push_back(best_cpu(ictx));
  }
  const int64_t nblocks = (n + block - 1) / block;
  const float* xp = x.ptr<float>();
  float* yp = y.ptr<float>();
  ctx.parallel_for(nblocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; b++) {
      const int64_t s0 = b * block, len = std::min(block, n - s0);
      const Shape shape = {len / row, row};  // len is a multiple of row (n is)
      // The value lives in y's block from the first step on: each step reads and writes it.
      Tensor in = Tensor::borrow(DType::F32, shape, const_cast<float*>(xp + s0));
      Tensor out = Tensor::borrow(DType::F32, shape, yp + s0);
      for (size_t i = 0; i < steps.size(); i++) {
        const ChainStep& s = steps[i];
        Tensor side;
        std::vector<const Tensor*> args = {i == 0 ? &in : &out};
        if (s.side >= 0) {
          const Tensor& t = ctx.input(s.side);
          float* tp = const_cast<float*>(t.ptr<float>());
          side = Tensor::borrow(DType::F32, t.shape() == y.shape() ? shape : side_shape(t),
                                t.shape() == y.shape() ? tp + s0 : tp);
          args.insert(s.swap ? args.begin() : args.end(), &side);
        }
        KernelCtx kctx{nodes[i], args, {&out}, 1, ctx.subgraphs};
        fns[i](kctx);
      }
    }
  });
}

namespace {

const OpDef kOps[] = {
    {OpType::ElementwiseChain, "ElementwiseChain", 1, -1, 1, 1, kOpFused,
     {{"ops", AttrKind::Ints, true}, {"sides", AttrKind::Ints, true}, {"swap", AttrKind::Ints, true}},
     infer_chain, ref_chain},
};

}  // namespace

std::span<const OpDef> op_defs_chain() { return kOps; }

}  // namespace ember
