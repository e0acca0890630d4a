// CNN layers and activations: LeakyRelu ... Sign (elementwise), PRelu and Mod (broadcasting),
// GlobalAveragePool / GlobalMaxPool, BatchNormalization (inference only), Instance- and
// GroupNormalization. MaxPool / AveragePool live in ops_pool.cpp. References compute
// transcendental functions and norm statistics in double and round once.
#include <type_traits>

#include "ops/op_util.h"

namespace ember {
namespace {

bool is_float_dtype(DType t) {
  return t == DType::F32 || t == DType::F16 || t == DType::BF16 || t == DType::F64;
}

bool is_int_dtype(DType t) {
  return t == DType::I8 || t == DType::U8 || t == DType::I16 || t == DType::I32 ||
         t == DType::I64;
}

// ---- activations ----------------------------------------------------------------------------

std::vector<TensorType> infer_activation(const InferCtx& ctx) {
  DType t = ctx.in[0].dtype;
  bool ok = is_float_dtype(t) || (ctx.node.op == OpType::Sign && is_int_dtype(t));
  if (!ok) ctx.fail("input type ", dtype_name(t), " is not supported");
  return one(t, ctx.in[0].shape);
}

double activation_d(const Node& n, double x) {
  const Attrs& a = n.attrs;
  switch (n.op) {
    case OpType::LeakyRelu: return x < 0 ? a.get_float("alpha", 0.01) * x : x;
    case OpType::Elu: return x < 0 ? a.get_float("alpha", 1.0) * std::expm1(x) : x;
    case OpType::Selu: {
      double alpha = a.get_float("alpha", 1.67326319217681884765625);
      double gamma = a.get_float("gamma", 1.05070102214813232421875);
      return x > 0 ? gamma * x : gamma * alpha * std::expm1(x);
    }
    case OpType::HardSigmoid: {
      double y = a.get_float("alpha", 0.2) * x + a.get_float("beta", 0.5);
      if (std::isnan(y)) return y;
      return std::min(1.0, std::max(0.0, y));
    }
    case OpType::HardSwish: {
      // ONNX defines HardSwish as x * HardSigmoid(x, alpha=1/6 as a float attribute)
      double y = x * (double)(1.0f / 6.0f) + 0.5;
      if (std::isnan(y)) return y;
      return x * std::min(1.0, std::max(0.0, y));
    }
    case OpType::Floor: return std::floor(x);
    case OpType::Ceil: return std::ceil(x);
    case OpType::Round: return std::nearbyint(x);  // default rounding mode: half to even
    case OpType::Sign: return std::isnan(x) ? x : (x > 0 ? 1.0 : x < 0 ? -1.0 : 0.0);
    default: fail(ErrorKind::Internal, "[nn] not an activation");
  }
}

void ref_activation(const KernelCtx& ctx) {
  const Tensor& x = ctx.input(0);
  Tensor& y = ctx.output(0);
  int64_t n = y.numel();
  dispatch_dtype(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.ptr<T>();
    T* py = y.ptr<T>();
    if constexpr (is_float_v<T>) {
      using C = compute_t<T>;
      // Inputs round-trip exactly through double, so rounding once gives the true result
      // for the piecewise-linear ones; the attribute scalars are taken in the input's type
      // as numpy does (alpha * x with alpha cast to float32).
      if (ctx.node.op == OpType::LeakyRelu) {
        C alpha = (C)ctx.node.attrs.get_float("alpha", 0.01);
        for (int64_t i = 0; i < n; i++) {
          C v = load(px, i);
          store(py, i, v < 0 ? alpha * v : v);
        }
        return;
      }
      for (int64_t i = 0; i < n; i++) store(py, i, (C)activation_d(ctx.node, (double)load(px, i)));
    } else if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
      for (int64_t i = 0; i < n; i++) py[i] = (T)(px[i] > 0 ? 1 : px[i] < 0 ? -1 : 0);
    } else {
      fail(ErrorKind::Internal, "[", op_name(ctx.node.op), "] bool input");
    }
  });
}

// ---- PRelu, Mod -----------------------------------------------------------------------------


