// CUDA adapters of the elementwise family: binary ops with broadcasting, unary maths and
// activations, Dropout, Clip, Where, Cast / CastLike, SwiGLU, ReduceSum / Mean /
// Max, Softmax / LogSoftmax, LayerNormalization, RMSNormalization. Each supports() accepts
// exactly what its kernel computes like the reference (float32, plus the int64 and bool cases
// noted); everything else runs on the CPU. Kernels: cuda/kernels/elementwise.cu.
#include <string>

#include "cuda/kernels/elementwise.h"
#include "cuda/src/elementwise_plan.h"
#include "cuda/src/ops.h"
#include "ops/op_util.h"

namespace ember::cuda {
namespace {

void launched(const KernelCtx& ctx) {
  const std::string what = str_cat("[", op_name(ctx.node.op), "] node '", ctx.node.name, "'");
  check_launch(what.c_str());
}

bool all_f32(const InferCtx& ctx, int n) {
  for (int i = 0; i < n; i++)
    if (!ctx.has(i) || ctx.in[i].dtype != DType::F32) return false;
  return true;
}

// Whether output `i` of the node is wanted (present and not marked unused).
bool output_used(const Node& node, int i) {
  return i < (int)node.outputs.size() && node.outputs[i] >= 0;
}

// ---- binary ------------------------------------------------------------------------------

bool binary_of(OpType op, EwBinary* out) {
  switch (op) {
    case OpType::Add: *out = EwBinary::Add; return true;
    case OpType::Sub: *out = EwBinary::Sub; return true;
    case OpType::Mul: *out = EwBinary::Mul; return true;
    case OpType::Div: *out = EwBinary::Div; return true;
    case OpType::Pow: *out = EwBinary::Pow; return true;
    case OpType::Min: *out = EwBinary::Min; return true;
    case OpType::Max: *out = EwBinary::Max; return true;
    case OpType::Equal: *out = EwBinary::Equal; return true;
    case OpType::Less: *out = EwBinary::Less; return true;
    case OpType::Greater: *out = EwBinary::Greater; return true;
    case OpType::LessOrEqual: *out = EwBinary::LessOrEqual; return true;
    case OpType::GreaterOrEqual: *out = EwBinary::GreaterOrEqual; return true;
    case OpType::And: *out = EwBinary::And; return true;
    case OpType::Or: *out = EwBinary::Or; return true;
    case OpType::Xor: *out = EwBinary::Xor; return true;
    default: return false;
  }
}

// Which kernel runs op at dtype t (both inputs t).
bool binary_dtype_ok(EwBinary op, DType t) {
  switch (t) {
    case DType::F32: return op < EwBinary::And;
    // Integer Div / Pow / Min / Max stay on the CPU (Div's zero check, Pow's saturation).
    case DType::I64:
      return op == EwBinary::Add || op == EwBinary::Sub || op == EwBinary::Mul ||
             (ew_binary_is_compare(op) && op < EwBinary::And);
    case DType::Bool: return op >= EwBinary::And;
    default: return false;
  }
}

}  // namespace

bool binary_cuda_supports(const InferCtx& ctx, const DeviceOptions&) {
  EwBinary op;
  if (ctx.num_inputs() != 2 || !ctx.has(0) || !ctx.has(1) || !binary_of(ctx.node.op, &op))
    return false;
  const DType t = ctx.in[0].dtype;
  if (ctx.in[1].dtype != t || !binary_dtype_ok(op, t)) return false;
  Shape out;
  EwGeom g;
  return ew_broadcast_shape(ctx.in[0].shape, ctx.in[1].shape, &out) &&
         ew_broadcast_plan(out, {ctx.in[0].shape, ctx.in[1].shape}, &g);
}

void binary_cuda(const KernelCtx& ctx) {
  EwBinary op{};
  binary_of(ctx.node.op, &op);
  const Tensor &a = ctx.input(0), &b = ctx.input(1);
  Tensor& y = ctx.output(0);
  EwGeom g;
  if (!ew_broadcast_plan(y.shape(), {a.shape(), b.shape()}, &g))
    fail(ErrorKind::Internal, "[", op_name(ctx.node.op), "] no broadcast plan for ",
         shape_str(a.shape()), " and ", shape_str(b.shape()));
  if (g.numel == 0) return;
  switch (a.dtype()) {
    case DType::F32:
      elementwise_binary_f32(op, a.ptr<float>(), b.ptr<float>(), y.data(), g, stream(ctx));
      break;
    case DType::I64:
      elementwise_binary_i64(op, a.ptr<int64_t>(), b.ptr<int64_t>(), y.data(), g, stream(ctx));
      break;
    default:
      elementwise_binary_bool(op, a.ptr<bool>(), b.ptr<bool>(), y.ptr<bool>(), g, stream(ctx));
      break;
  }
  launched(ctx);
}

// ---- unary -------------------------------------------------------------------------------

namespace {

bool unary_of(const Node& n, EwUnary* out) {
  switch (n.op) {
    case OpType::Sqrt: *out = EwUnary::Sqrt; return true;
    case OpType::Exp: *out = EwUnary::Exp; return true;
    case OpType::Log: *out = EwUnary::Log; return true;
    case OpType::Neg: *out = EwUnary::Neg; return true;
    case OpType::Abs: *out = EwUnary::Abs; return true;
    case OpType::Reciprocal: *out = EwUnary::Reciprocal; return true;
    case OpType::Erf: *out = EwUnary::Erf; return true;
    case OpType::Tanh: *out = EwUnary::Tanh; return true;
    case OpType::Sigmoid: *out = EwUnary::Sigmoid; return true;
    case OpType::Relu: *out = EwUnary::Relu; return true;
    case OpType::Softplus: *out = EwUnary::Softplus; return true;
    case OpType::Sin: *out = EwUnary::Sin; return true;
    case OpType::Cos: *out = EwUnary::Cos; return true;
    case OpType::LeakyRelu: *out = EwUnary::LeakyRelu; return true;
    case OpType::HardSigmoid: *out = EwUnary::HardSigmoid; return true;
    case OpType::HardSwish: *out = EwUnary::HardSwish; return true;
    case OpType::Elu: *out = EwUnary::Elu; return true;
    case OpType::Gelu: {
      const std::string a = n.attrs.get_string("approximate", "none");
      if (a != "none" && a != "tanh") return false;
      *out = a == "tanh" ? EwUnary::GeluTanh : EwUnary::Gelu;
      return true;
    }
    default: return false;
  }
}

}  // namespace

bool unary_cuda_supports(const InferCtx& ctx, const DeviceOptions&) {
  EwUnary op;
  return ctx.num_inputs() == 1 && all_f32(ctx, 1) && unary_of(ctx.node, &op);
}

void unary_cuda(const KernelCtx& ctx) {
  EwUnary op;
  unary_of(ctx.node, &op);
  const Attrs& at = ctx.node.attrs;
  // Attribute scalars in float, as the reference takes them in the input's type.
  float alpha = 0.f, beta = 0.f;
  if (op == EwUnary::LeakyRelu) alpha = (float)at.get_float("alpha", 0.01);
  if (op == EwUnary::Elu) alpha = (float)at.get_float("alpha", 1.0);
  if (op == EwUnary::HardSigmoid) {
    alpha = (float)at.get_float("alpha", 0.2);
    beta = (float)at.get_float("beta", 0.5);
  }
  const Tensor& x = ctx.input(0);
  if (x.numel() == 0) return;
  elementwise_unary_f32(op, x.ptr<float>(), ctx.output(0).ptr<float>(), x.numel(), alpha, beta,
                        stream(ctx));
  launched(ctx);
}

// ---- Dropout (Identity is the movement family's copy) -------------------------------------

bool dropout_cuda_supports(const InferCtx& ctx, const DeviceOptions&) {
  if (!ctx.has(0) || dtype_size(ctx.in[0].dtype) == 0) return false;
  // Inference only: no mask output, and training_mode (when given) a known false.
  if (output_used(ctx.node, 1)) return false;
  if (ctx.has(2)) {
    const Tensor* tm = ctx.value(2);
    if (!tm || tm->dtype() != DType::Bool || tm->numel() != 1 || tm->ptr<bool>()[0]) return false;
  }
  return true;
}

void dropout_cuda(const KernelCtx& ctx) {
  Tensor& y = ctx.output(0);
  if (y.nbytes() == 0) return;
  elementwise_copy(y.data(), ctx.input(0).data(), (int64_t)y.nbytes(), stream(ctx));
  launched(ctx);
}

// ---- Clip --------------------------------------------------------------------------------

bool clip_cuda_supports(const InferCtx& ctx, const DeviceOptions&) {
  if (!all_f32(ctx, 1)) return false;
  // min / max must be scalars: the kernel reads one value of each on the device.
  for (int i = 1; i < ctx.num_inputs(); i++)
    if (ctx.has(i) && (ctx.in[i].dtype != DType::F32 || shape_numel(ctx.in[i].shape) != 1))
      return false;
  return true;
}

void clip_cuda(const KernelCtx& ctx) {
  const Tensor& x = ctx.input(0);
  if (x.numel() == 0) return;
  const float* lo = ctx.has_input(1) ? ctx.input(1).ptr<float>() : nullptr;
  const float* hi = ctx.has_input(2) ? ctx.input(2).ptr<float>() : nullptr;
  elementwise_clip_f32(x.ptr<float>(), lo, hi, ctx.output(0).ptr<float>(), x.numel(),
                       stream(ctx));
  launched(ctx);
}

// ---- Where -------------------------------------------------------------------------------

bool where_cuda_supports(const InferCtx& ctx, const DeviceOptions&) {
  if (ctx.num_inputs() != 3 || !ctx.has(0) || !ctx.has(1) || !ctx.has(2)) return false;
  if (ctx.in[0].dtype != DType::Bool || ctx.in[1].dtype != ctx.in[2].dtype) return false;
  const size_t es = dtype_size(ctx.in[1].dtype);
  if (es != 1 && es != 2 && es != 4 && es != 8) return false;
  Shape s, out;
  EwGeom g;
  return ew_broadcast_shape(ctx.in[0].shape, ctx.in[1].shape, &s) &&
         ew_broadcast_shape(s, ctx.in[2].shape, &out) &&
         ew_broadcast_plan(out, {ctx.in[0].shape, ctx.in[1].shape, ctx.in[2].shape}, &g);
}

void where_cuda(const KernelCtx& ctx) {
  const Tensor &c = ctx.input(0), &x = ctx.input(1), &y = ctx.input(2);
  Tensor& out = ctx.output(0);
  EwGeom g;
  if (!ew_broadcast_plan(out.shape(), {c.shape(), x.shape(), y.shape()}, &g))
    fail(ErrorKind::Internal, "[Where] no broadcast plan for ", shape_str(out.shape()));
  if (g.numel == 0) return;
  elementwise_where(c.ptr<bool>(), x.data(), y.data(), out.data(), (int)dtype_size(x.dtype()), g,
                    stream(ctx));
  launched(ctx);
}

// ---- Cast, CastLike ----------------------------------------------------------------------

namespace {

bool ew_type_of(DType t, EwType* out) {
  switch (t) {
    case DType::F32: *out = EwType::F32; return true;
    case DType::F16: *out = EwType::F16; return true;
    case DType::BF16: *out = EwType::BF16; return true;
    case DType::I64: *out = EwType::I64; return true;
    case DType::I32: *out = EwType::I32; return true;
    case DType::Bool: *out = EwType::Bool; return true;
    default: return false;
  }
}

// The target of Cast's `to` (TensorProto.DataType codes) among the kernel's types.
DType cast_target(const InferCtx& ctx) {
  if (ctx.node.op == OpType::CastLike) return ctx.has(1) ? ctx.in[1].dtype : DType::Count;
  switch (ctx.node.attrs.get_int("to", 0)) {
    case 1: return DType::F32;
    case 10: return DType::F16;
    case 16: return DType::BF16;
    case 7: return DType::I64;
    case 6: return DType::I32;
    case 9: return DType::Bool;
    default: return DType::Count;
  }
}

}  // namespace

bool cast_cuda_supports(const InferCtx& ctx, const DeviceOptions&) {
  EwType s, d;
  return ctx.has(0) && ew_type_of(ctx.in[0].dtype, &s) && ew_type_of(cast_target(ctx), &d);
}

void cast_cuda(const KernelCtx& ctx) {
  const Tensor& x = ctx.input(0);
  Tensor& y = ctx.output(0);
  if (y.numel() == 0) return;
  if (x.dtype() == y.dtype()) {
    elementwise_copy(y.data(), x.data(), (int64_t)y.nbytes(), stream(ctx));
  } else {
    EwType s = EwType::F32, d = EwType::F32;
    if (!ew_type_of(x.dtype(), &s) || !ew_type_of(y.dtype(), &d))
      fail(ErrorKind::Internal, "[", op_name(ctx.node.op), "] no kernel from ",
           dtype_name(x.dtype()), " to ", dtype_name(y.dtype()));
    elementwise_cast(s, d, x.data(), y.data(), y.numel(), stream(ctx));
  }
  launched(ctx);
}

// ---- SwiGLU ------------------------------------------------------------------------------

bool swiglu_cuda_supports(const InferCtx& ctx, const DeviceOptions&) {
  return all_f32(ctx, 1) && !ctx.in[0].shape.empty() && ctx.in[0].shape.back() % 2 == 0;
}

void swiglu_cuda(const KernelCtx& ctx) {
  const Tensor& x = ctx.input(0);  // [..., 2F]
  const int64_t f = x.dim(-1) / 2, rows = f ? x.numel() / (2 * f) : 0;
  if (rows * f == 0) return;
  elementwise_swiglu_f32(x.ptr<float>(), ctx.output(0).ptr<float>(), rows, f, stream(ctx));
  launched(ctx);
}

// ---- reductions --------------------------------------------------------------------------

bool reduce_cuda_supports(const InferCtx& ctx, const DeviceOptions&) {
  if (!all_f32(ctx, 1)) return false;
  // The axes input must be known now: the kernel's plan is made from it on the host.
  const Tensor* axes = nullptr;
  if (ctx.has(1) && !(axes = ctx.value(1))) return false;
  ReduceAxes r = reduce_axes(ctx.node, (int)ctx.in[0].shape.size(), axes);
  if (!r.error.empty()) return false;  // the CPU reports it
  ReduceGeom g;
  return r.noop || ew_reduce_plan(ctx.in[0].shape, r.mask, &g);
}

void reduce_cuda(const KernelCtx& ctx) {
  const Tensor& x = ctx.input(0);
  Tensor& y = ctx.output(0);
  const Tensor* axes = host_input(ctx, 1);
  if (ctx.has_input(1) && !axes)
    fail(ErrorKind::Internal, "[", op_name(ctx.node.op), "] axes are not known on the host");
  ReduceAxes r = reduce_axes(ctx.node, x.rank(), axes);
  if (!r.error.empty())
    fail(ErrorKind::Model, "[", op_name(ctx.node.op), "] node '", ctx.node.name, "': ", r.error);
  if (r.noop) {
    if (x.nbytes() > 0) {
      elementwise_copy(y.data(), x.data(), (int64_t)x.nbytes(), stream(ctx));
      launched(ctx);
    }
    return;
  }
  ReduceGeom g;
  if (!ew_reduce_plan(x.shape(), r.mask, &g))
    fail(ErrorKind::Internal, "[", op_name(ctx.node.op), "] no reduction plan for ",
         shape_str(x.shape()));
  if (g.n_out == 0) return;
  const EwReduce op = ctx.node.op == OpType::ReduceSum    ? EwReduce::Sum
                      : ctx.node.op == OpType::ReduceMean ? EwReduce::Mean
                                                          : EwReduce::Max;
  elementwise_reduce_f32(op, x.ptr<float>(), y.ptr<float>(), g, stream(ctx));
  launched(ctx);
}

// ---- Softmax, LogSoftmax -----------------------------------------------------------------

namespace {

// The normalised axis (the reference's rules), or false when out of range.
bool softmax_axis(const Node& node, int rank, int* axis, bool* legacy) {
  *legacy = node.attrs.get_int("legacy_axis_2d", 0) != 0;
  int64_t a = node.attrs.get_int("axis", *legacy ? 1 : -1);
  if (*legacy ? (a < -rank || a > rank) : (a < -rank || a >= rank)) return false;
  *axis = (int)(a < 0 ? a + rank : a);
  return true;
}

}  // namespace

bool softmax_cuda_supports(const InferCtx& ctx, const DeviceOptions&) {
  int axis;
  bool legacy;
  return all_f32(ctx, 1) && softmax_axis(ctx.node, (int)ctx.in[0].shape.size(), &axis, &legacy);
}

void softmax_cuda(const KernelCtx& ctx) {
  const Tensor& x = ctx.input(0);
  int axis;
  bool legacy;
  if (!softmax_axis(ctx.node, x.rank(), &axis, &legacy))
    fail(ErrorKind::Model, "[", op_name(ctx.node.op), "] axis out of range for rank ", x.rank());
  const EwSoftmaxDims d = ew_softmax_dims(x.shape(), axis, legacy);
  if (x.numel() == 0) return;
  elementwise_softmax_f32(x.ptr<float>(), ctx.output(0).ptr<float>(), d.outer, d.n, d.inner,
                          ctx.node.op == OpType::LogSoftmax, stream(ctx));
  launched(ctx);
}

// ---- LayerNormalization, RMSNormalization ------------------------------------------------

namespace {

// Rows and columns of x at axis, and the modes of its parameters; false if unsupported.
bool norm_layout(const Shape& x, const Node& node, const Shape& scale, const Shape* bias,
                 int* axis, int* scale_mode, int* bias_mode) {
  const int rank = (int)x.size();
  const int64_t a = node.attrs.get_int("axis", -1);
  if (rank == 0 || a < -rank || a >= rank) return false;
  *axis = (int)(a < 0 ? a + rank : a);
  *scale_mode = ew_norm_param_mode(scale, x, *axis);
  *bias_mode = bias ? ew_norm_param_mode(*bias, x, *axis) : 0;
  return *scale_mode >= 0 && *bias_mode >= 0;
}

void rows_cols(const Shape& x, int axis, int64_t* rows, int64_t* cols) {
  *rows = shape_prod(x, 0, axis);
  *cols = shape_prod(x, axis, (int)x.size());
}

}  // namespace

bool layer_norm_cuda_supports(const InferCtx& ctx, const DeviceOptions&) {
  // Only Y: the Mean / InvStdDev outputs stay on the CPU.
  if (output_used(ctx.node, 1) || output_used(ctx.node, 2)) return false;
  if (!all_f32(ctx, 2) || (ctx.has(2) && ctx.in[2].dtype != DType::F32)) return false;
  int axis, sm, bm;
  return norm_layout(ctx.in[0].shape, ctx.node, ctx.in[1].shape,
                     ctx.has(2) ? &ctx.in[2].shape : nullptr, &axis, &sm, &bm);
}

void layer_norm_cuda(const KernelCtx& ctx) {
  const Tensor& x = ctx.input(0);
  const Tensor* bias = ctx.has_input(2) ? &ctx.input(2) : nullptr;
  int axis, sm, bm;
  if (!norm_layout(x.shape(), ctx.node, ctx.input(1).shape(), bias ? &bias->shape() : nullptr,
                   &axis, &sm, &bm))
    fail(ErrorKind::Internal, "[LayerNormalization] unsupported layout");
  int64_t rows, cols;
  rows_cols(x.shape(), axis, &rows, &cols);
  if (rows * cols == 0) return;
  elementwise_layer_norm_f32(x.ptr<float>(), ctx.input(1).ptr<float>(),
                             bias ? bias->ptr<float>() : nullptr, ctx.output(0).ptr<float>(),
                             rows, cols, sm == 0, bm == 0,
                             ctx.node.attrs.get_float("epsilon", 1e-5), stream(ctx));
  launched(ctx);
}

bool rms_norm_cuda_supports(const InferCtx& ctx, const DeviceOptions&) {
  if (!all_f32(ctx, 2)) return false;
  int axis, sm, bm;
  return norm_layout(ctx.in[0].shape, ctx.node, ctx.in[1].shape, nullptr, &axis, &sm, &bm);
}

void rms_norm_cuda(const KernelCtx& ctx) {
  const Tensor& x = ctx.input(0);
  int axis, sm, bm;
  if (!norm_layout(x.shape(), ctx.node, ctx.input(1).shape(), nullptr, &axis, &sm, &bm))
    fail(ErrorKind::Internal, "[RMSNormalization] unsupported layout");
  int64_t rows, cols;
  rows_cols(x.shape(), axis, &rows, &cols);
  if (rows * cols == 0) return;
  elementwise_rms_norm_f32(x.ptr<float>(), ctx.input(1).ptr<float>(), ctx.output(0).ptr<float>(),
                           rows, cols, sm == 0, ctx.node.attrs.get_float("epsilon", 1e-5),
                           stream(ctx));
  launched(ctx);
}

}  // namespace ember::cuda
