// Shape ops: Reshape, Flatten, Squeeze, Unsqueeze, Transpose, Expand, Shape, Size, Range,
// Trilu, ConstantOfShape. Data moves as raw bytes of dtype_size, so every element dtype works.
// Concat, Split, Slice and Gather live in ops_index.cpp; fast kernels in kernels/generic/movement.cpp.
#include "ops/op_util.h"

namespace ember {
namespace {

// ---- helpers ------------------------------------------------------------------------------

std::string ints_str(const std::vector<int64_t>& v) { return shape_str(v); }

// Product of dims that come from tensor values; fails on negative dims or overflow.
int64_t checked_numel(const InferCtx& ctx, const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) {
    if (d < 0) ctx.fail("negative dim in shape ", shape_str(s));
    if (__builtin_mul_overflow(n, d, &n) || n > (int64_t(1) << 56))
      ctx.fail("shape ", shape_str(s), " has too many elements");
  }
  return n;
}

// Axes from input `i` when present, else from the opset-11 attribute "axes".
bool axes_of(const InferCtx& ctx, int i, std::vector<int64_t>* axes) {
  if (ctx.has(i)) {
    *axes = int_values(ctx, i, "axes");
    return true;
  }
  if (ctx.node.attrs.has("axes")) {
    *axes = ctx.node.attrs.get_ints("axes");
    return true;
  }
  return false;
}

// Normalises axes into [0, rank); fails on out-of-range or repeated axes.
std::vector<int> unique_axes(const InferCtx& ctx, const std::vector<int64_t>& axes, int rank) {
  std::vector<int> out;
  for (int64_t a : axes) {
    int n = normalize_axis(ctx, a, rank);
    if (std::find(out.begin(), out.end(), n) != out.end()) ctx.fail("axis ", a, " is repeated in ", ints_str(axes));
    out.push_back(n);
  }
  return out;
}

void copy_bytes(void* dst, const void* src, size_t n) {
  if (n) std::memcpy(dst, src, n);
}

// Same bytes, new shape: Reshape, Flatten, Squeeze, Unsqueeze.
void ref_copy(const KernelCtx& ctx) {
  copy_bytes(ctx.output(0).data(), ctx.input(0).data(), ctx.output(0).nbytes());
}

// ---- Reshape ------------------------------------------------------------------------------

std::vector<TensorType> infer_reshape(const InferCtx& ctx) {
  elem_size(ctx, 0);
  const Shape& in = ctx.in[0].shape;
  std::vector<int64_t> spec = int_values(ctx, 1, "shape");
  bool allowzero = ctx.node.attrs.get_int("allowzero", 0) != 0;
  Shape out(spec.size());
  int infer_at = -1;
  bool has_zero = false;
  for (size_t i = 0; i < spec.size(); i++) {
    int64_t d = spec[i];
    if (d == -1) {
      if (infer_at >= 0) ctx.fail("shape ", ints_str(spec), " has more than one -1");
      infer_at = (int)i;
      out[i] = 1;
      continue;
    }
    if (d < -1) ctx.fail("shape ", ints_str(spec), " has invalid dim ", d);
    if (d == 0) {
      has_zero = true;
      if (!allowzero) {
        if (i >= in.size())
          ctx.fail("shape[", i, "] is 0 (copy the input dim) but the input ", shape_str(in), " has rank ", in.size());
        d = in[i];
      }
    }
    out[i] = d;
  }
  if (allowzero && has_zero && infer_at >= 0)
    ctx.fail("shape ", ints_str(spec), " has both 0 and -1 while allowzero=1");
  int64_t n = shape_numel(in);
  int64_t known = checked_numel(ctx, out);
  if (infer_at >= 0) {
    if (known == 0 || n % known != 0)
      ctx.fail("cannot reshape ", shape_str(in), " to ", ints_str(spec));
    out[infer_at] = n / known;
  } else if (known != n) {
    ctx.fail("cannot reshape ", shape_str(in), " (", n, " elements) to ", shape_str(out));
  }
  return one(ctx.in[0].dtype, out);
}

// ---- Flatten ------------------------------------------------------------------------------

std::vector<TensorType> infer_flatten(const InferCtx& ctx) {
  elem_size(ctx, 0);
  const Shape& in = ctx.in[0].shape;
  int r = (int)in.size();
  int64_t axis = ctx.node.attrs.get_int("axis", 1);
  if (axis < -r || axis > r) ctx.fail("axis ", axis, " out of range for rank ", r);
  if (axis < 0) axis += r;
  Shape lo(in.begin(), in.begin() + axis), hi(in.begin() + axis, in.end());
  return one(ctx.in[0].dtype, {shape_numel(lo), shape_numel(hi)});
}

// ---- Squeeze / Unsqueeze ------------------------------------------------------------------

std::vector<TensorType> infer_squeeze(const InferCtx& ctx) {
  elem_size(ctx, 0);
  const Shape& in = ctx.in[0].shape;
  int r = (int)in.size();
  std::vector<int64_t> axes;
  std::vector<bool> drop(r, false);
  if (axes_of(ctx, 1, &axes)) {
    for (int a : unique_axes(ctx, axes, r)) {
      if (in[a] != 1) ctx.fail("cannot squeeze axis ", a, " of size ", in[a], " in ", shape_str(in));
      drop[a] = true;
    }
  } else {
    for (int a = 0; a < r; a++) drop[a] = in[a] == 1;
  }
  Shape out;
  for (int a = 0; a < r; a++) if (!drop[a]) out.push_back(in[a]);
  return one(ctx.in[0].dtype, out);
}

std::vector<TensorType> infer_unsqueeze(const InferCtx& ctx) {
  elem_size(ctx, 0);
  const Shape& in = ctx.in[0].shape;
  std::vector<int64_t> axes;
  if (!axes_of(ctx, 1, &axes)) ctx.fail("axes input is required");
  int r_out = (int)(in.size() + axes.size());
  std::vector<bool> is_new(r_out, false);
  for (int a : unique_axes(ctx, axes, r_out)) is_new[a] = true;
  Shape out(r_out);
  size_t k = 0;
  for (int a = 0; a < r_out; a++) out[a] = is_new[a] ? 1 : in[k++];
  return one(ctx.in[0].dtype, out);
}

// ---- Transpose ----------------------------------------------------------------------------

std::vector<int64_t> transpose_perm(const Node& node, int rank) {
  std::vector<int64_t> perm = node.attrs.get_ints("perm");
  if (!node.attrs.has("perm")) {
    for (int i = rank - 1; i >= 0; i--) perm.push_back(i);
  }
  return perm;
}

std::vector<TensorType> infer_transpose(const InferCtx& ctx) {
  elem_size(ctx, 0);
  const Shape& in = ctx.in[0].shape;
  int r = (int)in.size();
  std::vector<int64_t> perm = transpose_perm(ctx.node, r);
  if ((int)perm.size() != r) ctx.fail("perm ", ints_str(perm), " has ", perm.size(), " entries for rank ", r);
  std::vector<bool> seen(r, false);
  Shape out(r);
  for (int i = 0; i < r; i++) {
    int64_t p = perm[i];
    if (p < 0 || p >= r || seen[p]) ctx.fail("perm ", ints_str(perm), " is not a permutation of 0..", r - 1);
    seen[p] = true;
    out[i] = in[p];
  }
  return one(ctx.in[0].dtype, out);
}

// Copies `in` into `out` (contiguous), reading element (i0, i1, ...) of `out` at
// sum(i_k * in_strides[k]) elements from `in_base`.
void strided_copy(char* out, const char* in_base, const Shape& out_shape, const Shape& in_strides,
                  size_t es) {
  int64_t i = 0;
  for (BroadcastIter it(out_shape, {in_strides}); !it.done(); it.next(), i++)
    std::memcpy(out + i * es, in_base + it.off[0] * (int64_t)es, es);
}

void ref_transpose(const KernelCtx& ctx) {
  const Tensor& x = ctx.input(0);
  Tensor& y = ctx.output(0);
  std::vector<int64_t> perm = transpose_perm(ctx.node, x.rank());
  Shape xs = contiguous_strides(x.shape()), st(x.rank());
  for (int i = 0; i < x.rank(); i++) st[i] = xs[perm[i]];
  strided_copy(y.ptr<char>(), x.ptr<const char>(), y.shape(), st, dtype_size(x.dtype()));
}

// ---- Expand -------------------------------------------------------------------------------

std::vector<TensorType> infer_expand(const InferCtx& ctx) {
  elem_size(ctx, 0);
  std::vector<int64_t> shape = int_values(ctx, 1, "shape");
  for (int64_t d : shape) if (d < 0) ctx.fail("shape ", ints_str(shape), " has a negative dim");
  Shape out = broadcast_shapes(ctx, ctx.in[0].shape, shape);
  checked_numel(ctx, out);
  return one(ctx.in[0].dtype, out);
}

void ref_expand(const KernelCtx& ctx) {
  const Tensor& x = ctx.input(0);
  Tensor& y = ctx.output(0);
  strided_copy(y.ptr<char>(), x.ptr<const char>(), y.shape(), broadcast_strides(x.shape(), y.shape()),
               dtype_size(x.dtype()));
}

// ---- Shape / Size -------------------------------------------------------------------------

// [start, end) of Shape's slice of the dims, clamped to [0, rank] (opset 15).
std::pair<int64_t, int64_t> shape_range(const Node& node, int64_t rank) {
  auto clamp_axis = [rank](int64_t a) {
    if (a < 0) a += rank;
    return std::clamp<int64_t>(a, 0, rank);
  };
  int64_t start = clamp_axis(node.attrs.get_int("start", 0));
  int64_t end = clamp_axis(node.attrs.get_int("end", rank));
  return {start, std::max(start, end)};
}

std::vector<TensorType> infer_shape(const InferCtx& ctx) {
  auto [start, end] = shape_range(ctx.node, (int64_t)ctx.in[0].shape.size());
  return one(DType::I64, {end - start});
}

void ref_shape(const KernelCtx& ctx) {
  const Shape& s = ctx.input(0).shape();
  auto [start, end] = shape_range(ctx.node, (int64_t)s.size());
  int64_t* y = ctx.output(0).ptr<int64_t>();
  for (int64_t i = start; i < end; i++) y[i - start] = s[i];
}

std::vector<TensorType> infer_size(const InferCtx& ctx) { return one(DType::I64, {}); }

void ref_size(const KernelCtx& ctx) { *ctx.output(0).ptr<int64_t>() = ctx.input(0).numel(); }

// ---- Range --------------------------------------------------------------------------------

bool range_dtype_ok(DType t) {
  return t == DType::F32 || t == DType::F64 || t == DType::I16 || t == DType::I32 ||
         t == DType::I64 || t == DType::F16 || t == DType::BF16;
}

// Number of elements: max(ceil((limit - start) / delta), 0). Empty string on success.
std::string range_count(const Tensor& start, const Tensor& limit, const Tensor& delta, int64_t* n) {
  const int64_t kMax = int64_t(1) << 40;
  if (dtype_info(start.dtype()).is_float) {
    double s = tensor_get_f64(start, 0), l = tensor_get_f64(limit, 0), d = tensor_get_f64(delta, 0);
    if (d == 0) return "delta is 0";
    if (!std::isfinite(s) || !std::isfinite(l) || !std::isfinite(d)) return "start, limit and delta must be finite";
    double q = std::ceil((l - s) / d);
    if (!(q <= (double)kMax)) return "range has more than 2^40 elements";
    *n = q > 0 ? (int64_t)q : 0;
    return {};
  }
  __int128 s = tensor_get_i64(start, 0), l = tensor_get_i64(limit, 0), d = tensor_get_i64(delta, 0);
  if (d == 0) return "delta is 0";
  __int128 diff = l - s;
  __int128 q = 0;
  if (diff != 0 && (diff > 0) == (d > 0)) {
    __int128 ad = d > 0 ? d : -d, adiff = diff > 0 ? diff : -diff;
    q = (adiff + ad - 1) / ad;
  }
  if (q > kMax) return "range has more than 2^40 elements";
  *n = (int64_t)q;
  return {};
}

std::vector<TensorType> infer_range(const InferCtx& ctx) {
  DType t = ctx.in[0].dtype;
  if (!range_dtype_ok(t)) ctx.fail("dtype ", dtype_name(t), " is not supported");
  const char* names[] = {"start", "limit", "delta"};
  for (int i = 0; i < 3; i++) {
    if (ctx.in[i].dtype != t) ctx.fail(names[i], " is ", dtype_name(ctx.in[i].dtype), ", start is ", dtype_name(t));
    if (shape_numel(ctx.in[i].shape) != 1) ctx.fail(names[i], " must be a scalar, got shape ", shape_str(ctx.in[i].shape));
  }
  int64_t n = 0;
  std::string err = range_count(ctx.require_value(0, "start"), ctx.require_value(1, "limit"),
                                ctx.require_value(2, "delta"), &n);
  if (!err.empty()) ctx.fail(err);
  return one(t, {n});
}

void ref_range(const KernelCtx& ctx) {
  Tensor& y = ctx.output(0);
  int64_t n = y.numel();
  dispatch_dtype(y.dtype(), [&](auto tag) {
    using T = decltype(tag);
    T* p = y.ptr<T>();
    if constexpr (is_float_v<T>) {
      // Computed as start + i * delta in double (numpy's arange), then rounded once.
      double s = tensor_get_f64(ctx.input(0), 0), d = tensor_get_f64(ctx.input(2), 0);
      for (int64_t i = 0; i < n; i++) store(p, i, (compute_t<T>)(s + (double)i * d));
    } else if constexpr (!std::is_same_v<T, bool>) {
      int64_t s = tensor_get_i64(ctx.input(0), 0), d = tensor_get_i64(ctx.input(2), 0);
      // Unsigned maths: i * delta may pass int64 range where start + i * delta does not.
      for (int64_t i = 0; i < n; i++) p[i] = (T)(int64_t)((uint64_t)s + (uint64_t)i * (uint64_t)d);
    }
  });
}

// ---- Trilu --------------------------------------------------------------------------------

std::vector<TensorType> infer_trilu(const InferCtx& ctx) {
  elem_size(ctx, 0);
  if (ctx.in[0].shape.size() < 2) ctx.fail("input must have rank >= 2, got ", shape_str(ctx.in[0].shape));
  if (ctx.has(1)) {
    if (ctx.in[1].dtype != DType::I64) ctx.fail("k must be int64, got ", dtype_name(ctx.in[1].dtype));
    if (shape_numel(ctx.in[1].shape) != 1) ctx.fail("k must be a scalar, got shape ", shape_str(ctx.in[1].shape));
  }
  return one(ctx.in[0].dtype, ctx.in[0].shape);
}

void ref_trilu(const KernelCtx& ctx) {
  const Tensor& x = ctx.input(0);
  Tensor& y = ctx.output(0);
  int64_t k = 0;
  if (ctx.has_input(1)) {
    EMBER_CHECK(ctx.input(1).numel() == 1, Input, "[Trilu] k must be a scalar");
    k = tensor_get_i64(ctx.input(1), 0);
  }
  bool upper = ctx.node.attrs.get_int("upper", 1) != 0;
  int64_t m = x.dim(-2), n = x.dim(-1);
  k = std::clamp<int64_t>(k, -(m + n), m + n);  // beyond this every row is all kept or all zero
  size_t es = dtype_size(x.dtype());
  int64_t rows = (m == 0 || n == 0) ? 0 : x.numel() / n;
  const char* src = x.ptr<const char>();
  char* dst = y.ptr<char>();
  for (int64_t r = 0; r < rows; r++) {
    int64_t i = r % m;
    // Kept columns: upper j >= i + k, lower j <= i + k.
    int64_t lo = upper ? std::clamp<int64_t>(i + k, 0, n) : 0;
    int64_t hi = upper ? n : std::clamp<int64_t>(i + k + 1, 0, n);
    char* row = dst + r * n * (int64_t)es;
    std::memset(row, 0, n * es);
    copy_bytes(row + lo * es, src + (r * n + lo) * (int64_t)es, (size_t)std::max<int64_t>(hi - lo, 0) * es);
  }
}

// ---- ConstantOfShape ----------------------------------------------------------------------

std::vector<TensorType> infer_constant_of_shape(const InferCtx& ctx) {
  if (ctx.in[0].dtype != DType::I64) ctx.fail("shape must be int64, got ", dtype_name(ctx.in[0].dtype));
  std::vector<int64_t> shape = int_values(ctx, 0, "shape");
  checked_numel(ctx, shape);
  DType t = DType::F32;
  if (const Tensor* v = ctx.node.attrs.get_tensor("value")) {
    if (v->numel() != 1) ctx.fail("value must have one element, got shape ", shape_str(v->shape()));
    if (dtype_size(v->dtype()) == 0) ctx.fail("value has dtype ", dtype_name(v->dtype()), ", which has no elements");
    t = v->dtype();
  }
  return one(t, shape);
}

void ref_constant_of_shape(const KernelCtx& ctx) {
  Tensor& y = ctx.output(0);
  size_t es = dtype_size(y.dtype());
  char value[16] = {};  // default: zero of any dtype
  if (const Tensor* v = ctx.node.attrs.get_tensor("value")) {
    EMBER_CHECK(v->dtype() == y.dtype() && v->numel() == 1 && es <= sizeof(value), Internal,
                "[ConstantOfShape] value does not match the output");
    std::memcpy(value, v->data(), es);
  }
  char* p = y.ptr<char>();
  for (int64_t i = 0; i < y.numel(); i++) std::memcpy(p + i * es, value, es);
}

}  // namespace