std::vector<TensorType> infer_prelu(const InferCtx& ctx) {
  DType t = ctx.in[0].dtype;
  if (!is_float_dtype(t) && t != DType::I32 && t != DType::I64 && t != DType::U8 &&
      t != DType::I8 && t != DType::I16)
    ctx.fail("input type ", dtype_name(t), " is not supported");
  if (ctx.in[1].dtype != t)
    ctx.fail("slope is ", dtype_name(ctx.in[1].dtype), ", X is ", dtype_name(t));
  if (!broadcasts_onto(ctx.in[1].shape, ctx.in[0].shape))
    ctx.fail("slope ", shape_str(ctx.in[1].shape), " does not broadcast to X ",
             shape_str(ctx.in[0].shape));
  return one(t, ctx.in[0].shape);
}

void ref_prelu(const KernelCtx& ctx) {
  const Tensor& x = ctx.input(0);
  const Tensor& s = ctx.input(1);
  Tensor& y = ctx.output(0);
  dispatch_dtype(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_same_v<T, bool>) {
      fail(ErrorKind::Internal, "[PRelu] bool input");
    } else {
      const T* px = x.ptr<T>();
      const T* ps = s.ptr<T>();
      T* py = y.ptr<T>();
      int64_t i = 0;
      for (BroadcastIter it(y.shape(), {broadcast_strides(s.shape(), y.shape())}); !it.done();
           it.next(), i++) {
        compute_t<T> v = load(px, i);
        if constexpr (is_float_v<T>) {
          store(py, i, v < 0 ? (compute_t<T>)(load(ps, it.off[0]) * v) : v);
        } else {
          // wrapping multiply, like numpy
          using U = std::make_unsigned_t<T>;
          py[i] = v < 0 ? (T)(U)((uint64_t)(int64_t)ps[it.off[0]] * (uint64_t)(int64_t)v) : v;
        }
      }
    }
  });
}

std::vector<TensorType> infer_mod(const InferCtx& ctx) {
  DType t = ctx.in[0].dtype;
  bool fl = is_float_dtype(t);
  if (!fl && !is_int_dtype(t)) ctx.fail("input type ", dtype_name(t), " is not supported");
  if (ctx.in[1].dtype != t)
    ctx.fail("B is ", dtype_name(ctx.in[1].dtype), ", A is ", dtype_name(t));
  return one(t, broadcast_shapes(ctx, ctx.in[0].shape, ctx.in[1].shape));
}

// Integer remainder: fmod 1 truncates (C's %), fmod 0 takes the divisor's sign (Python's %).
template <class T>
T int_mod(T a, T b, bool fmod) {
  if constexpr (std::is_signed_v<T>) {
    if (b == -1) return 0;  // INT_MIN % -1 overflows in C
  }
  T r = (T)(a % b);
  if (!fmod && r != 0 && ((r < 0) != (b < 0))) r = (T)(r + b);
  return r;
}

// fmod 1: C's fmod; fmod 0: numpy's np.mod (the divisor's sign; a zero takes it too).
double float_mod(double a, double b, bool fmod) {
  double r = std::fmod(a, b);
  if (fmod || std::isnan(r)) return r;
  if (r != 0) return (r < 0) != (b < 0) ? r + b : r;
  return std::copysign(0.0, b);
}

void ref_mod(const KernelCtx& ctx) {
  const Tensor& a = ctx.input(0);
  const Tensor& b = ctx.input(1);
  Tensor& y = ctx.output(0);
  bool fmod = ctx.node.attrs.get_int("fmod", 0) != 0;
  const Shape& s = y.shape();
  dispatch_dtype(a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_same_v<T, bool>) {
      fail(ErrorKind::Internal, "[Mod] bool input");
    } else {
      const T* pa = a.ptr<T>();
      const T* pb = b.ptr<T>();
      T* py = y.ptr<T>();
      int64_t i = 0;
      for (BroadcastIter it(s, {broadcast_strides(a.shape(), s), broadcast_strides(b.shape(), s)});
           !it.done(); it.next(), i++) {
        if constexpr (is_float_v<T>) {
          store(py, i, (compute_t<T>)float_mod((double)load(pa, it.off[0]),
                                               (double)load(pb, it.off[1]), fmod));
        } else {
          T d = pb[it.off[1]];
          EMBER_CHECK(d != 0, Input, "[Mod] node '", ctx.node.name, "': integer division by zero");
          py[i] = int_mod<T>(pa[it.off[0]], d, fmod);
        }
      }
    }
  });
}

