// Fused ops that graph passes create (cpp/src/graph/fuse.cpp); not ONNX ops.
//
// FusedMatMul: Y = act(A @ W + bias), replacing MatMul(A, W) [-> Add(., bias)] [-> Relu |
// Gelu] where W is a constant [K, N] weight, stored pre-packed for the GEMM micro-kernels:
// Wp [ceil(N / 16), K, 16], Wp[p, k, j] = W[k, 16 p + j] (zero past N). Inputs A [..., K] f32,
// Wp, bias [N] (optional); attrs n = N, activation "none" | "relu" | "gelu" | "gelu_tanh",
// packed (default 1). packed 0: W is plain [K, N] (device sessions: the device reads it as it
// is, its GEMM's epilogue adds the bias; a CPU fallback packs it per call).
// The reference sums k in order in float, adds the bias, then applies the activation in double
// like the Relu/Gelu references.
// W in bf16 (precision="bf16" sessions on CPUs with AVX512_BF16; graph/fuse.cpp): Wp bf16
// [ceil(N / 16), ceil(K / 2), 16, 2], Wp[p, q, j, e] = bf16(W[2 q + e, 16 p + j]) (zero past K
// and N; kernels/generic/gemm_bf16.h). A is rounded to bf16 (nearest even) and each pair's
// exact products are added in float, k = 2q + 1 before 2q, as vdpbf16ps adds them.
//
// Attention: Y = softmax(scale(Q @ Kt) + mask) @ V, replacing MatMul(Q, Kt) -> Mul or Div by a
// scalar -> [Add(., mask)] -> Softmax(axis -1) -> MatMul(., V). Q [..., S, D], Kt [..., D, T]
// (keys already transposed), V [..., T, Dv], mask (optional, f32) broadcasting to [..., S, T]
// without growing S or T; leading dims broadcast as MatMul's do. attrs scale (float),
// scale_op "mul" | "div" (how the scalar was applied, so the rounding matches), layout "bhsd"
// (as above) | "bshd" (Q, K, V, Y as [B, S, H, D]: the head transposes absorbed; see
// ops/attention_geom.h). The reference
// follows the unfused ops in float: scores summed over d in order, scaled, masked, softmax
// (max-subtracted), then the weighted sum over t in order.
// precision "bf16" (fuse_attention in precision="bf16" sessions): Q, Kt, V and the
// exponentials are rounded to bf16 and both sums run over pairs (d or t, odd index first) as
// vdpbf16ps adds them; softmax stays fp32 and each output row is divided by its fp32 sum of
// exponentials after P V, as the kernels do.
#include <cmath>
#include <vector>

#include "ops/attention_geom.h"
#include "ops/op_util.h"

