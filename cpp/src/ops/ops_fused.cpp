// Fused ops that graph passes create (cpp/src/graph/fuse.cpp); not ONNX ops.
//
// FusedMatMul: Y = act(A @ W + bias), replacing MatMul(A, W) [-> Add(., bias)] [-> Relu |
// Gelu] where W is a constant [K, N] weight, stored pre-packed for the GEMM micro-kernels:
// Wp [ceil(N / 16), K, 16], Wp[p, k, j] = W[k, 16 p + j] (zero past N). Inputs A [..., K] f32,
// Wp, bias [N] (optional); attrs n = N, activation "none" | "relu" | "gelu" | "gelu_tanh".
// The reference sums k in order in float, adds the bias, then applies the activation in double
// like the Relu/Gelu references.
//
// Attention: Y = softmax(scale(Q @ Kt) + mask) @ V, replacing MatMul(Q, Kt) -> Mul or Div by a
// scalar -> [Add(., mask)] -> Softmax(axis -1) -> MatMul(., V). Q [..., S, D], Kt [..., D, T]
// (keys already transposed), V [..., T, Dv], mask (optional, f32) broadcasting to [..., S, T]
// without growing S or T; leading dims broadcast as MatMul's do. attrs scale (float),
// scale_op "mul" | "div" (how the scalar was applied, so the rounding matches). The reference
// follows the unfused ops in float: scores summed over d in order, scaled, masked, softmax
// (max-subtracted), then the weighted sum over t in order.
#include <cmath>
#include <vector>

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

// ---- Attention ----

struct AttnDims {
  int64_t S, D, T, Dv;
  Shape batch;                                // broadcast leading dims of Q, Kt, V, mask
  Shape q_st, k_st, v_st, m_st;               // per-operand strides over `batch`, in matrices
  int64_t mask_s = 0, mask_t = 0;             // mask strides along S and T (0: broadcast)
  bool has_mask = false;
};

// Leading dims of `s` (rank - 2 of them; a mask of rank < 2 has none).
Shape lead(const Shape& s) { return s.size() >= 2 ? Shape(s.begin(), s.end() - 2) : Shape{}; }

AttnDims attn_dims(const InferCtx& ctx, const Shape& q, const Shape& k, const Shape& v,
                   const Shape* mask) {
  if (q.size() < 2 || k.size() < 2 || v.size() < 2)
    ctx.fail("Q, Kt and V need rank >= 2, got ", shape_str(q), ", ", shape_str(k), ", ", shape_str(v));
  AttnDims d;
  d.S = q[q.size() - 2];
  d.D = q.back();
  d.T = k.back();
  d.Dv = v.back();
  if (k[k.size() - 2] != d.D || v[v.size() - 2] != d.T)
    ctx.fail("Q ", shape_str(q), ", Kt ", shape_str(k), " and V ", shape_str(v), " do not chain");
  d.batch = broadcast_shapes(ctx, broadcast_shapes(ctx, lead(q), lead(k)), lead(v));
  if (mask) {
    d.has_mask = true;
    const Shape& m = *mask;
    int64_t ms = m.size() >= 2 ? m[m.size() - 2] : 1, mt = m.empty() ? 1 : m.back();
    if ((ms != 1 && ms != d.S) || (mt != 1 && mt != d.T))
      ctx.fail("mask ", shape_str(m), " does not broadcast to scores [..., ", d.S, ", ", d.T, "]");
    d.batch = broadcast_shapes(ctx, d.batch, lead(m));
    d.mask_t = mt == 1 ? 0 : 1;
    d.mask_s = ms == 1 ? 0 : mt;
    Shape mats = lead(m);
    d.m_st = broadcast_strides(mats, d.batch);
    for (int64_t& x : d.m_st) x *= ms * mt;
  }
  auto strides = [&](const Shape& full, int64_t mat) {
    Shape st = broadcast_strides(lead(full), d.batch);
    for (int64_t& x : st) x *= mat;
    return st;
  };
  d.q_st = strides(q, d.S * d.D);
  d.k_st = strides(k, d.D * d.T);
  d.v_st = strides(v, d.T * d.Dv);
  return d;
}