// ---- global pooling -------------------------------------------------------------------------

std::vector<TensorType> infer_global_pool(const InferCtx& ctx) {
  DType t = ctx.in[0].dtype;
  if (!is_float_dtype(t)) ctx.fail("input type ", dtype_name(t), " is not supported");
  const Shape& x = ctx.in[0].shape;
  if (x.size() < 2) ctx.fail("X must have rank >= 2 ([N, C, ...]), got ", shape_str(x));
  Shape out = x;
  for (size_t i = 2; i < out.size(); i++) out[i] = 1;
  return one(t, out);
}

void ref_global_pool(const KernelCtx& ctx) {
  const Tensor& x = ctx.input(0);
  Tensor& y = ctx.output(0);
  int64_t rows = y.numel();
  int64_t cols = rows ? x.numel() / rows : 0;
  bool is_max = ctx.node.op == OpType::GlobalMaxPool;
  dispatch_dtype(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    if constexpr (is_float_v<T>) {
      const T* px = x.ptr<T>();
      T* py = y.ptr<T>();
      for (int64_t r = 0; r < rows; r++) {
        double acc = is_max ? -INFINITY : 0.0;
        for (int64_t c = 0; c < cols; c++) {
          double v = (double)load(px, r * cols + c);
          if (!is_max) acc += v;
          else if (v > acc || std::isnan(v)) acc = v;
          if (is_max && std::isnan(acc)) break;
        }
        if (!is_max) acc = cols ? acc / (double)cols : NAN;
        store(py, r, (compute_t<T>)acc);
      }
    } else {
      fail(ErrorKind::Internal, "[", op_name(ctx.node.op), "] unsupported dtype");
    }
  });
}

// ---- BatchNormalization, InstanceNormalization, GroupNormalization --------------------------

// Checks that input i is a float vector of n elements (a per-channel or per-group parameter).
void check_param(const InferCtx& ctx, int i, const char* what, int64_t n) {
  if (!is_float_dtype(ctx.in[i].dtype))
    ctx.fail(what, " type ", dtype_name(ctx.in[i].dtype), " is not supported");
  const Shape& s = ctx.in[i].shape;
  if (s.size() != 1 || s[0] != n)
    ctx.fail(what, " has shape ", shape_str(s), ", expected [", n, "]");
}

void check_nc(const InferCtx& ctx) {
  DType t = ctx.in[0].dtype;
  if (!is_float_dtype(t)) ctx.fail("input type ", dtype_name(t), " is not supported");
  if (ctx.in[0].shape.size() < 2)
    ctx.fail("X must have rank >= 2 ([N, C, ...]), got ", shape_str(ctx.in[0].shape));
}

std::vector<TensorType> infer_batch_norm(const InferCtx& ctx) {
  check_nc(ctx);
  // A property of the model, whatever the inputs: always a ModelError.
  const Node& n = ctx.node;
  if (n.attrs.get_int("training_mode", 0) != 0)
    fail(ErrorKind::Model, "[BatchNormalization] node '", n.name,
         "': training_mode=1 is not supported; ember runs inference only");
  for (size_t i = 1; i < n.outputs.size(); i++)
    if (n.outputs[i] >= 0)
      fail(ErrorKind::Model, "[BatchNormalization] node '", n.name,
           "': running mean/var outputs exist in training mode only");
  int64_t c = ctx.in[0].shape[1];
  const char* names[] = {"scale", "B", "input_mean", "input_var"};
  for (int i = 1; i < 5; i++) check_param(ctx, i, names[i - 1], c);
  return one(ctx.in[0].dtype, ctx.in[0].shape);
}

double param(const Tensor& t, int64_t i) {
  double v = 0;
  dispatch_dtype(t.dtype(), [&](auto tag) {
    using T = decltype(tag);
    if constexpr (is_float_v<T>) v = (double)load(t.ptr<T>(), i);
  });
  return v;
}

