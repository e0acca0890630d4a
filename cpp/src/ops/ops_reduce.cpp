// Reductions: ReduceMean, ReduceSum, ReduceMax (newest ONNX form: axes is an optional int64
// input; the opset-11 `axes` attribute is accepted too). Float references accumulate in double,
// integers in int64 wrapped to the element type like numpy. Max over an empty set yields -inf
// (or the type's lowest value), Sum yields 0, Mean NaN.
#include <limits>

#include "ops/op_util.h"

namespace ember {

ReduceAxes reduce_axes(const Node& node, int rank, const Tensor* axes_in) {
  ReduceAxes r;
  std::vector<int64_t> axes;
  bool have_attr = node.attrs.has("axes");
  if (axes_in) {
    if (have_attr) {
      r.error = "axes given both as input and attribute";
      return r;
    }
    if (axes_in->dtype() != DType::I64 || axes_in->rank() > 1) {
      r.error = str_cat("axes must be a 1-D int64 tensor, got ", dtype_name(axes_in->dtype()), " ",
                        shape_str(axes_in->shape()));
      return r;
    }
    axes = tensor_to_i64_vector(axes_in->contiguous());
  } else {
    axes = node.attrs.get_ints("axes");
  }
  if (axes.empty()) {
    r.noop = node.attrs.get_int("noop_with_empty_axes", 0) != 0;
    r.mask.assign(rank, !r.noop);
    return r;
  }
  r.mask.assign(rank, false);
  for (int64_t a : axes) {
    if (a < -rank || a >= rank) {
      r.error = str_cat("axis ", a, " out of range for rank ", rank);
      return r;
    }
    int d = (int)(a < 0 ? a + rank : a);
    if (r.mask[d]) {
      r.error = str_cat("axis ", a, " appears twice");
      return r;
    }
    r.mask[d] = true;
  }
  return r;
}

Shape reduced_shape(const Shape& s, const ReduceAxes& r, bool keepdims) {
  if (r.noop) return s;
  Shape out;
  for (size_t d = 0; d < s.size(); d++) {
    if (!r.mask[d]) out.push_back(s[d]);
    else if (keepdims) out.push_back(1);
  }
  return out;
}

static bool reduce_dtype_ok(OpType op, DType t) {
  switch (t) {
    case DType::F32: case DType::F16: case DType::BF16: case DType::F64:
    case DType::I32: case DType::I64:
      return true;
    case DType::I8: case DType::U8: case DType::Bool:
      return op == OpType::ReduceMax || op == OpType::ReduceMin;
    default:
      return false;
  }
}

std::vector<TensorType> infer_reduce(const InferCtx& ctx) {
  DType t = ctx.in[0].dtype;
  if (!reduce_dtype_ok(ctx.node.op, t)) ctx.fail("unsupported dtype ", dtype_name(t));
  const Tensor* axes = ctx.has(1) ? &ctx.require_value(1, "axes") : nullptr;
  const Shape& s = ctx.in[0].shape;
  ReduceAxes r = reduce_axes(ctx.node, (int)s.size(), axes);
  if (!r.error.empty()) ctx.fail(r.error);
  return one(t, reduced_shape(s, r, ctx.node.attrs.get_int("keepdims", 1) != 0));
}

namespace {

enum class Red { Sum, Mean, Max };

template <class T>
void reduce_ref_typed(Red op, const Tensor& x, const ReduceAxes& r, Tensor& out) {
  const T* px = x.ptr<T>();
  T* po = out.ptr<T>();
  int64_t n_out = out.numel();
  Shape st = reduce_out_strides(x.shape(), r);
  int64_t count = 1;  // elements per output
  for (int d = 0; d < x.rank(); d++) if (r.mask[d]) count *= x.dim(d);
  if constexpr (is_float_v<T> || std::is_same_v<T, bool>) {
    using A = std::conditional_t<std::is_same_v<T, bool>, uint8_t, double>;  // not vector<bool>
    A init;
    if constexpr (std::is_same_v<T, bool>) init = 0;
    else init = op == Red::Max ? -INFINITY : 0.0;
    std::vector<A> acc(n_out, init);
    int64_t i = 0;
    for (BroadcastIter it(x.shape(), {st}); !it.done(); it.next(), i++) {
      A v = (A)load(px, i);
      A& a = acc[it.off[0]];
      if (op == Red::Max) {
        if constexpr (std::is_same_v<T, bool>) a = a | v;
        else if (v > a || std::isnan(v)) a = v;
      } else {
        a += v;
      }
    }
    for (int64_t o = 0; o < n_out; o++) {
      A v = acc[o];
      if constexpr (!std::is_same_v<T, bool>) if (op == Red::Mean) v /= (double)count;
      store(po, o, (compute_t<T>)v);
    }
  } else {
    std::vector<uint64_t> acc(
        n_out, op == Red::Max ? (uint64_t)(int64_t)std::numeric_limits<T>::lowest() : 0);
    int64_t i = 0;
    for (BroadcastIter it(x.shape(), {st}); !it.done(); it.next(), i++) {
      int64_t v = (int64_t)px[i];
      uint64_t& a = acc[it.off[0]];
      if (op == Red::Max) a = (uint64_t)std::max((int64_t)a, v);
      else a += (uint64_t)v;
    }
    for (int64_t o = 0; o < n_out; o++) {
      T v = (T)(int64_t)acc[o];  // wraps like numpy's sum in the element type
      // numpy's integer mean divides in double and truncates.
      if (op == Red::Mean) v = count > 0 ? (T)((double)v / (double)count) : (T)0;
      po[o] = v;
    }
  }
}

void ref_reduce(const KernelCtx& ctx) {
  Red op = ctx.node.op == OpType::ReduceSum ? Red::Sum
           : ctx.node.op == OpType::ReduceMean ? Red::Mean : Red::Max;
  const Tensor& x = ctx.input(0);
  Tensor& out = ctx.output(0);
  ReduceAxes r = reduce_axes(ctx.node, x.rank(), ctx.has_input(1) ? &ctx.input(1) : nullptr);
  if (!r.error.empty())
    fail(ErrorKind::Model, "[", op_name(ctx.node.op), "] node '", ctx.node.name, "': ", r.error);
  if (r.noop) {
    std::memcpy(out.data(), x.data(), x.nbytes());
    return;
  }
  dispatch_dtype(x.dtype(), [&](auto t) {
    using T = decltype(t);
    if constexpr (std::is_same_v<T, int16_t>) {
      fail(ErrorKind::Model, "[", op_name(ctx.node.op), "] unsupported dtype ",
           dtype_name(x.dtype()));
    } else {
      reduce_ref_typed<T>(op, x, r, out);
    }
  });
}

const std::vector<AttrSpec> kReduceAttrs = {
    {"axes", AttrKind::Ints}, {"keepdims", AttrKind::Bool}, {"noop_with_empty_axes", AttrKind::Bool}};

}  // namespace

static const OpDef kOps[] = {
    {OpType::ReduceMean, "ReduceMean", 1, 2, 1, 1, 0, kReduceAttrs, infer_reduce, ref_reduce},
    {OpType::ReduceSum, "ReduceSum", 1, 2, 1, 1, 0, kReduceAttrs, infer_reduce, ref_reduce},
    {OpType::ReduceMax, "ReduceMax", 1, 2, 1, 1, 0, kReduceAttrs, infer_reduce, ref_reduce},
};

std::span<const OpDef> op_defs_reduce() { return kOps; }

}  // namespace ember