std::vector<TensorType> infer_attention(const InferCtx& ctx) {
  for (int i = 0; i < ctx.num_inputs(); i++)
    if (ctx.has(i) && ctx.in[i].dtype != DType::F32) ctx.fail("input ", i, " must be float32");
  std::string op = ctx.node.attrs.get_string("scale_op", "mul");
  if (op != "mul" && op != "div") ctx.fail("scale_op must be 'mul' or 'div', got '", op, "'");
  AttnDims d = attn_dims(ctx, ctx.in[0].shape, ctx.in[1].shape, ctx.in[2].shape,
                         ctx.has(3) ? &ctx.in[3].shape : nullptr);
  Shape out = d.batch;
  out.push_back(d.S);
  out.push_back(d.Dv);
  return {{DType::F32, out}};
}

void ref_attention(const KernelCtx& ctx) {
  InferCtx ic{ctx.node, {}, {}};
  for (const Tensor* t : ctx.in) ic.in.push_back(t ? TensorType{t->dtype(), t->shape()} : TensorType{});
  const Shape* mshape = ctx.has_input(3) ? &ctx.input(3).shape() : nullptr;
  AttnDims d = attn_dims(ic, ctx.input(0).shape(), ctx.input(1).shape(), ctx.input(2).shape(), mshape);
  float scale = (float)ctx.node.attrs.get_float("scale", 1.0);
  bool div = ctx.node.attrs.get_string("scale_op", "mul") == "div";
  const float* q = ctx.input(0).ptr<float>();
  const float* k = ctx.input(1).ptr<float>();
  const float* v = ctx.input(2).ptr<float>();
  const float* m = d.has_mask ? ctx.input(3).ptr<float>() : nullptr;
  float* y = ctx.output(0).ptr<float>();
  std::vector<float> p(d.T);
  int64_t bi = 0;
  for (BroadcastIter it(d.batch, {d.q_st, d.k_st, d.v_st, d.has_mask ? d.m_st : Shape(d.batch.size(), 0)});
       !it.done(); it.next(), bi++) {
    for (int64_t s = 0; s < d.S; s++) {
      const float* qs = q + it.off[0] + s * d.D;
      float mx = -INFINITY;
      for (int64_t t = 0; t < d.T; t++) {
        float acc = 0.0f;
        for (int64_t j = 0; j < d.D; j++) acc += qs[j] * k[it.off[1] + j * d.T + t];
        acc = div ? acc / scale : acc * scale;
        if (m) acc += m[it.off[3] + s * d.mask_s + t * d.mask_t];
        p[t] = acc;
        mx = std::max(mx, acc);
      }
      float sum = 0.0f;
      for (int64_t t = 0; t < d.T; t++) sum += (p[t] = std::exp(p[t] - mx));
      for (int64_t t = 0; t < d.T; t++) p[t] /= sum;
      float* ys = y + (bi * d.S + s) * d.Dv;
      for (int64_t j = 0; j < d.Dv; j++) {
        float acc = 0.0f;
        for (int64_t t = 0; t < d.T; t++) acc += p[t] * v[it.off[2] + t * d.Dv + j];
        ys[j] = acc;
      }
    }
  }
}

}  // namespace

static const OpDef kOps[] = {
    {OpType::FusedMatMul, "FusedMatMul", 2, 3, 1, 1, kOpFused,
     {{"n", AttrKind::Int, true}, {"activation", AttrKind::String}}, infer_fused_matmul,
     ref_fused_matmul},
    {OpType::Attention, "Attention", 3, 4, 1, 1, kOpFused,
     {{"scale", AttrKind::Float}, {"scale_op", AttrKind::String}}, infer_attention, ref_attention},
};

std::span<const OpDef> op_defs_fused() { return kOps; }

}  // namespace ember