// y = (x - mean[c]) * mul[c] + add[c] over an [N, C, inner] view.
template <class T>
void affine_nc(const Tensor& x, Tensor& y, const std::vector<double>& mean,
               const std::vector<double>& mul, const std::vector<double>& add, bool per_nc) {
  int64_t n = x.dim(0), c = x.dim(1);
  int64_t inner = n * c != 0 ? x.numel() / (n * c) : 0;
  const T* px = x.ptr<T>();
  T* py = y.ptr<T>();
  for (int64_t b = 0; b < n; b++) {
    for (int64_t ch = 0; ch < c; ch++) {
      int64_t k = per_nc ? b * c + ch : ch;
      int64_t base = (b * c + ch) * inner;
      for (int64_t j = 0; j < inner; j++) {
        double v = ((double)load(px, base + j) - mean[k]) * mul[k] + add[ch];
        store(py, base + j, (compute_t<T>)v);
      }
    }
  }
}

void ref_batch_norm(const KernelCtx& ctx) {
  const Tensor& x = ctx.input(0);
  EMBER_CHECK(ctx.node.attrs.get_int("training_mode", 0) == 0, Model,
              "[BatchNormalization] training_mode=1 is not supported");
  double eps = ctx.node.attrs.get_float("epsilon", 1e-5);
  int64_t c = x.dim(1);
  std::vector<double> mean(c), mul(c), add(c);
  for (int64_t i = 0; i < c; i++) {
    mean[i] = param(ctx.input(3), i);
    mul[i] = param(ctx.input(1), i) / std::sqrt(param(ctx.input(4), i) + eps);
    add[i] = param(ctx.input(2), i);
  }
  dispatch_dtype(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    if constexpr (is_float_v<T>) affine_nc<T>(x, ctx.output(0), mean, mul, add, false);
  });
}

std::vector<TensorType> infer_instance_norm(const InferCtx& ctx) {
  check_nc(ctx);
  int64_t c = ctx.in[0].shape[1];
  check_param(ctx, 1, "scale", c);
  check_param(ctx, 2, "B", c);
  return one(ctx.in[0].dtype, ctx.in[0].shape);
}

// Mean and 1/sqrt(var + eps) of `len` contiguous elements from `p`.
template <class T>
std::pair<double, double> moments(const T* p, int64_t len, double eps) {
  double mean = 0, var = 0;
  for (int64_t j = 0; j < len; j++) mean += (double)load(p, j);
  mean /= (double)len;
  for (int64_t j = 0; j < len; j++) {
    double d = (double)load(p, j) - mean;
    var += d * d;
  }
  var /= (double)len;
  return {mean, 1.0 / std::sqrt(var + eps)};
}

void ref_instance_norm(const KernelCtx& ctx) {
  const Tensor& x = ctx.input(0);
  double eps = ctx.node.attrs.get_float("epsilon", 1e-5);
  int64_t n = x.dim(0), c = x.dim(1);
  int64_t inner = n * c != 0 ? x.numel() / (n * c) : 0;
  std::vector<double> mean(n * c), mul(n * c), add(c);
  for (int64_t i = 0; i < c; i++) add[i] = param(ctx.input(2), i);
  dispatch_dtype(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    if constexpr (is_float_v<T>) {
      for (int64_t k = 0; k < n * c; k++) {
        auto [m, inv] = moments(x.ptr<T>() + k * inner, inner, eps);
        mean[k] = m;
        mul[k] = inv * param(ctx.input(1), k % c);
      }
      affine_nc<T>(x, ctx.output(0), mean, mul, add, true);
    }
  });
}

// ONNX 21 form: scale and bias per channel. `legacy_group_affine` (the importer sets it for
// opset 18) reads them per group, as GroupNormalization-18 defined them.
std::vector<TensorType> infer_group_norm(const InferCtx& ctx) {
  check_nc(ctx);
  int64_t c = ctx.in[0].shape[1];
  int64_t g = ctx.node.attrs.get_int("num_groups", 0);
  if (g <= 0 || c % g != 0) ctx.fail("num_groups ", g, " does not divide the ", c, " channels");
  int64_t st = ctx.node.attrs.get_int("stash_type", 1);
  if (st != 1) ctx.fail("stash_type ", st, " is not supported (1: float)");
  int64_t np = ctx.node.attrs.get_int("legacy_group_affine", 0) ? g : c;
  check_param(ctx, 1, "scale", np);
  check_param(ctx, 2, "bias", np);
  return one(ctx.in[0].dtype, ctx.in[0].shape);
}

