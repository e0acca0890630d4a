// Control flow and data-dependent shapes: If, Loop, NonZero. All three are kOpDynamic: their
// output shapes are known only by running, so the planner ends a plan before them and the
// session runs them eagerly (runtime/plan.h). If and Loop run subgraphs through the session's
// SubgraphRunner (each subgraph is a Session of its own, with its own plan cache).
//
// Subgraph inputs: values a subgraph reads from the enclosing graph ("captured", ONNX's outer
// scope) are explicit trailing inputs of the node and of the subgraph, in the same order.
//   If:   node [cond, captured...]                    branches [captured...]
//   Loop: node [M, cond, v_initial..., captured...]   body [iter, cond, v..., captured...]
//         node outputs [v_final..., scan...]           body outputs [cond, v..., scan...]
#include "ember/graph.h"
#include "ops/op_util.h"

namespace ember {
namespace {

// Loops with no trip count, or a hostile one, stop here instead of hanging the caller.
constexpr int64_t kMaxLoopIterations = int64_t(1) << 20;

SubgraphRunner& runner(const KernelCtx& ctx) {
  EMBER_CHECK(ctx.subgraphs, Internal, "[", op_name(ctx.node.op), "] node '", ctx.node.name,
              "' runs subgraphs, but no session runs it");
  return *ctx.subgraphs;
}

const Graph& subgraph(const Node& node, const char* attr) {
  const Graph* g = node.attrs.get_graph(attr);
  EMBER_CHECK(g, Model, "[", op_name(node.op), "] node '", node.name, "': missing subgraph '",
              attr, "'");
  return *g;
}

// A scalar flag or count: one element of `dtype` (shape [] or [1]).
void check_scalar(const InferCtx& ctx, int i, DType dtype, const char* what) {
  if (!ctx.has(i)) return;
  if (ctx.in[i].dtype != dtype)
    ctx.fail(what, " must be ", dtype_name(dtype), ", got ", dtype_name(ctx.in[i].dtype));
  if (shape_numel(ctx.in[i].shape) != 1)
    ctx.fail(what, " must have one element, got shape ", shape_str(ctx.in[i].shape));
}

bool read_flag(const Tensor& t, const char* op, const std::string& node, const char* what) {
  EMBER_CHECK(t.dtype() == DType::Bool && t.numel() == 1, Input, "[", op, "] node '", node, "': ",
              what, " must be one bool, got ", dtype_name(t.dtype()), " ", shape_str(t.shape()));
  return t.ptr<bool>()[0];
}

// ---- If ---------------------------------------------------------------------------------------

std::vector<TensorType> infer_if(const InferCtx& ctx) {
  check_scalar(ctx, 0, DType::Bool, "cond");
  for (int i = 1; i < ctx.num_inputs(); i++)
    if (!ctx.has(i)) ctx.fail("captured input ", i, " is missing");
  for (const char* attr : {"then_branch", "else_branch"}) {
    const Graph& g = subgraph(ctx.node, attr);
    if ((int)g.inputs.size() != ctx.num_inputs() - 1)
      ctx.fail(attr, " takes ", g.inputs.size(), " inputs, the node passes ", ctx.num_inputs() - 1);
    if (g.outputs.size() != ctx.node.outputs.size())
      ctx.fail(attr, " has ", g.outputs.size(), " outputs, the node has ", ctx.node.outputs.size());
  }
  return {};
}

void run_if(const KernelCtx& ctx) {
  const Node& n = ctx.node;
  bool take = read_flag(ctx.input(0), "If", n.name, "cond");
  std::vector<Tensor> feeds;
  for (size_t i = 1; i < ctx.in.size(); i++) feeds.push_back(*ctx.in[i]);
  std::vector<Tensor> outs =
      runner(ctx).run_subgraph(subgraph(n, take ? "then_branch" : "else_branch"), feeds);
  for (size_t k = 0; k < ctx.out.size(); k++)
    if (ctx.out[k]) *ctx.out[k] = outs[k];
}

// ---- Loop -------------------------------------------------------------------------------------

struct LoopArity {
  int carried, captured, scans;
};

LoopArity loop_arity(const Node& node, int num_inputs) {
  int captured = (int)node.attrs.get_int("captured", 0);
  int carried = std::max(num_inputs, 2) - 2 - captured;
  int scans = (int)node.outputs.size() - carried;
  return {carried, captured, scans};
}

std::vector<TensorType> infer_loop(const InferCtx& ctx) {
  LoopArity a = loop_arity(ctx.node, ctx.num_inputs());
  if (a.captured < 0 || a.carried < 0) ctx.fail("captured = ", a.captured, " does not fit ", ctx.num_inputs(), " inputs");
  if (a.scans < 0) ctx.fail(a.carried, " loop-carried values but only ", ctx.node.outputs.size(), " outputs");
  check_scalar(ctx, 0, DType::I64, "M (trip count)");
  check_scalar(ctx, 1, DType::Bool, "cond");
  for (int i = 2; i < ctx.num_inputs(); i++)
    if (!ctx.has(i)) ctx.fail("input ", i, " is missing");
  const Graph& body = subgraph(ctx.node, "body");
  if ((int)body.inputs.size() != 2 + a.carried + a.captured)
    ctx.fail("body takes ", body.inputs.size(), " inputs, expected ", 2 + a.carried + a.captured,
             " (iteration, cond, ", a.carried, " carried, ", a.captured, " captured)");
  if ((int)body.outputs.size() != 1 + a.carried + a.scans)
    ctx.fail("body has ", body.outputs.size(), " outputs, expected ", 1 + a.carried + a.scans,
             " (cond, ", a.carried, " carried, ", a.scans, " scan outputs)");
  return {};
}

Tensor scalar_i64(int64_t v) {
  Tensor t = Tensor::empty(DType::I64, {});
  t.ptr<int64_t>()[0] = v;
  return t;
}

Tensor scalar_bool(bool v) {
  Tensor t = Tensor::empty(DType::Bool, {});
  t.ptr<bool>()[0] = v;
  return t;
}

// Scan outputs of every iteration stacked on a new leading axis. With no iterations the
// element type and shape come from the body's declared output (float32, [0] if undeclared).
Tensor stack_scan(const std::vector<Tensor>& parts, const ValueInfo& declared) {
  if (parts.empty()) {
    Shape s{0};
    for (const Dim& d : declared.dims) s.push_back(std::max<int64_t>(d.value, 0));
    return Tensor::empty(declared.dtype == DType::Count ? DType::F32 : declared.dtype, s);
  }
  Shape s = parts[0].shape();
  s.insert(s.begin(), (int64_t)parts.size());
  Tensor out = Tensor::empty(parts[0].dtype(), s);
  size_t step = parts[0].nbytes();
  for (size_t i = 0; i < parts.size(); i++)
    if (step) std::memcpy(out.ptr<char>() + i * step, parts[i].data(), step);
  return out;
}

void run_loop(const KernelCtx& ctx) {
  const Node& n = ctx.node;
  LoopArity a = loop_arity(n, (int)ctx.in.size());
  const Graph& body = subgraph(n, "body");
  int64_t trips = ctx.has_input(0) ? tensor_get_i64(ctx.input(0), 0) : INT64_MAX;
  bool cond = ctx.has_input(1) ? read_flag(ctx.input(1), "Loop", n.name, "cond") : true;
  std::vector<Tensor> carried, captured;
  for (int i = 0; i < a.carried; i++) carried.push_back(*ctx.in[2 + i]);
  for (int i = 0; i < a.captured; i++) captured.push_back(*ctx.in[2 + a.carried + i]);
  std::vector<std::vector<Tensor>> scans(a.scans);
  int64_t scan_bytes = 0, iter = 0;
  for (; iter < trips && cond; iter++) {
    EMBER_CHECK(iter < kMaxLoopIterations, Input, "[Loop] node '", n.name, "': over ",
                kMaxLoopIterations, " iterations (trip count ",
                ctx.has_input(0) ? std::to_string(trips) : "none", ")");
    std::vector<Tensor> feeds{scalar_i64(iter), scalar_bool(cond)};
    feeds.insert(feeds.end(), carried.begin(), carried.end());
    feeds.insert(feeds.end(), captured.begin(), captured.end());
    std::vector<Tensor> outs = runner(ctx).run_subgraph(body, feeds);
    cond = read_flag(outs[0], "Loop", n.name, "the body's cond output");
    for (int i = 0; i < a.carried; i++) carried[i] = outs[1 + i];
    for (int k = 0; k < a.scans; k++) {
      const Tensor& t = outs[1 + a.carried + k];
      if (!scans[k].empty()) {
        const Tensor& first = scans[k][0];
        EMBER_CHECK(t.dtype() == first.dtype() && t.shape() == first.shape(), Input, "[Loop] node '",
                    n.name, "': scan output ", k, " is ", dtype_name(t.dtype()), " ",
                    shape_str(t.shape()), " in iteration ", iter, " but ",
                    dtype_name(first.dtype()), " ", shape_str(first.shape()), " before");
      }
      scan_bytes += (int64_t)t.nbytes();
      EMBER_CHECK(scan_bytes <= kMaxTensorBytes, Input, "[Loop] node '", n.name,
                  "': scan outputs need over 2^40 bytes");
      scans[k].push_back(t);
    }
  }
  for (int i = 0; i < a.carried; i++) {
    // With no iterations the outputs are the inputs, which the caller may still reuse.
    if (ctx.out[i]) *ctx.out[i] = iter == 0 ? carried[i].clone() : carried[i];
  }
  for (int k = 0; k < a.scans; k++) {
    if (!ctx.out[a.carried + k]) continue;
    const ValueInfo& declared = body.values[body.outputs[1 + a.carried + k]];
    *ctx.out[a.carried + k] = stack_scan(scans[k], declared);
  }
}

// ---- NonZero ----------------------------------------------------------------------------------

std::vector<TensorType> infer_nonzero(const InferCtx& ctx) {
  elem_size(ctx, 0);
  return {};
}

// Output [rank, count] int64: the indices of non-zero elements in row-major order (numpy's
// nonzero; a scalar counts as rank 1).
void run_nonzero(const KernelCtx& ctx) {
  const Tensor& x = ctx.input(0);
  Shape dims = x.rank() ? x.shape() : Shape{1};
  int rank = (int)dims.size();
  int64_t n = x.numel(), count = 0;
  std::vector<uint8_t> nz(n);
  dispatch_dtype(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* p = x.ptr<T>();
    for (int64_t i = 0; i < n; i++) {
      nz[i] = load(p, i) != compute_t<T>(0);
      count += nz[i];
    }
  });
  Tensor out = Tensor::empty(DType::I64, {rank, count});
  int64_t* o = out.ptr<int64_t>();
  Shape strides = contiguous_strides(dims);
  for (int64_t i = 0, j = 0; i < n; i++) {
    if (!nz[i]) continue;
    for (int d = 0; d < rank; d++) o[d * count + j] = i / strides[d] % dims[d];
    j++;
  }
  *ctx.out[0] = out;
}

}  // namespace

static const int kManyOutputs = 1 << 20;

static const OpDef kOps[] = {
    {OpType::If, "If", 1, -1, 1, kManyOutputs, kOpDynamic,
     {{"then_branch", AttrKind::Graph, true}, {"else_branch", AttrKind::Graph, true}},
     infer_if, run_if},
    {OpType::Loop, "Loop", 0, -1, 0, kManyOutputs, kOpDynamic,
     {{"body", AttrKind::Graph, true}, {"captured", AttrKind::Int}}, infer_loop, run_loop},
    {OpType::NonZero, "NonZero", 1, 1, 1, 1, kOpDynamic, {}, infer_nonzero, run_nonzero},
};

std::span<const OpDef> op_defs_control() { return kOps; }

}  // namespace ember