namespace ember {
namespace {

constexpr int64_t kPanel = 16;

std::vector<TensorType> infer_fused_matmul(const InferCtx& ctx) {
  const TensorType& a = ctx.in[0];
  const TensorType& w = ctx.in[1];
  int64_t n = ctx.node.attrs.get_int("n", -1);
  fused_activation(&ctx, ctx.node);
  if (a.dtype != DType::F32 || (w.dtype != DType::F32 && w.dtype != DType::BF16))
    ctx.fail("A must be float32 and W float32 or bfloat16 (packed)");
  if (a.shape.empty()) ctx.fail("A must have rank >= 1");
  int64_t k = a.shape.back();
  if (w.dtype == DType::BF16) {
    if (!fused_matmul_packed(ctx.node) || n < 0 ||
        w.shape != Shape{(n + kPanel - 1) / kPanel, (k + 1) / 2, kPanel, 2})
      ctx.fail("bf16 W ", shape_str(w.shape), " is not packed pairs for K = ", k, ", N = ", n);
  } else if (!fused_matmul_packed(ctx.node)) {
    if (w.shape != Shape{k, n})
      ctx.fail("W ", shape_str(w.shape), " is not [K = ", k, ", N = ", n, "]");
  } else if (w.shape.size() != 3 || w.shape[2] != kPanel || w.shape[1] != k || n < 0 ||
             w.shape[0] != (n + kPanel - 1) / kPanel) {
    ctx.fail("packed W ", shape_str(w.shape), " does not fit K = ", k, ", N = ", n);
  }
  if (ctx.has(2) && (ctx.in[2].dtype != DType::F32 || ctx.in[2].shape != Shape{n}))
    ctx.fail("bias must be float32 [", n, "], got ", shape_str(ctx.in[2].shape));
  Shape out = a.shape;
  out.back() = n;
  return {{DType::F32, out}};
}

// FusedMatMul with bf16 pairs W (see the top of the file).
void ref_fused_matmul_bf16(const KernelCtx& ctx) {
  const Tensor& a = ctx.input(0);  // [..., K]
  const Tensor& w = ctx.input(1);  // [ceil(N / 16), ceil(K / 2), 16, 2] bf16
  Tensor& y = ctx.output(0);       // [..., N]
  const int64_t k_dim = a.dim(-1), kp = (k_dim + 1) / 2, n = ctx.node.attrs.get_int("n", 0);
  const int64_t rows = n ? y.numel() / n : 0;
  const float* ap = a.ptr<float>();
  const uint16_t* wp = static_cast<const uint16_t*>(w.data());
  const float* bias = ctx.has_input(2) ? ctx.input(2).ptr<float>() : nullptr;
  FusedAct act = fused_activation(nullptr, ctx.node);
  float* yp = y.ptr<float>();
  std::vector<float> ar(2 * kp, 0.0f);
  for (int64_t m = 0; m < rows; m++) {
    for (int64_t k = 0; k < k_dim; k++) ar[k] = bf16_to_f32(f32_to_bf16(ap[m * k_dim + k]));
    for (int64_t j = 0; j < n; j++) {
      const uint16_t* col = wp + ((j / kPanel) * kp * kPanel + j % kPanel) * 2;
      float acc = 0.0f;
      for (int64_t q = 0; q < kp; q++) {
        acc += ar[2 * q + 1] * bf16_to_f32(col[q * kPanel * 2 + 1]);
        acc += ar[2 * q] * bf16_to_f32(col[q * kPanel * 2]);
        // NOTE: NaN stays NaN, so this exit changes nothing but keeps g++ 12 -O3 from
        // vectorising the in-order sum, which it gets wrong (K = 7 summed 29 for 28).
        if (acc != acc) break;
      }
      if (bias) acc += bias[j];
      yp[m * n + j] = (float)fused_activate_d(act, acc);
    }
  }
}

void ref_fused_matmul(const KernelCtx& ctx) {
  if (ctx.input(1).dtype() == DType::BF16) return ref_fused_matmul_bf16(ctx);
  const Tensor& a = ctx.input(0);  // [..., K]
  const Tensor& w = ctx.input(1);  // [ceil(N / 16), K, 16], or [K, N] when not packed
  Tensor& y = ctx.output(0);       // [..., N]
  const bool packed = fused_matmul_packed(ctx.node);
  int64_t k_dim = packed ? w.dim(1) : w.dim(0), n = ctx.node.attrs.get_int("n", 0);
  int64_t rows = k_dim ? a.numel() / k_dim : y.numel() / std::max<int64_t>(n, 1);
  const float* ap = a.ptr<float>();
  const float* wp = w.ptr<float>();
  const float* bias = ctx.has_input(2) ? ctx.input(2).ptr<float>() : nullptr;
  FusedAct act = fused_activation(nullptr, ctx.node);
  float* yp = y.ptr<float>();
  for (int64_t m = 0; m < rows; m++) {
    for (int64_t j = 0; j < n; j++) {
      const float* col = packed ? wp + (j / kPanel) * k_dim * kPanel + j % kPanel : wp + j;
      const int64_t step = packed ? kPanel : n;
      float acc = 0.0f;
      for (int64_t k = 0; k < k_dim; k++) acc += ap[m * k_dim + k] * col[k * step];
      if (bias) acc += bias[j];
      yp[m * n + j] = (float)fused_activate_d(act, acc);
    }
  }
}

// ---- Attention ----

std::vector<TensorType> infer_attention(const InferCtx& ctx) {
  for (int i = 0; i < ctx.num_inputs(); i++)
    if (ctx.has(i) && ctx.in[i].dtype != DType::F32) ctx.fail("input ", i, " must be float32");
  std::string op = ctx.node.attrs.get_string("scale_op", "mul");
  if (op != "mul" && op != "div") ctx.fail("scale_op must be 'mul' or 'div', got '", op, "'");
  std::string prec = ctx.node.attrs.get_string("precision", "fp32");
  if (prec != "fp32" && prec != "bf16")
    ctx.fail("precision must be 'fp32' or 'bf16', got '", prec, "'");
  AttnGeom g = attention_geom(ctx, ctx.in[0].shape, ctx.in[1].shape, ctx.in[2].shape,
                              ctx.has(3) ? &ctx.in[3].shape : nullptr);
  return {{DType::F32, g.out}};
}

// bf16 pair sum: acc + sum over pairs of a[i] * b[i], i = 2q + 1 then 2q, the operands rounded
// to bf16 (i >= n: zero); a[i] at a + i * as, b[i] at b + i * bs.
float bf16_pair_sum(const float* a, int64_t as, const float* b, int64_t bs, int64_t n) {
  auto rb = [](float x) { return bf16_to_f32(f32_to_bf16(x)); };
  float acc = 0.0f;
  for (int64_t i = 0; i < n; i += 2) {
    if (i + 1 < n) acc += rb(a[(i + 1) * as]) * rb(b[(i + 1) * bs]);
    acc += rb(a[i * as]) * rb(b[i * bs]);
    if (acc != acc) break;  // NOTE: see ref_fused_matmul_bf16 (g++ 12 vectorised in-order sum)
  }
  return acc;
}

void ref_attention_bf16(const KernelCtx& ctx, const AttnGeom& g) {
  float scale = (float)ctx.node.attrs.get_float("scale", 1.0);
  bool div = ctx.node.attrs.get_string("scale_op", "mul") == "div";
  const float* q = ctx.input(0).ptr<float>();
  const float* k = ctx.input(1).ptr<float>();
  const float* v = ctx.input(2).ptr<float>();
  const float* m = g.has_mask ? ctx.input(3).ptr<float>() : nullptr;
  float* y = ctx.output(0).ptr<float>();
  std::vector<float> p(g.T);
  for (BroadcastIter it(g.batch, {g.q_st, g.k_st, g.v_st, g.m_st, g.y_st}); !it.done(); it.next()) {
    for (int64_t s = 0; s < g.S; s++) {
      const float* qs = q + it.off[0] + s * g.q_rs;
      float mx = -INFINITY;
      for (int64_t t = 0; t < g.T; t++) {
        float acc = bf16_pair_sum(qs, 1, k + it.off[1] + t * g.k_t, g.k_d, g.D);
        acc = div ? acc / scale : acc * scale;
        if (m) acc += m[it.off[3] + s * g.mask_s + t * g.mask_t];
        p[t] = acc;
        mx = std::max(mx, acc);
      }
      double sum = 0.0;
      for (int64_t t = 0; t < g.T; t++) sum += (p[t] = std::exp(p[t] - mx));
      float* ys = y + it.off[4] + s * g.y_rs;
      for (int64_t j = 0; j < g.Dv; j++)
        ys[j] = g.T ? bf16_pair_sum(p.data(), 1, v + it.off[2] + j, g.v_t, g.T) / (float)sum : 0.0f;
    }
  }
}

void ref_attention(const KernelCtx& ctx) {
  InferCtx ic{ctx.node, {}, {}};
  for (const Tensor* t : ctx.in) ic.in.push_back(t ? TensorType{t->dtype(), t->shape()} : TensorType{});
  const Shape* mshape = ctx.has_input(3) ? &ctx.input(3).shape() : nullptr;
  AttnGeom g = attention_geom(ic, ctx.input(0).shape(), ctx.input(1).shape(), ctx.input(2).shape(), mshape);
  if (ctx.node.attrs.get_string("precision", "fp32") == "bf16") return ref_attention_bf16(ctx, g);
  float scale = (float)ctx.node.attrs.get_float("scale", 1.0);
  bool div = ctx.node.attrs.get_string("scale_op", "mul") == "div";
  const float* q = ctx.input(0).ptr<float>();
  const float* k = ctx.input(1).ptr<float>();
  const float* v = ctx.input(2).ptr<float>();
  const float* m = g.has_mask ? ctx.input(3).ptr<float>() : nullptr;
  float* y = ctx.output(0).ptr<float>();
  std::vector<float> p(g.T);
  for (BroadcastIter it(g.batch, {g.q_st, g.k_st, g.v_st, g.m_st, g.y_st}); !it.done(); it.next()) {
    for (int64_t s = 0; s < g.S; s++) {
      const float* qs = q + it.off[0] + s * g.q_rs;
      float mx = -INFINITY;
      for (int64_t t = 0; t < g.T; t++) {
        float acc = 0.0f;
        for (int64_t j = 0; j < g.D; j++) acc += qs[j] * k[it.off[1] + j * g.k_d + t * g.k_t];
        acc = div ? acc / scale : acc * scale;
        if (m) acc += m[it.off[3] + s * g.mask_s + t * g.mask_t];
        p[t] = acc;
        mx = std::max(mx, acc);
      }
      float sum = 0.0f;
      for (int64_t t = 0; t < g.T; t++) sum += (p[t] = std::exp(p[t] - mx));
      for (int64_t t = 0; t < g.T; t++) p[t] /= sum;
      float* ys = y + it.off[4] + s * g.y_rs;
      for (int64_t j = 0; j < g.Dv; j++) {
        float acc = 0.0f;
        for (int64_t t = 0; t < g.T; t++) acc += p[t] * v[it.off[2] + t * g.v_t + j];
        ys[j] = acc;
      }
    }
  }
}

// Leading dims of `s` (rank - 2 of them; a mask of rank < 2 has none).
Shape lead(const Shape& s) { return s.size() >= 2 ? Shape(s.begin(), s.end() - 2) : Shape{}; }

// The batch dims of a row-major [batch..., r, c] operand and the element step of each.
std::pair<Shape, Shape> matrix_batch(const Shape& full) {
  Shape dims = lead(full), unit(dims.size());
  int64_t step = full.size() >= 2 ? full[full.size() - 2] * full.back() : 1;
  for (int i = (int)dims.size() - 1; i >= 0; i--) {
    unit[i] = step;
    step *= dims[i];
  }
  return {dims, unit};
}

// Element offsets over `batch` of an operand with batch dims `dims` (trailing-aligned), `unit`
// elements apart per step of each; 0 where the operand broadcasts.
Shape batch_strides(const Shape& dims, const Shape& batch, const Shape& unit) {
  Shape st(batch.size(), 0);
  size_t off = batch.size() - dims.size();
  for (size_t i = 0; i < dims.size(); i++) st[off + i] = dims[i] == 1 ? 0 : unit[i];
  return st;
}

}  // namespace

FusedAct fused_activation(const InferCtx* ctx, const Node& node) {
  std::string a = node.attrs.get_string("activation", "none");
  if (a == "none") return FusedAct::None;
  if (a == "relu") return FusedAct::Relu;
  if (a == "gelu") return FusedAct::Gelu;
  if (a == "gelu_tanh") return FusedAct::GeluTanh;
  if (ctx) ctx->fail("unknown activation '", a, "'");
  fail(ErrorKind::Model, "[", op_name(node.op), "] node '", node.name, "': unknown activation '", a, "'");
}

double fused_activate_d(FusedAct act, double v) {
  switch (act) {
    case FusedAct::None: return v;
    case FusedAct::Relu: return v < 0 ? 0.0 : v;
    case FusedAct::Gelu: return gelu_erf_d(v);
    case FusedAct::GeluTanh: return gelu_tanh_d(v);
  }
  return v;
}

AttnGeom attention_geom(const InferCtx& ctx, const Shape& q, const Shape& k, const Shape& v,
                        const Shape* mask) {
  AttnGeom g;
  std::string layout = ctx.node.attrs.get_string("layout", "bhsd");
  if (layout == "bhsd") {
    if (q.size() < 2 || k.size() < 2 || v.size() < 2)
      ctx.fail("Q, Kt and V need rank >= 2, got ", shape_str(q), ", ", shape_str(k), ", ", shape_str(v));
    g.S = q[q.size() - 2];
    g.D = q.back();
    g.T = k.back();
    g.Dv = v.back();
    if (k[k.size() - 2] != g.D || v[v.size() - 2] != g.T)
      ctx.fail("Q ", shape_str(q), ", Kt ", shape_str(k), " and V ", shape_str(v), " do not chain");
    g.batch = broadcast_shapes(ctx, broadcast_shapes(ctx, lead(q), lead(k)), lead(v));
    auto [qd, qu] = matrix_batch(q);
    auto [kd, ku] = matrix_batch(k);
    auto [vd, vu] = matrix_batch(v);
    g.q_rs = g.D;
    g.k_d = g.T;
    g.k_t = 1;
    g.v_t = g.Dv;
    g.y_rs = g.Dv;
    if (mask) g.batch = broadcast_shapes(ctx, g.batch, lead(*mask));
    g.q_st = batch_strides(qd, g.batch, qu);
    g.k_st = batch_strides(kd, g.batch, ku);
    g.v_st = batch_strides(vd, g.batch, vu);
    g.out = g.batch;
    g.out.push_back(g.S);
    g.out.push_back(g.Dv);
    auto [yd, yu] = matrix_batch(g.out);
    g.y_st = batch_strides(yd, g.batch, yu);
  } else if (layout == "bshd") {
    if (q.size() != 4 || k.size() != 4 || v.size() != 4)
      ctx.fail("layout bshd needs Q, K, V of rank 4, got ", shape_str(q), ", ", shape_str(k), ", ",
               shape_str(v));
    g.S = q[1];
    g.D = q[3];
    g.T = k[1];
    g.Dv = v[3];
    if (k[3] != g.D || v[1] != g.T)
      ctx.fail("Q ", shape_str(q), ", K ", shape_str(k), " and V ", shape_str(v), " do not chain");
    Shape qb{q[0], q[2]}, kb{k[0], k[2]}, vb{v[0], v[2]};
    g.batch = broadcast_shapes(ctx, broadcast_shapes(ctx, qb, kb), vb);
    if (mask) g.batch = broadcast_shapes(ctx, g.batch, lead(*mask));
    if (g.batch.size() != 2) ctx.fail("mask ", shape_str(*mask), " has more batch dims than [B, H]");
    g.q_rs = q[2] * g.D;
    g.k_d = 1;
    g.k_t = k[2] * g.D;
    g.v_t = v[2] * g.Dv;
    g.q_st = batch_strides(qb, g.batch, {g.S * q[2] * g.D, g.D});
    g.k_st = batch_strides(kb, g.batch, {g.T * k[2] * g.D, g.D});
    g.v_st = batch_strides(vb, g.batch, {g.T * v[2] * g.Dv, g.Dv});
    g.out = {g.batch[0], g.S, g.batch[1], g.Dv};
    g.y_rs = g.batch[1] * g.Dv;
    g.y_st = {g.S * g.batch[1] * g.Dv, g.Dv};
  } else {
    ctx.fail("layout must be 'bhsd' or 'bshd', got '", layout, "'");
  }
  g.m_st = Shape(g.batch.size(), 0);
  if (mask) {
    g.has_mask = true;
    const Shape& m = *mask;
    int64_t ms = m.size() >= 2 ? m[m.size() - 2] : 1, mt = m.empty() ? 1 : m.back();
    if ((ms != 1 && ms != g.S) || (mt != 1 && mt != g.T))
      ctx.fail("mask ", shape_str(m), " does not broadcast to scores [..., ", g.S, ", ", g.T, "]");
    g.mask_t = mt == 1 ? 0 : 1;
    g.mask_s = ms == 1 ? 0 : mt;
    auto [md, mu] = matrix_batch(m);
    g.m_st = batch_strides(md, g.batch, mu);
  }
  return g;
}

static const OpDef kOps[] = {
    {OpType::FusedMatMul, "FusedMatMul", 2, 3, 1, 1, kOpFused,
     {{"n", AttrKind::Int, true}, {"activation", AttrKind::String}, {"packed", AttrKind::Int}},
     infer_fused_matmul,
     ref_fused_matmul},
    {OpType::Attention, "Attention", 3, 4, 1, 1, kOpFused,
     {{"scale", AttrKind::Float}, {"scale_op", AttrKind::String}, {"layout", AttrKind::String},
      {"precision", AttrKind::String}},
     infer_attention, ref_attention},
};

std::span<const OpDef> op_defs_fused() { return kOps; }

}  // namespace ember