void ref_group_norm(const KernelCtx& ctx) {
  const Tensor& x = ctx.input(0);
  double eps = ctx.node.attrs.get_float("epsilon", 1e-5);
  bool legacy = ctx.node.attrs.get_int("legacy_group_affine", 0) != 0;
  int64_t g = ctx.node.attrs.get_int("num_groups", 1);
  if (x.numel() == 0) return;  // C = 0 admits any num_groups: loop over nothing
  int64_t n = x.dim(0), c = x.dim(1), cpg = c / g;
  int64_t inner = n * c != 0 ? x.numel() / (n * c) : 0;
  std::vector<double> mean(n * c), mul(n * c), add(c);
  for (int64_t i = 0; i < c; i++) add[i] = param(ctx.input(2), legacy ? i / cpg : i);
  dispatch_dtype(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    if constexpr (is_float_v<T>) {
      for (int64_t b = 0; b < n; b++) {
        for (int64_t gi = 0; gi < g; gi++) {
          auto [m, inv] = moments(x.ptr<T>() + (b * c + gi * cpg) * inner, cpg * inner, eps);
          for (int64_t j = 0; j < cpg; j++) {
            int64_t ch = gi * cpg + j;
            mean[b * c + ch] = m;
            mul[b * c + ch] = inv * param(ctx.input(1), legacy ? gi : ch);
          }
        }
      }
      affine_nc<T>(x, ctx.output(0), mean, mul, add, true);
    }
  });
}

}  // namespace

static const OpDef kOps[] = {
    {OpType::LeakyRelu, "LeakyRelu", 1, 1, 1, 1, 0, {{"alpha", AttrKind::Float}},
     infer_activation, ref_activation},
    {OpType::PRelu, "PRelu", 2, 2, 1, 1, 0, {}, infer_prelu, ref_prelu},
    {OpType::Elu, "Elu", 1, 1, 1, 1, 0, {{"alpha", AttrKind::Float}}, infer_activation,
     ref_activation},
    {OpType::Selu, "Selu", 1, 1, 1, 1, 0, {{"alpha", AttrKind::Float}, {"gamma", AttrKind::Float}},
     infer_activation, ref_activation},
    {OpType::HardSigmoid, "HardSigmoid", 1, 1, 1, 1, 0,
     {{"alpha", AttrKind::Float}, {"beta", AttrKind::Float}}, infer_activation, ref_activation},
    {OpType::HardSwish, "HardSwish", 1, 1, 1, 1, 0, {}, infer_activation, ref_activation},
    {OpType::Floor, "Floor", 1, 1, 1, 1, 0, {}, infer_activation, ref_activation},
    {OpType::Ceil, "Ceil", 1, 1, 1, 1, 0, {}, infer_activation, ref_activation},
    {OpType::Round, "Round", 1, 1, 1, 1, 0, {}, infer_activation, ref_activation},
    {OpType::Sign, "Sign", 1, 1, 1, 1, 0, {}, infer_activation, ref_activation},
    {OpType::Mod, "Mod", 2, 2, 1, 1, 0, {{"fmod", AttrKind::Bool}}, infer_mod, ref_mod},
    {OpType::GlobalAveragePool, "GlobalAveragePool", 1, 1, 1, 1, 0, {}, infer_global_pool,
     ref_global_pool},
    {OpType::GlobalMaxPool, "GlobalMaxPool", 1, 1, 1, 1, 0, {}, infer_global_pool,
     ref_global_pool},
    {OpType::BatchNormalization, "BatchNormalization", 5, 5, 1, 3, 0,
     {{"epsilon", AttrKind::Float}, {"training_mode", AttrKind::Bool}}, infer_batch_norm,
     ref_batch_norm},
    {OpType::InstanceNormalization, "InstanceNormalization", 3, 3, 1, 1, 0,
     {{"epsilon", AttrKind::Float}}, infer_instance_norm, ref_instance_norm},
    {OpType::GroupNormalization, "GroupNormalization", 3, 3, 1, 1, 0,
     {{"num_groups", AttrKind::Int, true}, {"epsilon", AttrKind::Float},
      {"stash_type", AttrKind::Int}, {"legacy_group_affine", AttrKind::Bool}},
     infer_group_norm, ref_group_norm},
};

std::span<const OpDef> op_defs_nn() { return kOps; }

}  // namespace ember
