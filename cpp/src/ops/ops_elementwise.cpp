// Elementwise binary ops with numpy broadcasting (Add ... Xor, variadic Sum/Mean/Min/Max)
// and the IsNaN/IsInf classifiers. References compute in the input type (f16/bf16 in
// float). Unary maths, Clip, Where and Cast live in ops_unary.cpp.
#include <limits>
#include <type_traits>

#include "ops/op_util.h"

namespace ember {
namespace {

// ---- binary -----------------------------------------------------------------------------

enum class Bin { Add, Sub, Mul, Div, Pow, Min, Max, Equal, Less, Greater, LessOrEqual,
                 GreaterOrEqual, And, Or, Xor };

// Integers wrap on overflow, as numpy's do (in C++ a signed overflow is undefined, and narrow
// types promote to int): the arithmetic runs on uint64, then back to C's width.
template <class C>
inline auto wrapping(C v) {
  if constexpr (std::is_integral_v<C>)
    return (uint64_t)v;
  else
    return v;
}

template <class C>
inline C bin_apply(Bin op, C a, C b) {
  switch (op) {
    case Bin::Add: return (C)(wrapping(a) + wrapping(b));
    case Bin::Sub: return (C)(wrapping(a) - wrapping(b));
    case Bin::Mul: return (C)(wrapping(a) * wrapping(b));
    case Bin::Div:
      if constexpr (std::is_integral_v<C>) {
        if (b == 0) fail(ErrorKind::Input, "[Div] integer division by zero");
        // INT_MIN / -1 traps (SIGFPE) on x86; numpy wraps it to INT_MIN.
        if constexpr (std::is_signed_v<C>) if (b == -1) return (C)(0 - (std::make_unsigned_t<C>)a);
        return a / b;
      } else {
        return a / b;
      }
    case Bin::Pow:
      if constexpr (std::is_integral_v<C> && !std::is_same_v<C, bool>) {
        // A double outside C's range (or NaN) is UB to convert: give C's minimum, like numpy on x86.
        using L = std::numeric_limits<C>;
        double p = std::pow((double)a, (double)b);
        return p >= (double)L::min() && p < (double)L::max() + 1.0 ? (C)p : L::min();
      } else {
        return (C)std::pow((double)a, (double)b);
      }
    case Bin::Min:
      if constexpr (std::is_floating_point_v<C>) if (std::isnan(a) || std::isnan(b)) return NAN;
      return a < b ? a : b;
    case Bin::Max:
      if constexpr (std::is_floating_point_v<C>) if (std::isnan(a) || std::isnan(b)) return NAN;
      return a > b ? a : b;
    default: return a;
  }
}

inline bool cmp_apply(Bin op, double a, double b) {
  switch (op) {
    case Bin::Equal: return a == b;
    case Bin::Less: return a < b;
    case Bin::Greater: return a > b;
    case Bin::LessOrEqual: return a <= b;
    case Bin::GreaterOrEqual: return a >= b;
    case Bin::And: return a != 0 && b != 0;
    case Bin::Or: return a != 0 || b != 0;
    case Bin::Xor: return (a != 0) != (b != 0);
    default: return false;
  }
}

bool is_cmp(Bin op) { return op >= Bin::Equal; }

Bin bin_of(OpType op) {
  switch (op) {
    case OpType::Add: case OpType::Sum: case OpType::Mean: return Bin::Add;
    case OpType::Sub: return Bin::Sub;
    case OpType::Mul: return Bin::Mul;
    case OpType::Div: return Bin::Div;
    case OpType::Pow: return Bin::Pow;
    case OpType::Min: return Bin::Min;
    case OpType::Max: return Bin::Max;
    case OpType::Equal: return Bin::Equal;
    case OpType::Less: return Bin::Less;
    case OpType::Greater: return Bin::Greater;
    case OpType::LessOrEqual: return Bin::LessOrEqual;
    case OpType::GreaterOrEqual: return Bin::GreaterOrEqual;
    case OpType::And: return Bin::And;
    case OpType::Or: return Bin::Or;
    case OpType::Xor: return Bin::Xor;
    default: fail(ErrorKind::Internal, "[elementwise] not a binary op");
  }
}

std::vector<TensorType> infer_binary(const InferCtx& ctx) {
  Bin op = bin_of(ctx.node.op);
  DType t = ctx.in[0].dtype;
  Shape s = ctx.in[0].shape;
  for (int i = 1; i < ctx.num_inputs(); i++) {
    // Pow's exponent may have its own type; everything else must agree.
    if (op != Bin::Pow && ctx.in[i].dtype != t)
      ctx.fail("input ", i, " is ", dtype_name(ctx.in[i].dtype), ", input 0 is ", dtype_name(t));
    s = broadcast_shapes(ctx, s, ctx.in[i].shape);
  }
  if ((op == Bin::And || op == Bin::Or || op == Bin::Xor) && t != DType::Bool)
    ctx.fail("inputs must be bool");
  return one(is_cmp(op) ? DType::Bool : t, s);
}

// out = a (op) b with broadcasting; A, B, O are storage types.
template <class A, class B, class O>
void binary_ref(Bin op, const Tensor& a, const Tensor& b, Tensor& out) {
  const A* pa = a.ptr<A>();
  const B* pb = b.ptr<B>();
  O* po = out.ptr<O>();
  Shape sa = broadcast_strides(a.shape(), out.shape());
  Shape sb = broadcast_strides(b.shape(), out.shape());
  int64_t i = 0;
  for (BroadcastIter it(out.shape(), {sa, sb}); !it.done(); it.next(), i++) {
    auto x = load(pa, it.off[0]);
    auto y = load(pb, it.off[1]);
    if constexpr (std::is_same_v<O, bool>) {
      po[i] = cmp_apply(op, (double)x, (double)y);
    } else {
      using C = compute_t<O>;
      store(po, i, bin_apply<C>(op, (C)x, (C)y));
    }
  }
}

void ref_binary(const KernelCtx& ctx) {
  Bin op = bin_of(ctx.node.op);
  Tensor& out = ctx.output(0);
  int n = (int)ctx.in.size();
  // Variadic ops fold left: out = ((in0 op in1) op in2) ...
  Tensor acc = *ctx.in[0];
  for (int k = 1; k < n; k++) {
    const Tensor& b = *ctx.in[k];
    Tensor dst = (k == n - 1) ? out : Tensor::empty(out.dtype(), out.shape());
    dispatch_dtype(acc.dtype(), [&](auto ta) {
      using A = decltype(ta);
      if (is_cmp(op)) {
        if constexpr (!std::is_same_v<A, bool> || true) {
          dispatch_dtype(b.dtype(), [&](auto tb) { binary_ref<A, decltype(tb), bool>(op, acc, b, dst); });
        }
      } else if (op == Bin::Pow && b.dtype() != acc.dtype()) {
        dispatch_dtype(b.dtype(), [&](auto tb) { binary_ref<A, decltype(tb), A>(op, acc, b, dst); });
      } else {
        binary_ref<A, A, A>(op, acc, b, dst);
      }
    });
    acc = dst;
  }
  if (n == 1) {
    Tensor src = *ctx.in[0];
    std::memcpy(out.data(), src.data(), out.nbytes());
  }
  if (ctx.node.op == OpType::Mean) {
    dispatch_dtype(out.dtype(), [&](auto t) {
      using T = decltype(t);
      if constexpr (is_float_v<T>) {
        T* p = out.ptr<T>();
        for (int64_t i = 0; i < out.numel(); i++) store(p, i, load(p, i) / (compute_t<T>)n);
      } else {
        fail(ErrorKind::Model, "[Mean] needs float inputs");
      }
    });
  }
}

// ---- classification: IsNaN, IsInf ------------------------------------------------------

std::vector<TensorType> infer_classify(const InferCtx& ctx) {
  if (!dtype_info(ctx.in[0].dtype).is_float) ctx.fail("input must be a float type");
  return one(DType::Bool, ctx.in[0].shape);
}

void ref_classify(const KernelCtx& ctx) {
  const Tensor& x = ctx.input(0);
  bool* out = ctx.output(0).ptr<bool>();
  bool nan = ctx.node.op == OpType::IsNaN;
  bool pos = ctx.node.attrs.get_int("detect_positive", 1) != 0;
  bool neg = ctx.node.attrs.get_int("detect_negative", 1) != 0;
  dispatch_dtype(x.dtype(), [&](auto t) {
    using T = decltype(t);
    if constexpr (is_float_v<T>) {
      const T* p = x.ptr<T>();
      for (int64_t i = 0; i < x.numel(); i++) {
        double v = (double)load(p, i);
        out[i] = nan ? std::isnan(v) : (std::isinf(v) && ((v > 0 && pos) || (v < 0 && neg)));
      }
    }
  });
}

}  // namespace

static const OpDef kOps[] = {
    {OpType::Add, "Add", 2, 2, 1, 1, 0, {}, infer_binary, ref_binary},
    {OpType::Sub, "Sub", 2, 2, 1, 1, 0, {}, infer_binary, ref_binary},
    {OpType::Mul, "Mul", 2, 2, 1, 1, 0, {}, infer_binary, ref_binary},
    {OpType::Div, "Div", 2, 2, 1, 1, 0, {}, infer_binary, ref_binary},
    {OpType::Pow, "Pow", 2, 2, 1, 1, 0, {}, infer_binary, ref_binary},
    {OpType::Min, "Min", 1, -1, 1, 1, 0, {}, infer_binary, ref_binary},
    {OpType::Max, "Max", 1, -1, 1, 1, 0, {}, infer_binary, ref_binary},
    {OpType::Sum, "Sum", 1, -1, 1, 1, 0, {}, infer_binary, ref_binary},
    {OpType::Mean, "Mean", 1, -1, 1, 1, 0, {}, infer_binary, ref_binary},
    {OpType::Equal, "Equal", 2, 2, 1, 1, 0, {}, infer_binary, ref_binary},
    {OpType::Less, "Less", 2, 2, 1, 1, 0, {}, infer_binary, ref_binary},
    {OpType::Greater, "Greater", 2, 2, 1, 1, 0, {}, infer_binary, ref_binary},
    {OpType::LessOrEqual, "LessOrEqual", 2, 2, 1, 1, 0, {}, infer_binary, ref_binary},
    {OpType::GreaterOrEqual, "GreaterOrEqual", 2, 2, 1, 1, 0, {}, infer_binary, ref_binary},
    {OpType::And, "And", 2, 2, 1, 1, 0, {}, infer_binary, ref_binary},
    {OpType::Or, "Or", 2, 2, 1, 1, 0, {}, infer_binary, ref_binary},
    {OpType::Xor, "Xor", 2, 2, 1, 1, 0, {}, infer_binary, ref_binary},
    {OpType::IsNaN, "IsNaN", 1, 1, 1, 1, 0, {}, infer_classify, ref_classify},
    {OpType::IsInf, "IsInf", 1, 1, 1, 1, 0,
     {{"detect_positive", AttrKind::Bool}, {"detect_negative", AttrKind::Bool}}, infer_classify,
     ref_classify},
};

std::span<const OpDef> op_defs_elementwise() { return kOps; }

}  // namespace ember
