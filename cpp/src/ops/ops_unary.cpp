// Unary-ish elementwise ops: maths (Sqrt ... Cos, Gelu), Not, Identity, Dropout (inference
// only), Clip, Where, Cast, CastLike. References: transcendental functions are evaluated in
// double and rounded once (so they are the accuracy yardstick for the fast kernels); plain
// arithmetic runs in the compute type (f16/bf16 in float). Fast f32 kernels live in
// kernels/generic/elementwise_f32.cpp.
#include <bit>
#include <numbers>
#include <type_traits>

#include "ops/op_util.h"

namespace ember {

double sigmoid_d(double x) {
  if (x >= 0) return 1.0 / (1.0 + std::exp(-x));
  double e = std::exp(x);
  return e / (1.0 + e);
}

// 0.5 x (1 + tanh(u)) == x sigmoid(2u): the same function, without cancellation for x << 0.
double gelu_tanh_d(double x) {
  constexpr double k = std::numbers::sqrt2 * std::numbers::inv_sqrtpi;  // sqrt(2 / pi)
  return x * sigmoid_d(2.0 * k * (x + 0.044715 * x * x * x));
}

// 0.5 x (1 + erf(x / sqrt2)) == 0.5 x erfc(-x / sqrt2): no cancellation for x << 0.
double gelu_erf_d(double x) { return 0.5 * x * std::erfc(-x / std::numbers::sqrt2); }

namespace {

// ---- unary maths ------------------------------------------------------------------------

enum class Un { Sqrt, Exp, Log, Neg, Abs, Reciprocal, Erf, Tanh, Sigmoid, Relu, Softplus, Sin,
                Cos, Gelu, GeluTanh };

Un un_of(const Node& n) {
  switch (n.op) {
    case OpType::Sqrt: return Un::Sqrt;
    case OpType::Exp: return Un::Exp;
    case OpType::Log: return Un::Log;
    case OpType::Neg: return Un::Neg;
    case OpType::Abs: return Un::Abs;
    case OpType::Reciprocal: return Un::Reciprocal;
    case OpType::Erf: return Un::Erf;
    case OpType::Tanh: return Un::Tanh;
    case OpType::Sigmoid: return Un::Sigmoid;
    case OpType::Relu: return Un::Relu;
    case OpType::Softplus: return Un::Softplus;
    case OpType::Sin: return Un::Sin;
    case OpType::Cos: return Un::Cos;
    case OpType::Gelu:
      return n.attrs.get_string("approximate", "none") == "tanh" ? Un::GeluTanh : Un::Gelu;
    default: fail(ErrorKind::Internal, "[unary] not a unary op");
  }
}

// Dtype classes ONNX allows per op.
enum : int { kFloat = 1, kSigned = 2, kUnsigned = 4, kBool = 8 };

int allowed_classes(OpType op) {
  switch (op) {
    case OpType::Neg: case OpType::Relu: return kFloat | kSigned;
    case OpType::Abs: return kFloat | kSigned | kUnsigned;
    case OpType::Not: return kBool;
    default: return kFloat;
  }
}

bool dtype_in(int classes, DType t) {
  if (t == DType::Bool) return classes & kBool;
  const DTypeInfo& info = dtype_info(t);
  if (info.is_quant) return false;
  if (info.is_float) return classes & kFloat;
  return classes & (info.is_signed ? kSigned : kUnsigned);
}

bool is_element_dtype(DType t) {
  return (size_t)t < (size_t)DType::Count && !dtype_info(t).is_quant;
}

template <class C>
C unary_float(Un op, C v) {
  double d = v;
  switch (op) {
    case Un::Sqrt: return std::sqrt(v);
    case Un::Neg: return -v;
    case Un::Abs: return std::fabs(v);
    case Un::Reciprocal: return C(1) / v;
    case Un::Relu: return v < 0 ? C(0) : v;  // NaN stays NaN (np.maximum)
    case Un::Exp: return (C)std::exp(d);
    case Un::Log: return (C)std::log(d);
    case Un::Erf: return (C)std::erf(d);
    case Un::Tanh: return (C)std::tanh(d);
    case Un::Sigmoid: return (C)sigmoid_d(d);
    case Un::Softplus: return (C)(std::max(d, 0.0) + std::log1p(std::exp(-std::fabs(d))));
    case Un::Sin: return (C)std::sin(d);
    case Un::Cos: return (C)std::cos(d);
    case Un::Gelu: return (C)gelu_erf_d(d);
    case Un::GeluTanh: return (C)gelu_tanh_d(d);
  }
  return v;
}

// Integer Neg/Abs wrap like numpy (-INT_MIN == INT_MIN) without signed overflow.
template <class T>
T unary_int(Un op, T v) {
  using U = std::make_unsigned_t<T>;
  T neg = (T)(U(0) - (U)v);
  switch (op) {
    case Un::Neg: return neg;
    case Un::Abs: return v < 0 ? neg : v;
    case Un::Relu: return v < 0 ? T(0) : v;
    default: fail(ErrorKind::Internal, "[unary] integer op not supported");
  }
}

std::vector<TensorType> infer_unary(const InferCtx& ctx) {
  DType t = ctx.in[0].dtype;
  if (!dtype_in(allowed_classes(ctx.node.op), t))
    ctx.fail("input type ", dtype_name(t), " is not supported");
  if (ctx.node.op == OpType::Gelu) {
    std::string a = ctx.node.attrs.get_string("approximate", "none");
    if (a != "none" && a != "tanh") ctx.fail("approximate must be 'none' or 'tanh', got '", a, "'");
  }
  return one(t, ctx.in[0].shape);
}

void ref_unary(const KernelCtx& ctx) {
  const Tensor& x = ctx.input(0);
  Tensor& y = ctx.output(0);
  int64_t n = y.numel();
  if (ctx.node.op == OpType::Not) {
    const bool* px = x.ptr<bool>();
    bool* py = y.ptr<bool>();
    for (int64_t i = 0; i < n; i++) py[i] = !px[i];
    return;
  }
  Un op = un_of(ctx.node);
  dispatch_dtype(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.ptr<T>();
    T* py = y.ptr<T>();
    if constexpr (is_float_v<T>) {
      using C = compute_t<T>;
      for (int64_t i = 0; i < n; i++) store(py, i, unary_float<C>(op, load(px, i)));
    } else if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
      for (int64_t i = 0; i < n; i++) py[i] = unary_int<T>(op, px[i]);
    } else {
      fail(ErrorKind::Internal, "[", op_name(ctx.node.op), "] bool input");
    }
  });
}

