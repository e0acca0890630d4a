// Quantization ops: ONNX QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear, MatMulInteger,
// QLinearMatMul, ConvInteger, QLinearConv, and com.microsoft's MatMulNBits (4-bit only).
// The references reproduce onnx.reference (onnx 1.23) bit for bit: each step in the float
// precision numpy's promotions give it, round half to even, saturation to the output type.
// Integer accumulation wraps in 32 bits, as the spec allows. MatMulNBits dequantizes through
// Q4G (kernels/common/quant.h) and sums k in order in float. Fast paths: graph passes turn
// these into QMatMul / Q4MatMul (cpp/src/graph/fuse_quant.cpp).
#include <climits>

#include "kernels/common/quant.h"
#include "kernels/generic/conv_f32.h"  // ConvGeom, conv_geom (defined in ops_conv.cpp)
#include "ops/op_util.h"

namespace ember {
namespace {

bool is_float_dtype(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }
bool is_q8(DType t) { return t == DType::I8 || t == DType::U8; }

// ONNX TensorProto codes that output_dtype / precision may name.
DType dtype_of_onnx(int64_t code) {
  switch (code) {
    case 1: return DType::F32;
    case 2: return DType::U8;
    case 3: return DType::I8;
    case 5: return DType::I16;
    case 6: return DType::I32;
    case 10: return DType::F16;
    case 11: return DType::F64;
    case 16: return DType::BF16;
    default: return DType::Count;
  }
}

struct QRange {
  double lo, hi;
};

QRange qrange(DType t) {
  switch (t) {
    case DType::U8: return {0, 255};
    case DType::I8: return {-128, 127};
    case DType::I16: return {-32768, 32767};
    default: return {(double)INT32_MIN, (double)INT32_MAX};
  }
}

// Rounds v (a float32 value or wider) to the precision of t; F64 keeps it.
double round_to(DType t, double v) {
  switch (t) {
    case DType::F32: return (float)v;
    case DType::F16: return f16_to_f32(f32_to_f16((float)v));
    case DType::BF16: return bf16_to_f32(f32_to_bf16((float)v));
    default: return v;
  }
}

// a * b and a / b in t as numpy computes them: float32 arithmetic, then rounded to f16 / bf16
// (numpy's float16 and ml_dtypes' bfloat16 compute through float32).
double mul_in(DType t, double a, double b) {
  return t == DType::F64 ? a * b : round_to(t, (float)round_to(t, a) * (float)round_to(t, b));
}
double div_in(DType t, double a, double b) {
  return t == DType::F64 ? a / b : round_to(t, (float)round_to(t, a) / (float)round_to(t, b));
}

// Saturating conversion of an already rounded value; NaN gives the minimum (as numpy's cast
// through int32 does on x86).
template <class Q>
Q saturate(double v, QRange r) {
  if (!(v >= r.lo)) return (Q)r.lo;
  if (v > r.hi) return (Q)r.hi;
  return (Q)v;
}

// Calls f(Q{}) for an integer output type ember quantizes to.
template <class F>
void dispatch_quant(DType t, F&& f) {
  switch (t) {
    case DType::U8: f(uint8_t{}); break;
    case DType::I8: f(int8_t{}); break;
    case DType::I16: f(int16_t{}); break;
    default: fail(ErrorKind::Internal, "[quant] no quantized type ", dtype_name(t));
  }
}

std::vector<double> doubles_of(const Tensor* t) {
  std::vector<double> v;
  if (!t) return v;
  v.resize((size_t)t->numel());
  for (int64_t i = 0; i < t->numel(); i++) v[i] = tensor_get_f64(*t, i);
  return v;
}

std::vector<int32_t> ints_of(const Tensor* t) {
  std::vector<int32_t> v;
  if (!t) return v;
  v.resize((size_t)t->numel());
  for (int64_t i = 0; i < t->numel(); i++) v[i] = (int32_t)tensor_get_i64(*t, i);
  return v;
}

// Writes v to a float output through float32 (v is a float32 result everywhere but the int32
// DequantizeLinear path, where numpy would round float64 to f16 / bf16 directly).
void store_float(Tensor& out, int64_t i, double v) {
  switch (out.dtype()) {
    case DType::F32: out.ptr<float>()[i] = (float)v; break;
    case DType::F16: out.ptr<f16_t>()[i].bits = f32_to_f16((float)v); break;
    case DType::BF16: out.ptr<bf16_t>()[i].bits = f32_to_bf16((float)v); break;
    default: fail(ErrorKind::Internal, "[quant] no float output type ", dtype_name(out.dtype()));
  }
}

// ---- QuantizeLinear / DequantizeLinear --------------------------------------------------------

// How a scale (and its zero point) maps onto x: per tensor, per axis, or blocked along the axis.
struct QuantAxis {
  bool per_tensor = true;
  int64_t D = 1, inner = 1;  // x's size along the axis, and the elements after it
  int64_t S = 1, B = 0;      // scale entries along the axis; block size (0: per axis)

