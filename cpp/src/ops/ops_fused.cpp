// Fused ops that graph passes create (cpp/src/graph/fuse.cpp); not ONNX ops.
//
// FusedMatMul: Y = act(A @ W + bias), replacing MatMul(A, W) [-> Add(., bias)] [-> Relu |
// Gelu] where W is a constant [K, N] weight, stored pre-packed for the GEMM micro-kernels:
// Wp [ceil(N / 16), K, 16], Wp[p, k, j] = W[k, 16 p + j] (zero past N). Inputs A [..., K] f32,
// Wp, bias [N] (optional); attrs n = N, activation "none" | "relu" | "gelu" | "gelu_tanh".
// The reference sums k in order in float, adds the bias, then applies the activation in double
// like the Relu/Gelu references.
#include <cmath>

#include "ops/op_util.h"

namespace ember {
namespace {

constexpr int64_t kPanel = 16;

enum class Act { None, Relu, Gelu, GeluTanh };

Act fused_act(const InferCtx* ctx, const Node& node) {
  std::string a = node.attrs.get_string("activation", "none");
  if (a == "none") return Act::None;
  if (a == "relu") return Act::Relu;
  if (a == "gelu") return Act::Gelu;
  if (a == "gelu_tanh") return Act::GeluTanh;
  if (ctx) ctx->fail("unknown activation '", a, "'");
  fail(ErrorKind::Model, "[FusedMatMul] unknown activation '", a, "'");
}

std::vector<TensorType> infer_fused_matmul(const InferCtx& ctx) {
  const TensorType& a = ctx.in[0];
  const TensorType& w = ctx.in[1];
  int64_t n = ctx.node.attrs.get_int("n", -1);
  fused_act(&ctx, ctx.node);
  if (a.dtype != DType::F32 || w.dtype != DType::F32) ctx.fail("A and W must be float32");
  if (a.shape.empty()) ctx.fail("A must have rank >= 1");
  int64_t k = a.shape.back();
  if (w.shape.size() != 3 || w.shape[2] != kPanel || w.shape[1] != k || n < 0 ||
      w.shape[0] != (n + kPanel - 1) / kPanel)
    ctx.fail("packed W ", shape_str(w.shape), " does not fit K = ", k, ", N = ", n);
  if (ctx.has(2) && (ctx.in[2].dtype != DType::F32 || ctx.in[2].shape != Shape{n}))
    ctx.fail("bias must be float32 [", n, "], got ", shape_str(ctx.in[2].shape));
  Shape out = a.shape;
  out.back() = n;
  return {{DType::F32, out}};
}

double activate(Act act, double v) {
  switch (act) {
    case Act::None: return v;
    case Act::Relu: return v < 0 ? 0.0 : v;
    case Act::Gelu: return gelu_erf_d(v);
    case Act::GeluTanh: return gelu_tanh_d(v);
  }
  return v;
}

void ref_fused_matmul(const KernelCtx& ctx) {
  const Tensor& a = ctx.input(0);  // [..., K]
  const Tensor& w = ctx.input(1);  // [ceil(N / 16), K, 16]
  Tensor& y = ctx.output(0);       // [..., N]
  int64_t k_dim = w.dim(1), n = ctx.node.attrs.get_int("n", 0);
  int64_t rows = k_dim ? a.numel() / k_dim : y.numel() / std::max<int64_t>(n, 1);
  const float* ap = a.ptr<float>();
  const float* wp = w.ptr<float>();
  const float* bias = ctx.has_input(2) ? ctx.input(2).ptr<float>() : nullptr;
  Act act = fused_act(nullptr, ctx.node);
  float* yp = y.ptr<float>();
  for (int64_t m = 0; m < rows; m++) {
    for (int64_t j = 0; j < n; j++) {
      const float* col = wp + (j / kPanel) * k_dim * kPanel + j % kPanel;
      float acc = 0.0f;
      for (int64_t k = 0; k < k_dim; k++) acc += ap[m * k_dim + k] * col[k * kPanel];
      if (bias) acc += bias[j];
      yp[m * n + j] = (float)activate(act, acc);
    }
  }
}

}  // namespace

static const OpDef kOps[] = {
    {OpType::FusedMatMul, "FusedMatMul", 2, 3, 1, 1, kOpFused,
     {{"n", AttrKind::Int, true}, {"activation", AttrKind::String}}, infer_fused_matmul,
     ref_fused_matmul},
};

std::span<const OpDef> op_defs_fused() { return kOps; }

}  // namespace ember