// ---- Identity, Dropout ------------------------------------------------------------------

std::vector<TensorType> infer_identity(const InferCtx& ctx) {
  if (!is_element_dtype(ctx.in[0].dtype))
    ctx.fail("input type ", dtype_name(ctx.in[0].dtype), " is not supported");
  return one(ctx.in[0].dtype, ctx.in[0].shape);
}

void ref_identity(const KernelCtx& ctx) {
  Tensor& y = ctx.output(0);
  if (y.nbytes() > 0) std::memcpy(y.data(), ctx.input(0).data(), y.nbytes());
}

std::vector<TensorType> infer_dropout(const InferCtx& ctx) {
  DType t = ctx.in[0].dtype;
  if (!dtype_in(kFloat, t)) ctx.fail("data type ", dtype_name(t), " is not supported");
  if (ctx.has(1) && (!dtype_in(kFloat, ctx.in[1].dtype) || shape_numel(ctx.in[1].shape) != 1))
    ctx.fail("ratio must be a float scalar");
  if (ctx.has(2)) {
    if (ctx.in[2].dtype != DType::Bool || shape_numel(ctx.in[2].shape) != 1)
      ctx.fail("training_mode must be a bool scalar");
    const Tensor* v = ctx.value(2);
    if (v && v->ptr<bool>()[0])
      ctx.fail("training_mode is true; ember runs inference only");
  }
  std::vector<TensorType> out = one(t, ctx.in[0].shape);
  if (ctx.node.outputs.size() > 1) out.push_back(TensorType{DType::Bool, ctx.in[0].shape});
  return out;
}

// Inference: output = data, mask = all true (onnx.reference's Dropout with training off).
void ref_dropout(const KernelCtx& ctx) {
  if (ctx.has_input(2)) {
    const Tensor& tm = ctx.input(2);
    EMBER_CHECK(tm.dtype() == DType::Bool && tm.numel() == 1, Input,
                "[Dropout] training_mode must be a bool scalar");
    EMBER_CHECK(!tm.ptr<bool>()[0], Input,
                "[Dropout] training_mode is true; ember runs inference only");
  }
  Tensor& y = ctx.output(0);
  if (y.nbytes() > 0) std::memcpy(y.data(), ctx.input(0).data(), y.nbytes());
  if (ctx.has_output(1)) {
    Tensor& mask = ctx.output(1);
    bool* pm = mask.ptr<bool>();
    for (int64_t i = 0; i < mask.numel(); i++) pm[i] = true;
  }
}