static const OpDef kOps[] = {
    {OpType::Reshape, "Reshape", 2, 2, 1, 1, 0, {{"allowzero", AttrKind::Bool}}, infer_reshape, ref_copy},
    {OpType::Flatten, "Flatten", 1, 1, 1, 1, 0, {{"axis", AttrKind::Int}}, infer_flatten, ref_copy},
    // "axes" is the opset-11 attribute form; newer models pass axes as input 1.
    {OpType::Squeeze, "Squeeze", 1, 2, 1, 1, 0, {{"axes", AttrKind::Ints}}, infer_squeeze, ref_copy},
    {OpType::Unsqueeze, "Unsqueeze", 1, 2, 1, 1, 0, {{"axes", AttrKind::Ints}}, infer_unsqueeze, ref_copy},
    {OpType::Transpose, "Transpose", 1, 1, 1, 1, 0, {{"perm", AttrKind::Ints}}, infer_transpose, ref_transpose},
    {OpType::Expand, "Expand", 2, 2, 1, 1, 0, {}, infer_expand, ref_expand},
    {OpType::Shape, "Shape", 1, 1, 1, 1, kOpShapeOnly, {{"start", AttrKind::Int}, {"end", AttrKind::Int}},
     infer_shape, ref_shape},
    {OpType::Size, "Size", 1, 1, 1, 1, kOpShapeOnly, {}, infer_size, ref_size},
    {OpType::Range, "Range", 3, 3, 1, 1, 0, {{"stash_type", AttrKind::Int}}, infer_range, ref_range},
    {OpType::Trilu, "Trilu", 1, 2, 1, 1, 0, {{"upper", AttrKind::Bool}}, infer_trilu, ref_trilu},
    {OpType::ConstantOfShape, "ConstantOfShape", 1, 1, 1, 1, 0, {{"value", AttrKind::Tensor}},
     infer_constant_of_shape, ref_constant_of_shape},
};

std::span<const OpDef> op_defs_shape() { return kOps; }

}  // namespace ember