  int64_t index(int64_t i) const {  // scale index of element i of x
    if (per_tensor) return 0;
    int64_t a = (i / inner) % D;
    if (B == 0) return a;
    return ((i / (inner * D)) * S + a / B) * inner + i % inner;
  }
};

// Checks the scale (input 1) and zero point (input 2) shapes against x (input 0).
QuantAxis quant_axis(const InferCtx& ctx, const Shape& x, const Shape& s, const Shape* zp,
                     const char* scale_name, const char* zp_name) {
  const Attrs& at = ctx.node.attrs;
  int64_t bs = at.get_int("block_size", 0);
  if (bs < 0) ctx.fail("block_size ", bs, " is negative");
  QuantAxis q;
  if (shape_numel(s) != 1) {
    q.per_tensor = false;
    int rank = (int)x.size();
    if (rank == 0)
      ctx.fail(scale_name, " ", shape_str(s), " has ", shape_numel(s),
               " values for a scalar input");
    int ax = normalize_axis(ctx, at.get_int("axis", 1), rank);
    q.D = x[ax];
    q.inner = shape_prod(x, ax + 1, rank);
    if (bs == 0) {
      if (s.size() != 1 || s[0] != x[ax])
        ctx.fail(scale_name, " ", shape_str(s), " must be a scalar or [", x[ax], "] (per axis ", ax,
                 " of ", shape_str(x), "); blocked quantization needs block_size");
      q.S = s[0];
    } else {
      bool ok = s.size() == x.size();
      for (int d = 0; ok && d < rank; d++)
        ok = d == ax ? s[d] == x[d] / bs + (x[d] % bs != 0) : s[d] == x[d];
      if (!ok)
        ctx.fail(scale_name, " ", shape_str(s), " does not block ", shape_str(x), " along axis ",
                 ax, " with block_size ", bs, " (dim ", ax, " must be ceil(", x[ax], " / ", bs,
                 "), the others equal)");
      q.S = s[ax];
      q.B = bs;
    }
  }
  if (zp && shape_numel(*zp) != 1 && *zp != s)
    ctx.fail(zp_name, " ", shape_str(*zp), " must have ", scale_name, "'s shape ", shape_str(s));
  return q;
}

// The precision x / y_scale is computed in: `precision`, else numpy's promotion of the two.
DType quantize_div_type(const Node& n, DType x, DType s) {
  int64_t p = n.attrs.get_int("precision", 0);
  if (p != 0) return dtype_of_onnx(p);
  if (x == DType::I32) return DType::F64;
  return x == s ? x : DType::F32;  // f16 or bf16 with f32, f16 with bf16: float32
}

std::vector<TensorType> infer_quantize(const InferCtx& ctx) {
  DType xt = ctx.in[0].dtype, st = ctx.in[1].dtype;
  if (!is_float_dtype(xt) && xt != DType::I32)
    ctx.fail("x has dtype ", dtype_name(xt), ", expected float32, float16, bfloat16 or int32");
  if (!is_float_dtype(st))
    ctx.fail("y_scale has dtype ", dtype_name(st), ", expected float32, float16 or bfloat16");
  int64_t od = ctx.node.attrs.get_int("output_dtype", 0);
  DType out = od == 0 ? DType::U8 : dtype_of_onnx(od);
  if (out != DType::U8 && out != DType::I8 && out != DType::I16)
    ctx.fail("output_dtype ", od, " is not uint8 (2), int8 (3) or int16 (5), the types ember "
             "quantizes to");
  if (ctx.has(2)) {
    DType zt = ctx.in[2].dtype;
    if (zt != DType::U8 && zt != DType::I8 && zt != DType::I16)
      ctx.fail("y_zero_point has dtype ", dtype_name(zt),
               "; ember quantizes to uint8, int8 or int16");
    if (od != 0 && zt != out)
      ctx.fail("output_dtype ", od, " (", dtype_name(out), ") differs from y_zero_point's dtype ",
               dtype_name(zt));
    out = zt;
  }
  int64_t p = ctx.node.attrs.get_int("precision", 0);
  if (p != 0 && !is_float_dtype(dtype_of_onnx(p)))
    ctx.fail("precision ", p, " is not float32 (1), float16 (10) or bfloat16 (16)");
  quant_axis(ctx, ctx.in[0].shape, ctx.in[1].shape, ctx.has(2) ? &ctx.in[2].shape : nullptr,
             "y_scale", "y_zero_point");
  return one(out, ctx.in[0].shape);
}

void ref_quantize(const KernelCtx& ctx) {
  const Tensor& x = ctx.input(0);
  const Tensor* zp = ctx.has_input(2) ? &ctx.input(2) : nullptr;
  InferCtx ic{ctx.node, {}, {}};
  Shape zs = zp ? zp->shape() : Shape{};
  QuantAxis qa = quant_axis(ic, x.shape(), ctx.input(1).shape(), zp ? &zs : nullptr, "y_scale",
                            "y_zero_point");
  DType ct = quantize_div_type(ctx.node, x.dtype(), ctx.input(1).dtype());
  std::vector<double> xs = doubles_of(&x), s = doubles_of(&ctx.input(1));
  std::vector<int32_t> z = ints_of(zp);
  Tensor& y = ctx.output(0);
  QRange r = qrange(y.dtype());
  dispatch_quant(y.dtype(), [&](auto tag) {
    using Q = decltype(tag);
    Q* py = y.ptr<Q>();  // [x's shape]
    for (int64_t i = 0; i < x.numel(); i++) {
      int64_t si = qa.index(i);
      double v = std::nearbyint(div_in(ct, xs[i], s[si]));
      if (zp) v += z[z.size() == 1 ? 0 : si];
      py[i] = saturate<Q>(v, r);
    }
  });
}

std::vector<TensorType> infer_dequantize(const InferCtx& ctx) {
  DType xt = ctx.in[0].dtype, st = ctx.in[1].dtype;
  if (!is_q8(xt) && xt != DType::I16 && xt != DType::I32)
    ctx.fail("x has dtype ", dtype_name(xt), ", expected uint8, int8, int16 or int32");
  if (!is_float_dtype(st))
    ctx.fail("x_scale has dtype ", dtype_name(st), ", expected float32, float16 or bfloat16");
  if (ctx.has(2) && ctx.in[2].dtype != xt)
    ctx.fail("x_zero_point has dtype ", dtype_name(ctx.in[2].dtype), ", x has ", dtype_name(xt));
  int64_t od = ctx.node.attrs.get_int("output_dtype", 0);
  DType out = od == 0 ? st : dtype_of_onnx(od);
  if (!is_float_dtype(out))
    ctx.fail("output_dtype ", od, " is not float32 (1), float16 (10) or bfloat16 (16)");
  quant_axis(ctx, ctx.in[0].shape, ctx.in[1].shape, ctx.has(2) ? &ctx.in[2].shape : nullptr,
             "x_scale", "x_zero_point");
  return one(out, ctx.in[0].shape);
}

// y = (x - zero point) * scale in float32, as onnx.reference: x.astype(float32) - zp, times
// the scale. An int32 x with a zero point subtracts in float64 (numpy's float32 - int32).
void ref_dequantize(const KernelCtx& ctx) {
  const Tensor& x = ctx.input(0);
  const Tensor* zp = ctx.has_input(2) ? &ctx.input(2) : nullptr;
  InferCtx ic{ctx.node, {}, {}};
  Shape zs = zp ? zp->shape() : Shape{};
  QuantAxis qa = quant_axis(ic, x.shape(), ctx.input(1).shape(), zp ? &zs : nullptr, "x_scale",
                            "x_zero_point");
  std::vector<int32_t> xs = ints_of(&x), z = ints_of(zp);
  std::vector<double> s = doubles_of(&ctx.input(1));
  bool wide = zp && x.dtype() == DType::I32;
  Tensor& y = ctx.output(0);
  for (int64_t i = 0; i < x.numel(); i++) {
    int64_t si = qa.index(i);
    int32_t zv = zp ? z[z.size() == 1 ? 0 : si] : 0;
    double v = wide ? ((double)(float)xs[i] - zv) * s[si]
                    : (double)(((float)xs[i] - (float)zv) * (float)s[si]);
    store_float(y, i, v);
  }
}

// ---- DynamicQuantizeLinear --------------------------------------------------------------------

std::vector<TensorType> infer_dynamic_quantize(const InferCtx& ctx) {
  if (ctx.in[0].dtype != DType::F32)
    ctx.fail("x has dtype ", dtype_name(ctx.in[0].dtype), ", expected float32");
  return {TensorType{DType::U8, ctx.in[0].shape}, TensorType{DType::F32, {}},
          TensorType{DType::U8, {}}};
}

// uint8 over [min(x, 0), max(x, 0)], in float32 step by step as onnx.reference computes it.
void ref_dynamic_quantize(const KernelCtx& ctx) {
  const Tensor& x = ctx.input(0);
  const float* px = x.ptr<float>();  // [x's shape]
  float maxx = 0.0f, minx = 0.0f;
  bool nan = false;
  for (int64_t i = 0; i < x.numel(); i++) {
    nan = nan || std::isnan(px[i]);
    maxx = std::max(maxx, px[i]);
    minx = std::min(minx, px[i]);
  }
  if (nan) maxx = minx = NAN;  // numpy's max and min propagate NaN
  float scale = (maxx == minx ? 1.0f : maxx - minx) / 255.0f;
  float zp = 0.0f - minx / scale;
  zp = std::nearbyint(zp > 255.0f ? 255.0f : zp < 0.0f ? 0.0f : zp);
  QRange r = qrange(DType::U8);
  uint8_t* py = ctx.output(0).ptr<uint8_t>();
  for (int64_t i = 0; i < x.numel(); i++)
    py[i] = saturate<uint8_t>((double)std::nearbyint(px[i] / scale) + (double)zp, r);
  if (ctx.has_output(1)) ctx.output(1).ptr<float>()[0] = scale;
  if (ctx.has_output(2)) ctx.output(2).ptr<uint8_t>()[0] = saturate<uint8_t>(zp, r);
}

// ---- MatMulInteger / QLinearMatMul ------------------------------------------------------------

// numpy matmul shapes (as MatMul): 1-D operands are promoted and the promoted dim dropped.
struct MatDims {
  int64_t M = 1, N = 1, K = 1;
  Shape a_batch, b_batch, batch, out;
};

MatDims mat_dims(const InferCtx& ctx, const Shape& a, const Shape& b) {
  if (a.empty() || b.empty())
    ctx.fail("operands must have rank >= 1, got ", shape_str(a), " and ", shape_str(b));
  MatDims d;
  bool a1 = a.size() == 1, b1 = b.size() == 1;
  d.M = a1 ? 1 : a[a.size() - 2];
  d.K = a.back();
  d.N = b1 ? 1 : b.back();
  if (d.K != (b1 ? b[0] : b[b.size() - 2]))
    ctx.fail("inner dims differ: ", shape_str(a), " @ ", shape_str(b));
  if (!a1) d.a_batch.assign(a.begin(), a.end() - 2);
  if (!b1) d.b_batch.assign(b.begin(), b.end() - 2);
  d.batch = broadcast_shapes(ctx, d.a_batch, d.b_batch);
  d.out = d.batch;
  if (!a1) d.out.push_back(d.M);
  if (!b1) d.out.push_back(d.N);
  return d;
}

// Per-row parameters of A (zero point, scale) index A's rows: A's shape without K. Per-column
// parameters of B index B's columns: B's shape without K.
Shape a_rows(const Shape& a) { return a.size() <= 1 ? Shape{} : Shape(a.begin(), a.end() - 1); }
Shape b_cols(const Shape& b) {
  if (b.size() <= 1) return {};
  Shape s(b.begin(), b.end() - 2);
  s.push_back(b.back());
  return s;
}

// A parameter's shape as it broadcasts onto a_rows (row) or b_cols (column): a scalar, 1-D
// [M] / [N], or N-D [..., M, 1] / [..., 1, N] with the unit K dim dropped. Empty error when ok.
Shape param_view(const Shape& p, bool row, bool* ok) {
  *ok = true;
  if (shape_numel(p) == 1) return {};
  if (p.size() == 1) return p;
  if (p.size() >= 2 && row && p.back() == 1) return Shape(p.begin(), p.end() - 1);
  if (p.size() >= 2 && !row && p[p.size() - 2] == 1) {
    Shape s(p.begin(), p.end() - 2);
    s.push_back(p.back());
    return s;
  }
  *ok = false;
  return {};
}

void check_param(const InferCtx& ctx, int i, const char* what, bool row, const Shape& operand) {
  bool ok;
  Shape v = param_view(ctx.in[i].shape, row, &ok);
  Shape target = row ? a_rows(operand) : b_cols(operand);
  if (!ok || !broadcasts_onto(v, target))
    ctx.fail(what, " ", shape_str(ctx.in[i].shape), " is neither a scalar nor per ",
             row ? "row of A " : "column of B ", shape_str(operand),
             row ? " ([M] or [..., M, 1])" : " ([N] or [..., 1, N])");
}

// The parameter's value for every row of A (row) or column of B, as doubles.
std::vector<double> expand_param(const Tensor* t, bool row, const Shape& operand, double def) {
  Shape target = row ? a_rows(operand) : b_cols(operand);
  std::vector<double> out((size_t)shape_numel(target), def);
  if (!t) return out;
  std::vector<double> v = doubles_of(t);
  bool ok;
  Shape view = param_view(t->shape(), row, &ok);
  int64_t k = 0;
  for (BroadcastIter it(target, {broadcast_strides(view, target)}); !it.done(); it.next(), k++)
    out[k] = v[it.off[0]];
  return out;
}

// Calls fn(batch a matrix, b matrix, out matrix) over the broadcast batch.
template <class F>
void for_each_matrix(const MatDims& d, F&& fn) {
  Shape sa = broadcast_strides(d.a_batch, d.batch), sb = broadcast_strides(d.b_batch, d.batch);
  int64_t bi = 0;
  for (BroadcastIter it(d.batch, {sa, sb}); !it.done(); it.next(), bi++)
    fn(it.off[0], it.off[1], bi);
}

// C = (A - a_zp) @ (B - b_zp) in int32, wrapping: [batch..., M, N].
std::vector<int32_t> int_matmul(const MatDims& d, const Tensor& a, const Tensor& b,
                                const std::vector<double>& za, const std::vector<double>& zb) {
  std::vector<int32_t> pa = ints_of(&a), pb = ints_of(&b);
  std::vector<int32_t> c((size_t)shape_numel(d.out));
  for_each_matrix(d, [&](int64_t ai, int64_t bj, int64_t oi) {
    const int32_t* A = pa.data() + ai * d.M * d.K;  // [M, K]
    const int32_t* B = pb.data() + bj * d.K * d.N;  // [K, N]
    int32_t* C = c.data() + oi * d.M * d.N;         // [M, N]
    for (int64_t m = 0; m < d.M; m++) {
      int32_t zam = (int32_t)za[ai * d.M + m];
      for (int64_t n = 0; n < d.N; n++) {
        int32_t zbn = (int32_t)zb[bj * d.N + n];
        uint32_t acc = 0;
        for (int64_t k = 0; k < d.K; k++)
          acc += (uint32_t)((A[m * d.K + k] - zam) * (B[k * d.N + n] - zbn));
        C[m * d.N + n] = (int32_t)acc;
      }
    }
  });
  return c;
}

std::vector<TensorType> infer_matmul_integer(const InferCtx& ctx) {
  for (int i = 0; i < 2; i++)
    if (!is_q8(ctx.in[i].dtype))
      ctx.fail(i ? "B" : "A", " has dtype ", dtype_name(ctx.in[i].dtype),
               ", expected uint8 or int8");
  MatDims d = mat_dims(ctx, ctx.in[0].shape, ctx.in[1].shape);
  for (int i = 2; i < 4; i++) {
    if (!ctx.has(i)) continue;
    const char* what = i == 2 ? "a_zero_point" : "b_zero_point";
    if (ctx.in[i].dtype != ctx.in[i - 2].dtype)
      ctx.fail(what, " has dtype ", dtype_name(ctx.in[i].dtype), ", its operand ",
               dtype_name(ctx.in[i - 2].dtype));
    check_param(ctx, i, what, i == 2, ctx.in[i - 2].shape);
  }
  return one(DType::I32, d.out);
}

void ref_matmul_integer(const KernelCtx& ctx) {
  const Tensor &a = ctx.input(0), &b = ctx.input(1);
  InferCtx ic{ctx.node, {}, {}};
  MatDims d = mat_dims(ic, a.shape(), b.shape());
  const Tensor* a_zp = ctx.has_input(2) ? &ctx.input(2) : nullptr;
  const Tensor* b_zp = ctx.has_input(3) ? &ctx.input(3) : nullptr;
  std::vector<double> za = expand_param(a_zp, true, a.shape(), 0);
  std::vector<double> zb = expand_param(b_zp, false, b.shape(), 0);
  std::vector<int32_t> c = int_matmul(d, a, b, za, zb);
  std::copy(c.begin(), c.end(), ctx.output(0).ptr<int32_t>());
}

// Inputs: a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point.
std::vector<TensorType> infer_qlinear_matmul(const InferCtx& ctx) {
  static const char* names[] = {"a", "a_scale", "a_zero_point", "b", "b_scale", "b_zero_point",
                                "y_scale", "y_zero_point"};
  for (int i : {0, 3, 7})
    if (!is_q8(ctx.in[i].dtype))
      ctx.fail(names[i], " has dtype ", dtype_name(ctx.in[i].dtype), ", expected uint8 or int8");
  DType ts = ctx.in[1].dtype;
  if (!is_float_dtype(ts))
    ctx.fail("a_scale has dtype ", dtype_name(ts), ", expected float32, float16 or bfloat16");
  for (int i : {4, 6})
    if (ctx.in[i].dtype != ts)
      ctx.fail(names[i], " has dtype ", dtype_name(ctx.in[i].dtype), ", a_scale has ",
               dtype_name(ts));
  for (int i : {2, 5})
    if (ctx.in[i].dtype != ctx.in[i - 2].dtype)
      ctx.fail(names[i], " has dtype ", dtype_name(ctx.in[i].dtype), ", ", names[i - 2], " has ",
               dtype_name(ctx.in[i - 2].dtype));
  MatDims d = mat_dims(ctx, ctx.in[0].shape, ctx.in[3].shape);
  for (int i : {1, 2}) check_param(ctx, i, names[i], true, ctx.in[0].shape);
  for (int i : {4, 5}) check_param(ctx, i, names[i], false, ctx.in[3].shape);
  for (int i : {6, 7})
    if (shape_numel(ctx.in[i].shape) != 1)
      ctx.fail(names[i], " ", shape_str(ctx.in[i].shape), " must hold one value (per tensor)");
  return one(ctx.in[7].dtype, d.out);
}

// y = saturate(rint(C * (a_scale * b_scale / y_scale) + y_zero_point)): the multiplier in the
// scales' type, the rest in float64 (numpy: int32 array times float32 array).
void ref_qlinear_matmul(const KernelCtx& ctx) {
  const Tensor &a = ctx.input(0), &b = ctx.input(3);
  InferCtx ic{ctx.node, {}, {}};
  MatDims d = mat_dims(ic, a.shape(), b.shape());
  DType ts = ctx.input(1).dtype();
  std::vector<double> sa = expand_param(&ctx.input(1), true, a.shape(), 1);
  std::vector<double> za = expand_param(&ctx.input(2), true, a.shape(), 0);
  std::vector<double> sb = expand_param(&ctx.input(4), false, b.shape(), 1);
  std::vector<double> zb = expand_param(&ctx.input(5), false, b.shape(), 0);
  double ys = tensor_get_f64(ctx.input(6), 0), yz = tensor_get_f64(ctx.input(7), 0);
  std::vector<int32_t> c = int_matmul(d, a, b, za, zb);
  Tensor& y = ctx.output(0);
  QRange r = qrange(y.dtype());
  dispatch_quant(y.dtype(), [&](auto tag) {
    using Q = decltype(tag);
    Q* py = y.ptr<Q>();  // [batch..., M, N]
    for_each_matrix(d, [&](int64_t ai, int64_t bj, int64_t oi) {
      for (int64_t m = 0; m < d.M; m++) {
        for (int64_t n = 0; n < d.N; n++) {
          double mult = div_in(ts, mul_in(ts, sa[ai * d.M + m], sb[bj * d.N + n]), ys);
          int64_t o = (oi * d.M + m) * d.N + n;
          py[o] = saturate<Q>(std::nearbyint((double)c[o] * mult + yz), r);
        }
      }
    });
  });
}

// ---- ConvInteger / QLinearConv ----------------------------------------------------------------

// acc[n, m, out...] = sum (x - x_zp) * (w - w_zp[m]) over the window, int32 wrapping; padding
// contributes nothing (it pads x - x_zp with zeros).
std::vector<int32_t> int_conv(const ConvGeom& g, const Tensor& x, const Tensor& w, int32_t xz,
                              const std::vector<int32_t>& wz) {
  std::vector<int32_t> px = ints_of(&x), pw = ints_of(&w);
  int64_t cg = g.C / g.G, mg = g.M / g.G, isz = g.in_size(), ksz = g.k_size();
  std::vector<int32_t> y((size_t)(g.N * g.M * g.out_size()));
  int64_t yi = 0;
  for (int64_t n = 0; n < g.N; n++) {
    for (int64_t m = 0; m < g.M; m++) {
      int64_t grp = m / mg;
      int32_t wzm = wz[wz.size() == 1 ? 0 : m];
      for (int64_t o0 = 0; o0 < g.out[0]; o0++)
        for (int64_t o1 = 0; o1 < g.out[1]; o1++)
          for (int64_t o2 = 0; o2 < g.out[2]; o2++, yi++) {
            uint32_t acc = 0;
            for (int64_t c = 0; c < cg; c++) {
              const int32_t* xc = px.data() + (n * g.C + grp * cg + c) * isz;  // [in...]
              const int32_t* wc = pw.data() + (m * cg + c) * ksz;               // [k...]
              for (int64_t k0 = 0; k0 < g.k[0]; k0++) {
                int64_t i0 = o0 * g.stride[0] - g.pad[0] + k0 * g.dil[0];
                if (i0 < 0 || i0 >= g.in[0]) continue;
                for (int64_t k1 = 0; k1 < g.k[1]; k1++) {
                  int64_t i1 = o1 * g.stride[1] - g.pad[1] + k1 * g.dil[1];
                  if (i1 < 0 || i1 >= g.in[1]) continue;
                  for (int64_t k2 = 0; k2 < g.k[2]; k2++) {
                    int64_t i2 = o2 * g.stride[2] - g.pad[2] + k2 * g.dil[2];
                    if (i2 < 0 || i2 >= g.in[2]) continue;
                    int32_t xv = xc[(i0 * g.in[1] + i1) * g.in[2] + i2] - xz;
                    int32_t wv = wc[(k0 * g.k[1] + k1) * g.k[2] + k2] - wzm;
                    acc += (uint32_t)(xv * wv);
                  }
                }
              }
            }
            y[yi] = (int32_t)acc;
          }
    }
  }
  return y;
}

// x at input xi, w at input wi; zero points (and scales) per tensor for x, per tensor or per
// output channel for w.
ConvGeom check_conv(const InferCtx& ctx, int xi, int wi, int xzi, int wzi) {
  if (!is_q8(ctx.in[xi].dtype))
    ctx.fail("x has dtype ", dtype_name(ctx.in[xi].dtype), ", expected uint8 or int8");
  if (!is_q8(ctx.in[wi].dtype))
    ctx.fail("w has dtype ", dtype_name(ctx.in[wi].dtype), ", expected uint8 or int8");
  ConvGeom g = conv_geom(ctx, ctx.in[xi].shape, ctx.in[wi].shape, false);
  if (ctx.has(xzi)) {
    if (ctx.in[xzi].dtype != ctx.in[xi].dtype)
      ctx.fail("x_zero_point has dtype ", dtype_name(ctx.in[xzi].dtype), ", x has ",
               dtype_name(ctx.in[xi].dtype));
    if (shape_numel(ctx.in[xzi].shape) != 1)
      ctx.fail("x_zero_point ", shape_str(ctx.in[xzi].shape), " must hold one value (per tensor)");
  }
  if (ctx.has(wzi)) {
    if (ctx.in[wzi].dtype != ctx.in[wi].dtype)
      ctx.fail("w_zero_point has dtype ", dtype_name(ctx.in[wzi].dtype), ", w has ",
               dtype_name(ctx.in[wi].dtype));
    const Shape& s = ctx.in[wzi].shape;
    if (shape_numel(s) != 1 && s != Shape{g.M})
      ctx.fail("w_zero_point ", shape_str(s), " must be a scalar or [", g.M,
               "] (per output channel)");
  }
  return g;
}

Shape conv_out_shape(const ConvGeom& g) {
  Shape out = {g.N, g.M};
  for (int i = 3 - g.nsp; i < 3; i++) out.push_back(g.out[i]);
  return out;
}

std::vector<TensorType> infer_conv_integer(const InferCtx& ctx) {
  return one(DType::I32, conv_out_shape(check_conv(ctx, 0, 1, 2, 3)));
}

void ref_conv_integer(const KernelCtx& ctx) {
  InferCtx ic{ctx.node, {}, {}};
  ConvGeom g = conv_geom(ic, ctx.input(0).shape(), ctx.input(1).shape(), false);
  int32_t xz = ctx.has_input(2) ? (int32_t)tensor_get_i64(ctx.input(2), 0) : 0;
  std::vector<int32_t> wz = ctx.has_input(3) ? ints_of(&ctx.input(3)) : std::vector<int32_t>{0};
  std::vector<int32_t> y = int_conv(g, ctx.input(0), ctx.input(1), xz, wz);
  std::copy(y.begin(), y.end(), ctx.output(0).ptr<int32_t>());
}

// Inputs: x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point[, B].
std::vector<TensorType> infer_qlinear_conv(const InferCtx& ctx) {
  ConvGeom g = check_conv(ctx, 0, 3, 2, 5);
  for (int i : {1, 4, 6})
    if (ctx.in[i].dtype != DType::F32)
      ctx.fail("input ", i, " (a scale) has dtype ", dtype_name(ctx.in[i].dtype),
               ", expected float32");
  for (int i : {1, 6})
    if (shape_numel(ctx.in[i].shape) != 1)
      ctx.fail(i == 1 ? "x_scale " : "y_scale ", shape_str(ctx.in[i].shape),
               " must hold one value");
  if (shape_numel(ctx.in[4].shape) != 1 && ctx.in[4].shape != Shape{g.M})
    ctx.fail("w_scale ", shape_str(ctx.in[4].shape), " must be a scalar or [", g.M,
             "] (per output channel)");
  if (!is_q8(ctx.in[7].dtype))
    ctx.fail("y_zero_point has dtype ", dtype_name(ctx.in[7].dtype), ", expected uint8 or int8");
  if (shape_numel(ctx.in[7].shape) != 1)
    ctx.fail("y_zero_point ", shape_str(ctx.in[7].shape), " must hold one value");
  if (ctx.has(8) && (ctx.in[8].dtype != DType::I32 || ctx.in[8].shape != Shape{g.M}))
    ctx.fail("B ", dtype_name(ctx.in[8].dtype), " ", shape_str(ctx.in[8].shape),
             " must be int32 [", g.M, "]");
  return one(ctx.in[7].dtype, conv_out_shape(g));
}

// y = saturate(rint((acc + B) * (x_scale * w_scale / y_scale) + y_zero_point)), the multiplier
// in float32 and the rest in float64, as onnx.reference.
void ref_qlinear_conv(const KernelCtx& ctx) {
  InferCtx ic{ctx.node, {}, {}};
  ConvGeom g = conv_geom(ic, ctx.input(0).shape(), ctx.input(3).shape(), false);
  int32_t xz = (int32_t)tensor_get_i64(ctx.input(2), 0);
  std::vector<int32_t> wz = ints_of(&ctx.input(5));
  std::vector<int32_t> acc = int_conv(g, ctx.input(0), ctx.input(3), xz, wz);
  std::vector<int32_t> bias = ctx.has_input(8) ? ints_of(&ctx.input(8)) : std::vector<int32_t>();
  std::vector<double> ws = doubles_of(&ctx.input(4));
  double xs = tensor_get_f64(ctx.input(1), 0), ys = tensor_get_f64(ctx.input(6), 0);
  double yz = tensor_get_f64(ctx.input(7), 0);
  Tensor& y = ctx.output(0);
  QRange r = qrange(y.dtype());
  int64_t osz = g.out_size();
  dispatch_quant(y.dtype(), [&](auto tag) {
    using Q = decltype(tag);
    Q* py = y.ptr<Q>();  // [N, M, out...]
    for (int64_t i = 0; i < (int64_t)acc.size(); i++) {
      int64_t m = (i / osz) % g.M;
      double mult = div_in(DType::F32, mul_in(DType::F32, xs, ws[ws.size() == 1 ? 0 : m]), ys);
      int32_t v = bias.empty() ? acc[i] : (int32_t)((uint32_t)acc[i] + (uint32_t)bias[m]);
      py[i] = saturate<Q>(std::nearbyint((double)v * mult + yz), r);
    }
  });
}

// ---- MatMulNBits (com.microsoft) ----------------------------------------------------------------

// Fails as a model error when the fault lies in the attributes (input -1) or in a constant
// input: planning for a feed reports input errors, but no feed can repair these.
template <class... Args>
[[noreturn]] void nbits_fail(const InferCtx& ctx, int input, const Args&... args) {
  bool constant = input < 0 || (input < (int)ctx.values.size() && ctx.values[input] != nullptr);
  ::ember::fail(constant ? ErrorKind::Model : ctx.error_kind, "[MatMulNBits] node '",
                ctx.node.name, "': ", args...);
}

struct NBits {
  int64_t K, N, block, blocks;
};

// Inputs: A [..., K], B uint8 [N, blocks, block / 2], scales [N * blocks] or [N, blocks],
// zero_points uint8 [N * ceil(blocks / 2)] or [N, ceil(blocks / 2)], g_idx (refused),
// bias [N]. Every size is checked against the attributes (the file is untrusted).
NBits nbits_check(const InferCtx& ctx) {
  const Attrs& at = ctx.node.attrs;
  NBits p{at.get_int("K", 0), at.get_int("N", 0), at.get_int("block_size", 0), 0};
  int64_t bits = at.get_int("bits", 4);
  if (p.K < 1 || p.N < 1) nbits_fail(ctx, -1, "K ", p.K, " and N ", p.N, " must be >= 1");
  if (bits != 4)
    nbits_fail(ctx, -1, "bits ", bits, " is not supported (ember runs 4-bit MatMulNBits only)");
  if (p.block < 16 || (p.block & (p.block - 1)) != 0)
    nbits_fail(ctx, -1, "block_size ", p.block, " must be a power of 2 and at least 16");
  if (p.block % 32 != 0)
    nbits_fail(ctx, -1, "block_size ", p.block, " is not supported: ember's group-wise int4 "
               "layout (Q4G) needs a multiple of 32");
  p.blocks = p.K / p.block + (p.K % p.block != 0);
  DType at_ = ctx.in[0].dtype;
  const Shape& a = ctx.in[0].shape;
  if (!is_float_dtype(at_))
    nbits_fail(ctx, 0, "A has dtype ", dtype_name(at_), ", expected float32, float16 or bfloat16");
  if (a.empty() || a.back() != p.K)
    nbits_fail(ctx, 0, "A ", shape_str(a), " must be [..., K = ", p.K, "]");
  if (ctx.in[1].dtype != DType::U8 || ctx.in[1].shape != Shape{p.N, p.blocks, p.block / 2})
    nbits_fail(ctx, 1, "B ", dtype_name(ctx.in[1].dtype), " ", shape_str(ctx.in[1].shape),
               " must be uint8 [N = ", p.N, ", ceil(K / block_size) = ", p.blocks,
               ", block_size / 2 = ", p.block / 2, "]");
  // B's shape holds N and blocks, so their products below stay inside its byte count.
  auto flat_or_2d = [&](int i, int64_t cols) {
    const Shape& s = ctx.in[i].shape;
    return s == Shape{p.N * cols} || s == Shape{p.N, cols};
  };
  DType st = ctx.in[2].dtype;
  if (st != DType::F32 && (st != at_ || !is_float_dtype(st)))
    nbits_fail(ctx, 2, "scales have dtype ", dtype_name(st), ", expected float32 or A's ",
               dtype_name(at_));
  if (!flat_or_2d(2, p.blocks))
    nbits_fail(ctx, 2, "scales ", shape_str(ctx.in[2].shape), " must be [", p.N * p.blocks,
               "] or [", p.N, ", ", p.blocks, "]");
  if (ctx.has(3)) {
    int64_t zb = (p.blocks + 1) / 2;
    if (ctx.in[3].dtype != DType::U8)
      nbits_fail(ctx, 3, "zero_points have dtype ", dtype_name(ctx.in[3].dtype),
                 "; only packed uint8 zero points are supported (float zero points are not)");
    if (!flat_or_2d(3, zb))
      nbits_fail(ctx, 3, "zero_points ", shape_str(ctx.in[3].shape), " must be [", p.N * zb,
                 "] or [", p.N, ", ", zb, "] (two 4-bit zero points per byte)");
  }
  if (ctx.has(4))
    nbits_fail(ctx, 4, "g_idx (deprecated: act-order group indices) is not supported");
  if (ctx.has(5)) {
    DType bt = ctx.in[5].dtype;
    if ((bt != DType::F32 && bt != at_) || ctx.in[5].shape != Shape{p.N})
      nbits_fail(ctx, 5, "bias ", dtype_name(bt), " ", shape_str(ctx.in[5].shape), " must be [",
                 p.N, "] of float32 or A's dtype");
  }
  return p;
}

std::vector<TensorType> infer_matmul_nbits(const InferCtx& ctx) {
  NBits p = nbits_check(ctx);
  Shape out = ctx.in[0].shape;
  out.back() = p.N;
  return one(ctx.in[0].dtype, out);
}

// W [N, K] = (code - zero point) * scale (q4g_dequantize); Y = A @ W^T summing k in order in
// float, plus bias.
void ref_matmul_nbits(const KernelCtx& ctx) {
  InferCtx ic{ctx.node, {}, {}};
  for (int i = 0; i < 6; i++)
    ic.in.push_back(ctx.has_input(i) ? TensorType{ctx.input(i).dtype(), ctx.input(i).shape()}
                                     : TensorType{});
  NBits p = nbits_check(ic);
  std::vector<double> sd = doubles_of(&ctx.input(2));
  std::vector<float> scales(sd.begin(), sd.end());
  std::vector<float> w((size_t)(p.N * p.K));
  q4g_dequantize(ctx.input(1).ptr<uint8_t>(), scales.data(),
                 ctx.has_input(3) ? ctx.input(3).ptr<uint8_t>() : nullptr, p.N, p.K, p.block,
                 w.data());
  std::vector<double> a = doubles_of(&ctx.input(0));
  std::vector<double> bias = doubles_of(ctx.has_input(5) ? &ctx.input(5) : nullptr);
  Tensor& y = ctx.output(0);  // [..., N]
  int64_t rows = y.numel() / p.N;
  for (int64_t r = 0; r < rows; r++) {
    for (int64_t n = 0; n < p.N; n++) {
      const float* wn = w.data() + n * p.K;
      float acc = 0.0f;
      for (int64_t k = 0; k < p.K; k++) acc += (float)a[r * p.K + k] * wn[k];
      if (!bias.empty()) acc += (float)bias[n];
      store_float(y, r * p.N + n, acc);
    }
  }
}

}  // namespace

static const OpDef kOps[] = {
    {OpType::QuantizeLinear, "QuantizeLinear", 2, 3, 1, 1, 0,
     {{"axis", AttrKind::Int}, {"block_size", AttrKind::Int}, {"output_dtype", AttrKind::Int},
      {"precision", AttrKind::Int}, {"saturate", AttrKind::Bool}},
     infer_quantize, ref_quantize},
    {OpType::DequantizeLinear, "DequantizeLinear", 2, 3, 1, 1, 0,
     {{"axis", AttrKind::Int}, {"block_size", AttrKind::Int}, {"output_dtype", AttrKind::Int}},
     infer_dequantize, ref_dequantize},
    {OpType::DynamicQuantizeLinear, "DynamicQuantizeLinear", 1, 1, 3, 3, 0, {},
     infer_dynamic_quantize, ref_dynamic_quantize},
    {OpType::MatMulInteger, "MatMulInteger", 2, 4, 1, 1, 0, {}, infer_matmul_integer,
     ref_matmul_integer},
    {OpType::QLinearMatMul, "QLinearMatMul", 8, 8, 1, 1, 0, {}, infer_qlinear_matmul,
     ref_qlinear_matmul},
    {OpType::ConvInteger, "ConvInteger", 2, 4, 1, 1, 0,
     {{"auto_pad", AttrKind::String}, {"dilations", AttrKind::Ints}, {"group", AttrKind::Int},
      {"kernel_shape", AttrKind::Ints}, {"pads", AttrKind::Ints}, {"strides", AttrKind::Ints}},
     infer_conv_integer, ref_conv_integer},
    {OpType::QLinearConv, "QLinearConv", 8, 9, 1, 1, 0,
     {{"auto_pad", AttrKind::String}, {"dilations", AttrKind::Ints}, {"group", AttrKind::Int},
      {"kernel_shape", AttrKind::Ints}, {"pads", AttrKind::Ints}, {"strides", AttrKind::Ints}},
     infer_qlinear_conv, ref_qlinear_conv},
    // com.microsoft's MatMulNBits (bits = 4): A @ dequantize(B)^T + bias. Fused by
    // fuse_matmul_nbits into Q4MatMul when B, scales and zero points are constants.
    {OpType::MatMulNBits, "MatMulNBits", 3, 6, 1, 1, 0,
     {{"K", AttrKind::Int, true}, {"N", AttrKind::Int, true}, {"bits", AttrKind::Int},
      {"block_size", AttrKind::Int, true}, {"accuracy_level", AttrKind::Int}},
     infer_matmul_nbits, ref_matmul_nbits},
};

std::span<const OpDef> op_defs_quant() { return kOps; }

}  // namespace ember