// ---- Clip ---------------------------------------------------------------------------------

// min and max are scalars in ONNX; any shape that broadcasts to the input's (numpy's
// np.clip) is accepted too, as long as the output keeps the input's shape.
std::vector<TensorType> infer_clip(const InferCtx& ctx) {
  DType t = ctx.in[0].dtype;
  if (!dtype_in(kFloat | kSigned | kUnsigned, t))
    ctx.fail("input type ", dtype_name(t), " is not supported");
  for (int i = 1; i < 3; i++) {
    if (!ctx.has(i)) continue;
    const char* what = i == 1 ? "min" : "max";
    if (ctx.in[i].dtype != t)
      ctx.fail(what, " is ", dtype_name(ctx.in[i].dtype), ", input is ", dtype_name(t));
    if (broadcast_shapes(ctx, ctx.in[0].shape, ctx.in[i].shape) != ctx.in[0].shape)
      ctx.fail(what, " has shape ", shape_str(ctx.in[i].shape), ", which does not broadcast to ",
               shape_str(ctx.in[0].shape));
  }
  return one(t, ctx.in[0].shape);
}

void ref_clip(const KernelCtx& ctx) {
  const Tensor& x = ctx.input(0);
  Tensor& y = ctx.output(0);
  bool has_lo = ctx.has_input(1), has_hi = ctx.has_input(2);
  Shape zeros(y.shape().size(), 0);
  Shape s_lo = has_lo ? broadcast_strides(ctx.input(1).shape(), y.shape()) : zeros;
  Shape s_hi = has_hi ? broadcast_strides(ctx.input(2).shape(), y.shape()) : zeros;
  dispatch_dtype(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    using C = compute_t<T>;
    const T* px = x.ptr<T>();
    const T* plo = has_lo ? ctx.input(1).ptr<T>() : nullptr;
    const T* phi = has_hi ? ctx.input(2).ptr<T>() : nullptr;
    T* py = y.ptr<T>();
    int64_t i = 0;
    // v = min(max(x, lo), hi) with NaN propagating from any operand, like np.clip.
    for (BroadcastIter it(y.shape(), {s_lo, s_hi}); !it.done(); it.next(), i++) {
      C v = load(px, i);
      if (has_lo) {
        C lo = load(plo, it.off[0]);
        if constexpr (std::is_floating_point_v<C>) if (std::isnan(lo)) v = lo;
        v = v < lo ? lo : v;
      }
      if (has_hi) {
        C hi = load(phi, it.off[1]);
        if constexpr (std::is_floating_point_v<C>) if (std::isnan(hi)) v = hi;
        v = hi < v ? hi : v;
      }
      store(py, i, v);
    }
  });
}

// ---- Where --------------------------------------------------------------------------------

std::vector<TensorType> infer_where(const InferCtx& ctx) {
  if (ctx.in[0].dtype != DType::Bool)
    ctx.fail("condition must be bool, got ", dtype_name(ctx.in[0].dtype));
  DType t = ctx.in[1].dtype;
  if (!is_element_dtype(t)) ctx.fail("X type ", dtype_name(t), " is not supported");
  if (ctx.in[2].dtype != t)
    ctx.fail("X is ", dtype_name(t), ", Y is ", dtype_name(ctx.in[2].dtype));
  Shape s = broadcast_shapes(ctx, ctx.in[0].shape, ctx.in[1].shape);
  return one(t, broadcast_shapes(ctx, s, ctx.in[2].shape));
}

void ref_where(const KernelCtx& ctx) {
  const Tensor &c = ctx.input(0), &x = ctx.input(1), &yv = ctx.input(2);
  Tensor& out = ctx.output(0);
  const Shape& s = out.shape();
  dispatch_dtype(out.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const bool* pc = c.ptr<bool>();
    const T* px = x.ptr<T>();
    const T* py = yv.ptr<T>();
    T* po = out.ptr<T>();
    int64_t i = 0;
    BroadcastIter it(s, {broadcast_strides(c.shape(), s), broadcast_strides(x.shape(), s),
                         broadcast_strides(yv.shape(), s)});
    for (; !it.done(); it.next(), i++) po[i] = pc[it.off[0]] ? px[it.off[1]] : py[it.off[2]];
  });
}

