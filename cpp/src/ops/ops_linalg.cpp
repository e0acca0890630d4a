// Linear algebra and normalisation: MatMul (numpy matmul), Gemm, LayerNormalization,
// RMSNormalization, Softmax / LogSoftmax (opset 13, plus the opset<13 2-D coercion behind `legacy_axis_2d`).
// References accumulate floats in double and integers in int64 (wrapping like numpy).
#include "ops/op_util.h"

namespace ember {
namespace {

bool is_matmul_dtype(DType t) {
  return t == DType::F32 || t == DType::F16 || t == DType::BF16 || t == DType::F64 ||
         t == DType::I32 || t == DType::I64;
}

bool is_float_dtype(DType t) {
  return t == DType::F32 || t == DType::F16 || t == DType::BF16 || t == DType::F64;
}

// Accumulator type of the references: double for floats, wrapping uint64 for integers.
template <class T>
using acc_t = std::conditional_t<is_float_v<T>, double, uint64_t>;

template <class T>
inline acc_t<T> to_acc(const T* p, int64_t i) {
  if constexpr (is_float_v<T>) return (double)load(p, i);
  else return (uint64_t)(int64_t)p[i];
}

template <class T>
inline void from_acc(T* p, int64_t i, acc_t<T> v) {
  if constexpr (is_float_v<T>) store(p, i, (compute_t<T>)v);
  else p[i] = (T)(int64_t)v;
}

// ---- MatMul ---------------------------------------------------------------------------------

// Shapes of a numpy matmul: 1-D operands are promoted ([K] -> [1, K] for A, [K, 1] for B)
// and the promoted dim is dropped from the result.
struct MatMulDims {
  int64_t M = 1, N = 1, K = 1;
  Shape a_batch, b_batch, batch, out;
};

MatMulDims matmul_dims(const InferCtx& ctx, const Shape& a, const Shape& b) {
  if (a.empty() || b.empty())
    ctx.fail("operands must have rank >= 1, got ", shape_str(a), " and ", shape_str(b));
  MatMulDims d;
  bool a1 = a.size() == 1, b1 = b.size() == 1;
  d.M = a1 ? 1 : a[a.size() - 2];
  d.K = a.back();
  int64_t kb = b1 ? b[0] : b[b.size() - 2];
  d.N = b1 ? 1 : b.back();
  if (d.K != kb) ctx.fail("inner dims differ: ", shape_str(a), " @ ", shape_str(b));
  if (!a1) d.a_batch.assign(a.begin(), a.end() - 2);
  if (!b1) d.b_batch.assign(b.begin(), b.end() - 2);
  d.batch = broadcast_shapes(ctx, d.a_batch, d.b_batch);
  d.out = d.batch;
  if (!a1) d.out.push_back(d.M);
  if (!b1) d.out.push_back(d.N);
  return d;
}

std::vector<TensorType> infer_matmul(const InferCtx& ctx) {
  DType t = ctx.in[0].dtype;
  if (!is_matmul_dtype(t)) ctx.fail("unsupported dtype ", dtype_name(t));
  if (ctx.in[1].dtype != t)
    ctx.fail("input 1 is ", dtype_name(ctx.in[1].dtype), ", input 0 is ", dtype_name(t));
  return one(t, matmul_dims(ctx, ctx.in[0].shape, ctx.in[1].shape).out);
}

template <class T>
void matmul_ref_typed(const MatMulDims& d, const Tensor& a, const Tensor& b, Tensor& out) {
  const T* pa = a.ptr<T>();
  const T* pb = b.ptr<T>();
  T* po = out.ptr<T>();
  Shape sa = broadcast_strides(d.a_batch, d.batch);
  Shape sb = broadcast_strides(d.b_batch, d.batch);
  int64_t mn = d.M * d.N, mk = d.M * d.K, kn = d.K * d.N;
  int64_t bi = 0;
  for (BroadcastIter it(d.batch, {sa, sb}); !it.done(); it.next(), bi++) {
    const T* A = pa + it.off[0] * mk;
    const T* B = pb + it.off[1] * kn;
    T* O = po + bi * mn;
    for (int64_t m = 0; m < d.M; m++) {
      for (int64_t n = 0; n < d.N; n++) {
        acc_t<T> s = 0;
        for (int64_t k = 0; k < d.K; k++) s += to_acc(A, m * d.K + k) * to_acc(B, k * d.N + n);
        from_acc(O, m * d.N + n, s);
      }
    }
  }
}

void ref_matmul(const KernelCtx& ctx) {
  const Tensor& a = ctx.input(0);
  const Tensor& b = ctx.input(1);
  InferCtx ic{ctx.node, {}, {}};
  MatMulDims d = matmul_dims(ic, a.shape(), b.shape());
  dispatch_dtype(a.dtype(), [&](auto t) {
    using T = decltype(t);
    if constexpr (std::is_same_v<T, bool> || sizeof(T) < 2 || std::is_same_v<T, int16_t>) {
      fail(ErrorKind::Model, "[MatMul] unsupported dtype ", dtype_name(a.dtype()));
    } else {
      matmul_ref_typed<T>(d, a, b, ctx.output(0));
    }
  });
}

// ---- Gemm -----------------------------------------------------------------------------------

struct GemmDims {
  int64_t M, N, K;
  int64_t c_rs = 0, c_cs = 0;  // strides to read C broadcast to [M, N]
};

GemmDims gemm_dims(const InferCtx& ctx, const Shape& a, const Shape& b, const Shape* c) {
  if (a.size() != 2 || b.size() != 2)
    ctx.fail("A and B must be 2-D, got ", shape_str(a), " and ", shape_str(b));
  bool ta = ctx.node.attrs.get_int("transA", 0) != 0;
  bool tb = ctx.node.attrs.get_int("transB", 0) != 0;
  GemmDims d;
  d.M = ta ? a[1] : a[0];
  d.K = ta ? a[0] : a[1];
  int64_t kb = tb ? b[1] : b[0];
  d.N = tb ? b[0] : b[1];
  if (d.K != kb)
    ctx.fail("inner dims differ: A ", shape_str(a), " transA=", ta, ", B ", shape_str(b),
             " transB=", tb);
  if (c) {
    const Shape& s = *c;
    bool ok = s.size() <= 2;
    int64_t rows = s.size() == 2 ? s[0] : 1;
    int64_t cols = s.empty() ? 1 : s.back();
    ok = ok && (rows == 1 || rows == d.M) && (cols == 1 || cols == d.N);
    if (!ok) ctx.fail("C ", shape_str(s), " does not broadcast to [", d.M, ", ", d.N, "]");
    d.c_rs = rows == 1 ? 0 : cols;
    d.c_cs = cols == 1 ? 0 : 1;
  }
  return d;
}

std::vector<TensorType> infer_gemm(const InferCtx& ctx) {
  DType t = ctx.in[0].dtype;
  if (!is_matmul_dtype(t)) ctx.fail("unsupported dtype ", dtype_name(t));
  for (int i = 1; i < 3; i++)
    if (ctx.has(i) && ctx.in[i].dtype != t)
      ctx.fail("input ", i, " is ", dtype_name(ctx.in[i].dtype), ", input 0 is ", dtype_name(t));
  GemmDims d =
      gemm_dims(ctx, ctx.in[0].shape, ctx.in[1].shape, ctx.has(2) ? &ctx.in[2].shape : nullptr);
  return one(t, {d.M, d.N});
}

template <class T>
void gemm_ref_typed(const KernelCtx& ctx, const GemmDims& d) {
  const Tensor& a = ctx.input(0);
  const Tensor& b = ctx.input(1);
  const T* pa = a.ptr<T>();
  const T* pb = b.ptr<T>();
  const T* pc = ctx.has_input(2) ? ctx.input(2).ptr<T>() : nullptr;
  T* po = ctx.output(0).ptr<T>();
  bool ta = ctx.node.attrs.get_int("transA", 0) != 0;
  bool tb = ctx.node.attrs.get_int("transB", 0) != 0;
  double alpha = ctx.node.attrs.get_float("alpha", 1.0);
  double beta = ctx.node.attrs.get_float("beta", 1.0);
  int64_t a_rs = ta ? 1 : d.K, a_cs = ta ? d.M : 1;
  int64_t b_rs = tb ? 1 : d.N, b_cs = tb ? d.K : 1;
  for (int64_t m = 0; m < d.M; m++) {
    for (int64_t n = 0; n < d.N; n++) {
      acc_t<T> s = 0;
      for (int64_t k = 0; k < d.K; k++)
        s += to_acc(pa, m * a_rs + k * a_cs) * to_acc(pb, k * b_rs + n * b_cs);
      // numpy: dot(a, b) * alpha + c * beta, in double for the float scalars.
      double y;
      if constexpr (is_float_v<T>) y = s * alpha;
      else y = (double)(int64_t)s * alpha;
      if (pc && beta != 0) y += (double)load(pc, m * d.c_rs + n * d.c_cs) * beta;
      if constexpr (is_float_v<T>) store(po, m * d.N + n, (compute_t<T>)y);
      else po[m * d.N + n] = (T)(int64_t)y;
    }
  }
}

void ref_gemm(const KernelCtx& ctx) {
  InferCtx ic{ctx.node, {}, {}};
  Shape c_shape = ctx.has_input(2) ? ctx.input(2).shape() : Shape{};
  GemmDims d = gemm_dims(ic, ctx.input(0).shape(), ctx.input(1).shape(),
                         ctx.has_input(2) ? &c_shape : nullptr);
  dispatch_dtype(ctx.input(0).dtype(), [&](auto t) {
    using T = decltype(t);
    if constexpr (std::is_same_v<T, bool> || sizeof(T) < 2 || std::is_same_v<T, int16_t>) {
      fail(ErrorKind::Model, "[Gemm] unsupported dtype ", dtype_name(ctx.input(0).dtype()));
    } else {
      gemm_ref_typed<T>(ctx, d);
    }
  });
}

// ---- LayerNormalization ---------------------------------------------------------------------

DType stash_dtype(const InferCtx& ctx) {
  int64_t st = ctx.node.attrs.get_int("stash_type", 1);
  if (st == 1) return DType::F32;
  if (st == 16) return DType::BF16;
  ctx.fail("stash_type ", st, " is not supported (1: float, 16: bfloat16)");
}


std::vector<TensorType> infer_layer_norm(const InferCtx& ctx) {
  DType t = ctx.in[0].dtype;
  const Shape& x = ctx.in[0].shape;
  if (!is_float_dtype(t)) ctx.fail("unsupported dtype ", dtype_name(t));
  if (x.empty()) ctx.fail("X must have rank >= 1");
  int axis = normalize_axis(ctx, ctx.node.attrs.get_int("axis", -1), (int)x.size());
  for (int i = 1; i < 3; i++) {
    if (!ctx.has(i)) continue;
    if (ctx.in[i].dtype != t)
      ctx.fail("input ", i, " is ", dtype_name(ctx.in[i].dtype), ", X is ", dtype_name(t));
    if (!broadcasts_onto(ctx.in[i].shape, x))
      ctx.fail(i == 1 ? "Scale " : "B ", shape_str(ctx.in[i].shape), " does not broadcast to X ",
               shape_str(x));
  }
  DType u = stash_dtype(ctx);
  Shape stat(x.begin(), x.begin() + axis);
  stat.resize(x.size(), 1);
  std::vector<TensorType> out = {{t, x}};
  int nout = std::max<int>(1, (int)ctx.node.outputs.size());
  for (int i = 1; i < nout && i < 3; i++) out.push_back({u, stat});
  return out;
}

template <class T>
void layer_norm_ref_typed(const KernelCtx& ctx, int axis, double eps) {
  const Tensor& x = ctx.input(0);
  const T* px = x.ptr<T>();
  T* py = ctx.output(0).ptr<T>();
  int64_t rows = 1, cols = 1;
  for (int i = 0; i < x.rank(); i++) (i < axis ? rows : cols) *= x.dim(i);
  const T* ps = ctx.input(1).ptr<T>();
  const T* pb = ctx.has_input(2) ? ctx.input(2).ptr<T>() : nullptr;
  Shape ss = broadcast_strides(ctx.input(1).shape(), x.shape());
  Shape sb = pb ? broadcast_strides(ctx.input(2).shape(), x.shape()) : Shape(x.rank(), 0);
  int64_t i = 0;
  BroadcastIter it(x.shape(), {ss, sb});
  for (int64_t r = 0; r < rows; r++) {
    const T* xr = px + r * cols;
    double mean = 0, var = 0;
    for (int64_t c = 0; c < cols; c++) mean += (double)load(xr, c);
    mean /= (double)cols;
    for (int64_t c = 0; c < cols; c++) {
      double d = (double)load(xr, c) - mean;
      var += d * d;
    }
    var /= (double)cols;
    double inv = 1.0 / std::sqrt(var + eps);
    for (int64_t c = 0; c < cols; c++, i++, it.next()) {
      double y = ((double)load(xr, c) - mean) * inv * (double)load(ps, it.off[0]);
      if (pb) y += (double)load(pb, it.off[1]);
      store(py, i, (compute_t<T>)y);
    }
    if (ctx.has_output(1)) {
      Tensor& m = ctx.output(1);
      if (m.dtype() == DType::F32) m.ptr<float>()[r] = (float)mean;
      else m.ptr<bf16_t>()[r].bits = f32_to_bf16((float)mean);
    }
    if (ctx.has_output(2)) {
      Tensor& s = ctx.output(2);
      if (s.dtype() == DType::F32) s.ptr<float>()[r] = (float)inv;
      else s.ptr<bf16_t>()[r].bits = f32_to_bf16((float)inv);
    }
  }
}

void ref_layer_norm(const KernelCtx& ctx) {
  const Tensor& x = ctx.input(0);
  int axis = normalize_axis(ctx.node.attrs.get_int("axis", -1), x.rank());
  double eps = ctx.node.attrs.get_float("epsilon", 1e-5);
  dispatch_dtype(x.dtype(), [&](auto t) {
    using T = decltype(t);
    if constexpr (is_float_v<T>) layer_norm_ref_typed<T>(ctx, axis, eps);
    else fail(ErrorKind::Model, "[LayerNormalization] unsupported dtype ", dtype_name(x.dtype()));
  });
}

// ---- RMSNormalization ------------------------------------------------------------------------

// Y = X / sqrt(mean(X^2 over X[axis:]) + epsilon) * scale. Only stash_type 1 (float), as
// onnx.reference; the reference computes in double (never float32's overflow of x^2 past 1.8e19).
std::vector<TensorType> infer_rms_norm(const InferCtx& ctx) {
  DType t = ctx.in[0].dtype;
  const Shape& x = ctx.in[0].shape;
  if (!is_float_dtype(t)) ctx.fail("unsupported dtype ", dtype_name(t));
  if (x.empty()) ctx.fail("X must have rank >= 1");
  normalize_axis(ctx, ctx.node.attrs.get_int("axis", -1), (int)x.size());
  int64_t st = ctx.node.attrs.get_int("stash_type", 1);
  if (st != 1) ctx.fail("stash_type ", st, " is not supported (1: float)");
  // ONNX lets scale (and Y) have another float type than X; ember keeps one type.
  if (ctx.in[1].dtype != t)
    ctx.fail("scale is ", dtype_name(ctx.in[1].dtype), ", X is ", dtype_name(t));
  if (!broadcasts_onto(ctx.in[1].shape, x))
    ctx.fail("scale ", shape_str(ctx.in[1].shape), " does not broadcast to X ", shape_str(x));
  return one(t, x);
}

template <class T>
void rms_norm_ref_typed(const KernelCtx& ctx, int axis, double eps) {
  const Tensor& x = ctx.input(0);
  const T* px = x.ptr<T>();
  T* py = ctx.output(0).ptr<T>();
  int64_t rows = 1, cols = 1;
  for (int i = 0; i < x.rank(); i++) (i < axis ? rows : cols) *= x.dim(i);
  if (x.numel() == 0) return;
  const T* ps = ctx.input(1).ptr<T>();
  Shape ss = broadcast_strides(ctx.input(1).shape(), x.shape());
  int64_t i = 0;
  BroadcastIter it(x.shape(), {ss});
  for (int64_t r = 0; r < rows; r++) {
    const T* xr = px + r * cols;
    double sq = 0;
    for (int64_t c = 0; c < cols; c++) {
      double v = (double)load(xr, c);
      sq += v * v;
    }
    double inv = 1.0 / std::sqrt(sq / (double)cols + eps);
    for (int64_t c = 0; c < cols; c++, i++, it.next())
      store(py, i, (compute_t<T>)((double)load(xr, c) * inv * (double)load(ps, it.off[0])));
  }
}

void ref_rms_norm(const KernelCtx& ctx) {
  const Tensor& x = ctx.input(0);
  int axis = normalize_axis(ctx.node.attrs.get_int("axis", -1), x.rank());
  double eps = ctx.node.attrs.get_float("epsilon", 1e-5);
  dispatch_dtype(x.dtype(), [&](auto t) {
    using T = decltype(t);
    if constexpr (is_float_v<T>) rms_norm_ref_typed<T>(ctx, axis, eps);
    else fail(ErrorKind::Model, "[RMSNormalization] unsupported dtype ", dtype_name(x.dtype()));
  });
}

// ---- Softmax / LogSoftmax -------------------------------------------------------------------

// The op viewed as [outer, n, inner]: normalise over n for each (outer, inner).
struct SoftmaxDims {
  int64_t outer = 1, n = 1, inner = 1;
};

SoftmaxDims softmax_dims(const Node& node, const Shape& s, int axis) {
  SoftmaxDims d;
  bool legacy = node.attrs.get_int("legacy_axis_2d", 0) != 0;
  for (int i = 0; i < (int)s.size(); i++) {
    if (i < axis) d.outer *= s[i];
    else if (i == axis || legacy) d.n *= s[i];
    else d.inner *= s[i];
  }
  return d;
}

std::vector<TensorType> infer_softmax(const InferCtx& ctx) {
  DType t = ctx.in[0].dtype;
  if (!is_float_dtype(t)) ctx.fail("unsupported dtype ", dtype_name(t));
  const Shape& s = ctx.in[0].shape;
  bool legacy = ctx.node.attrs.get_int("legacy_axis_2d", 0) != 0;
  int64_t axis = ctx.node.attrs.get_int("axis", legacy ? 1 : -1);
  int rank = (int)s.size();
  // Opset < 13 allowed axis == rank (an empty second dim).
  if (legacy ? (axis < -rank || axis > rank) : (axis < -rank || axis >= rank))
    ctx.fail("axis ", axis, " out of range for rank ", rank);
  return one(t, s);
}

template <class T>
void softmax_ref_typed(const KernelCtx& ctx, bool log) {
  const Tensor& x = ctx.input(0);
  const T* px = x.ptr<T>();
  T* py = ctx.output(0).ptr<T>();
  int64_t axis =
      ctx.node.attrs.get_int("axis", ctx.node.attrs.get_int("legacy_axis_2d", 0) ? 1 : -1);
  if (axis < 0) axis += x.rank();
  SoftmaxDims d = softmax_dims(ctx.node, x.shape(), (int)axis);
  for (int64_t o = 0; o < d.outer; o++) {
    for (int64_t in = 0; in < d.inner; in++) {
      int64_t base = o * d.n * d.inner + in;
      double mx = -INFINITY;
      for (int64_t j = 0; j < d.n; j++) {
        double v = (double)load(px, base + j * d.inner);
        if (v > mx || std::isnan(v)) mx = v;
      }
      double sum = 0;
      for (int64_t j = 0; j < d.n; j++) sum += std::exp((double)load(px, base + j * d.inner) - mx);
      double lse = std::log(sum);
      for (int64_t j = 0; j < d.n; j++) {
        double v = (double)load(px, base + j * d.inner) - mx;
        store(py, base + j * d.inner, (compute_t<T>)(log ? v - lse : std::exp(v) / sum));
      }
    }
  }
}

void ref_softmax(const KernelCtx& ctx) {
  bool log = ctx.node.op == OpType::LogSoftmax;
  dispatch_dtype(ctx.input(0).dtype(), [&](auto t) {
    using T = decltype(t);
    if constexpr (is_float_v<T>) softmax_ref_typed<T>(ctx, log);
    else
      fail(ErrorKind::Model, "[", op_name(ctx.node.op), "] unsupported dtype ",
           dtype_name(ctx.input(0).dtype()));
  });
}

}  // namespace

static const OpDef kOps[] = {
    {OpType::MatMul, "MatMul", 2, 2, 1, 1, 0, {}, infer_matmul, ref_matmul},
    {OpType::Gemm, "Gemm", 2, 3, 1, 1, 0,
     {{"alpha", AttrKind::Float}, {"beta", AttrKind::Float}, {"transA", AttrKind::Bool},
      {"transB", AttrKind::Bool}},
     infer_gemm, ref_gemm},
    {OpType::LayerNormalization, "LayerNormalization", 2, 3, 1, 3, 0,
     {{"axis", AttrKind::Int}, {"epsilon", AttrKind::Float}, {"stash_type", AttrKind::Int}},
     infer_layer_norm, ref_layer_norm},
    {OpType::RMSNormalization, "RMSNormalization", 2, 2, 1, 1, 0,
     {{"axis", AttrKind::Int}, {"epsilon", AttrKind::Float}, {"stash_type", AttrKind::Int}},
     infer_rms_norm, ref_rms_norm},
    {OpType::Softmax, "Softmax", 1, 1, 1, 1, 0,
     {{"axis", AttrKind::Int}, {"legacy_axis_2d", AttrKind::Bool}}, infer_softmax, ref_softmax},
    {OpType::LogSoftmax, "LogSoftmax", 1, 1, 1, 1, 0,
     {{"axis", AttrKind::Int}, {"legacy_axis_2d", AttrKind::Bool}}, infer_softmax, ref_softmax},
};

std::span<const OpDef> op_defs_linalg() { return kOps; }

}  // namespace ember