// ---- Cast, CastLike -----------------------------------------------------------------------

struct OnnxType {
  int64_t code;
  const char* name;
  DType dtype;  // Count: not supported by ember
};

// TensorProto.DataType codes.
const OnnxType kOnnxTypes[] = {
    {1, "FLOAT", DType::F32}, {2, "UINT8", DType::U8}, {3, "INT8", DType::I8},
    {4, "UINT16", DType::Count}, {5, "INT16", DType::I16}, {6, "INT32", DType::I32},
    {7, "INT64", DType::I64}, {8, "STRING", DType::Count}, {9, "BOOL", DType::Bool},
    {10, "FLOAT16", DType::F16}, {11, "DOUBLE", DType::F64}, {12, "UINT32", DType::Count},
    {13, "UINT64", DType::Count}, {14, "COMPLEX64", DType::Count}, {15, "COMPLEX128", DType::Count},
    {16, "BFLOAT16", DType::BF16}, {17, "FLOAT8E4M3FN", DType::Count},
    {18, "FLOAT8E4M3FNUZ", DType::Count}, {19, "FLOAT8E5M2", DType::Count},
    {20, "FLOAT8E5M2FNUZ", DType::Count}, {21, "UINT4", DType::Count}, {22, "INT4", DType::Count},
    {23, "FLOAT4E2M1", DType::Count}, {24, "FLOAT8E8M0", DType::Count}, {25, "UINT2", DType::Count},
    {26, "INT2", DType::Count}, {27, "FLOAT6E2M3", DType::Count}, {28, "FLOAT6E3M2", DType::Count},
};

void check_cast_attrs(const InferCtx& ctx) {
  std::string rm = ctx.node.attrs.get_string("round_mode", "up");
  if (rm != "up" && rm != "down" && rm != "nearest")
    ctx.fail("round_mode must be 'up', 'down' or 'nearest', got '", rm, "'");
  ctx.node.attrs.get_int("saturate", 1);  // only meaningful for float8 targets
}

std::vector<TensorType> infer_cast(const InferCtx& ctx) {
  check_cast_attrs(ctx);
  if (!is_element_dtype(ctx.in[0].dtype))
    ctx.fail("input type ", dtype_name(ctx.in[0].dtype), " is not supported");
  int64_t to = ctx.node.attrs.get_int("to", 0);
  for (const OnnxType& t : kOnnxTypes) {
    if (t.code != to) continue;
    if (t.dtype == DType::Count) ctx.fail("unsupported target type ", to, " (", t.name, ")");
    return one(t.dtype, ctx.in[0].shape);
  }
  ctx.fail("unknown target type ", to);
}

std::vector<TensorType> infer_cast_like(const InferCtx& ctx) {
  check_cast_attrs(ctx);
  for (int i = 0; i < 2; i++)
    if (!is_element_dtype(ctx.in[i].dtype))
      ctx.fail("input ", i, " type ", dtype_name(ctx.in[i].dtype), " is not supported");
  return one(ctx.in[1].dtype, ctx.in[0].shape);
}

// float -> integer as numpy does on x86: truncate through int32 (int64 for 64-bit targets),
// out of range and NaN give the "integer indefinite" minimum, then wrap. Never UB.
template <class D>
D float_to_int(double v) {
  if constexpr (sizeof(D) == 8) {
    bool ok = v >= -9223372036854775808.0 && v < 9223372036854775808.0;
    return (D)(ok ? (int64_t)v : INT64_MIN);
  } else {
    bool ok = v > -2147483649.0 && v < 2147483648.0;
    return (D)(ok ? (int32_t)v : INT32_MIN);
  }
}

// double -> float rounding to odd, so that a second rounding to f16 equals the direct
// double -> f16 rounding numpy does.
float f64_to_f32_round_odd(double d) {
  float f = (float)d;
  if (std::isfinite(f) && (double)f != d) {
    uint32_t b = std::bit_cast<uint32_t>(f);
    if (std::fabs((double)f) > std::fabs(d)) b -= 1;  // rounded away from zero: step back
    f = std::bit_cast<float>(b | 1u);
  }
  return f;
}

// Stores value v (a compute type: float, double, integer or bool) as element i of D.
template <class D, class V>
void cast_store(D* po, int64_t i, V v) {
  if constexpr (std::is_same_v<D, bool>) {
    po[i] = v != 0;  // NaN -> true, like numpy
  } else if constexpr (std::is_same_v<D, f16_t>) {
    if constexpr (std::is_same_v<V, double>) po[i].bits = f32_to_f16(f64_to_f32_round_odd(v));
    else po[i].bits = f32_to_f16((float)v);
  } else if constexpr (std::is_same_v<D, bf16_t>) {
    po[i].bits = f32_to_bf16((float)v);  // through float, like ml_dtypes
  } else if constexpr (std::is_floating_point_v<D>) {
    po[i] = (D)v;
  } else if constexpr (std::is_floating_point_v<V>) {
    po[i] = float_to_int<D>((double)v);
  } else {
    po[i] = (D)v;  // integers wrap (two's complement); bool -> 0 / 1
  }
}

void ref_cast(const KernelCtx& ctx) {
  const Tensor& x = ctx.input(0);
  Tensor& y = ctx.output(0);
  int64_t n = y.numel();
  if (x.dtype() == y.dtype()) {
    if (y.nbytes() > 0) std::memcpy(y.data(), x.data(), y.nbytes());
    return;
  }
  dispatch_dtype(x.dtype(), [&](auto ts) {
    using S = decltype(ts);
    const S* px = x.ptr<S>();
    dispatch_dtype(y.dtype(), [&](auto td) {
      using D = decltype(td);
      D* py = y.ptr<D>();
      for (int64_t i = 0; i < n; i++) cast_store<D>(py, i, load(px, i));
    });
  });
}

}  // namespace

static const OpDef kOps[] = {
    {OpType::Sqrt, "Sqrt", 1, 1, 1, 1, 0, {}, infer_unary, ref_unary},
    {OpType::Exp, "Exp", 1, 1, 1, 1, 0, {}, infer_unary, ref_unary},
    {OpType::Log, "Log", 1, 1, 1, 1, 0, {}, infer_unary, ref_unary},
    {OpType::Neg, "Neg", 1, 1, 1, 1, 0, {}, infer_unary, ref_unary},
    {OpType::Abs, "Abs", 1, 1, 1, 1, 0, {}, infer_unary, ref_unary},
    {OpType::Reciprocal, "Reciprocal", 1, 1, 1, 1, 0, {}, infer_unary, ref_unary},
    {OpType::Erf, "Erf", 1, 1, 1, 1, 0, {}, infer_unary, ref_unary},
    {OpType::Tanh, "Tanh", 1, 1, 1, 1, 0, {}, infer_unary, ref_unary},
    {OpType::Sigmoid, "Sigmoid", 1, 1, 1, 1, 0, {}, infer_unary, ref_unary},
    {OpType::Relu, "Relu", 1, 1, 1, 1, 0, {}, infer_unary, ref_unary},
    {OpType::Gelu, "Gelu", 1, 1, 1, 1, 0, {{"approximate", AttrKind::String}}, infer_unary,
     ref_unary},
    {OpType::Softplus, "Softplus", 1, 1, 1, 1, 0, {}, infer_unary, ref_unary},
    {OpType::Sin, "Sin", 1, 1, 1, 1, 0, {}, infer_unary, ref_unary},
    {OpType::Cos, "Cos", 1, 1, 1, 1, 0, {}, infer_unary, ref_unary},
    {OpType::Not, "Not", 1, 1, 1, 1, 0, {}, infer_unary, ref_unary},
    {OpType::Identity, "Identity", 1, 1, 1, 1, 0, {}, infer_identity, ref_identity},
    // ratio was an attribute in Dropout-10 (still current at opset 11); ignored at inference.
    {OpType::Dropout, "Dropout", 1, 3, 1, 2, 0,
     {{"seed", AttrKind::Int}, {"ratio", AttrKind::Float}}, infer_dropout, ref_dropout},
    {OpType::Clip, "Clip", 1, 3, 1, 1, 0, {}, infer_clip, ref_clip},
    {OpType::Where, "Where", 3, 3, 1, 1, 0, {}, infer_where, ref_where},
    {OpType::Cast, "Cast", 1, 1, 1, 1, 0,
     {{"to", AttrKind::Int, true}, {"saturate", AttrKind::Int}, {"round_mode", AttrKind::String}},
     infer_cast, ref_cast},
    {OpType::CastLike, "CastLike", 2, 2, 1, 1, 0,
     {{"saturate", AttrKind::Int}, {"round_mode", AttrKind::String}}, infer_cast_like, ref_cast},
};

std::span<const OpDef> op_defs_unary() { return kOps; }

}  // namespace ember
