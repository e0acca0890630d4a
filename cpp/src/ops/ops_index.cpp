// Index ops: Concat, Split, Slice, Gather. References move raw bytes of dtype_size, so every
// element dtype works; each views its tensors as [outer, axis, inner] blocks. Fast kernels in
// kernels/generic/movement.cpp; the other shape ops in ops_shape.cpp.
#include <climits>

#include "ops/op_util.h"

namespace ember {
namespace {

bool is_index_dtype(DType t) { return t == DType::I64 || t == DType::I32; }

void copy_bytes(void* dst, const void* src, size_t n) {
  if (n) std::memcpy(dst, src, n);
}

// ---- Concat -------------------------------------------------------------------------------

std::vector<TensorType> infer_concat(const InferCtx& ctx) {
  elem_size(ctx, 0);
  const TensorType& t0 = ctx.in[0];
  int r = (int)t0.shape.size();
  if (r == 0) ctx.fail("inputs must have rank >= 1");
  int axis = normalize_axis(ctx, ctx.node.attrs.get_int("axis", 0), r);
  Shape out = t0.shape;
  out[axis] = 0;
  for (int i = 0; i < ctx.num_inputs(); i++) {
    const TensorType& t = ctx.in[i];
    if (!ctx.has(i)) ctx.fail("input ", i, " is missing");
    if (t.dtype != t0.dtype) ctx.fail("input ", i, " is ", dtype_name(t.dtype), ", input 0 is ", dtype_name(t0.dtype));
    bool ok = (int)t.shape.size() == r;
    for (int d = 0; ok && d < r; d++) ok = d == axis || t.shape[d] == t0.shape[d];
    if (!ok)
      ctx.fail("input ", i, " has shape ", shape_str(t.shape), ", input 0 has ", shape_str(t0.shape),
               " (they may differ only on axis ", axis, ")");
    if (__builtin_add_overflow(out[axis], t.shape[axis], &out[axis]))
      ctx.fail("the inputs' sizes on axis ", axis, " overflow int64");
  }
  return one(t0.dtype, out);
}

void ref_concat(const KernelCtx& ctx) {
  Tensor& y = ctx.output(0);
  int axis = normalize_axis(ctx.node.attrs.get_int("axis", 0), y.rank());
  size_t es = dtype_size(y.dtype());
  int64_t outer = shape_prod(y.shape(), 0, axis), inner = shape_prod(y.shape(), axis + 1, y.rank());
  int64_t row = y.dim(axis) * inner;  // elements per outer index in the output
  int64_t at = 0;                     // start of this input within a row
  for (const Tensor* x : ctx.in) {
    int64_t block = x->dim(axis) * inner;
    for (int64_t o = 0; o < outer; o++)
      copy_bytes(y.ptr<char>() + (o * row + at) * es, x->ptr<const char>() + o * block * es, block * es);
    at += block;
  }
}

// ---- Split --------------------------------------------------------------------------------

std::vector<TensorType> infer_split(const InferCtx& ctx) {
  elem_size(ctx, 0);
  const Shape& in = ctx.in[0].shape;
  int r = (int)in.size();
  if (r == 0) ctx.fail("input must have rank >= 1");
  int axis = normalize_axis(ctx, ctx.node.attrs.get_int("axis", 0), r);
  int64_t n = (int64_t)ctx.node.outputs.size(), dim = in[axis];
  bool has_num = ctx.node.attrs.has("num_outputs");
  std::vector<int64_t> sizes;
  // "split" as an attribute is the opset-11 form of input 1.
  bool has_split = ctx.has(1) || ctx.node.attrs.has("split");
  if (has_split && has_num) ctx.fail("split and num_outputs are both given");
  if (has_split) {
    sizes = ctx.has(1) ? int_values(ctx, 1, "split") : ctx.node.attrs.get_ints("split");
    if ((int64_t)sizes.size() != n) ctx.fail("split ", shape_str(sizes), " has ", sizes.size(), " entries for ", n, " outputs");
    int64_t sum = 0;
    for (int64_t s : sizes) {
      if (s < 0 || s > dim) ctx.fail("split ", shape_str(sizes), " has an invalid size ", s);
      sum += s;
      if (sum > dim) ctx.fail("split ", shape_str(sizes), " sums to over ", dim, ", the size of axis ", axis);
    }
    if (sum != dim) ctx.fail("split ", shape_str(sizes), " sums to ", sum, ", axis ", axis, " has size ", dim);
  } else {
    if (has_num && ctx.node.attrs.get_int("num_outputs", 0) != n)
      ctx.fail("num_outputs is ", ctx.node.attrs.get_int("num_outputs", 0), " but the node has ", n, " outputs");
    // Opset 18: chunks of ceil(dim / n), the last one smaller.
    int64_t chunk = (dim + n - 1) / n;
    int64_t last = dim - chunk * (n - 1);
    if (last < 0) ctx.fail("cannot split a dim of ", dim, " into ", n, " chunks of ", chunk);
    sizes.assign(n, chunk);
    sizes.back() = last;
  }
  std::vector<TensorType> out(n, TensorType{ctx.in[0].dtype, in});
  for (int64_t i = 0; i < n; i++) out[i].shape[axis] = sizes[i];
  return out;
}

void ref_split(const KernelCtx& ctx) {
  const Tensor& x = ctx.input(0);
  int axis = normalize_axis(ctx.node.attrs.get_int("axis", 0), x.rank());
  size_t es = dtype_size(x.dtype());
  int64_t outer = shape_prod(x.shape(), 0, axis), inner = shape_prod(x.shape(), axis + 1, x.rank());
  int64_t row = x.dim(axis) * inner;
  int64_t at = 0;
  // Unused outputs have no tensor to read a size from, so the chunk sizes come from inference.
  InferCtx ictx{ctx.node, {TensorType{x.dtype(), x.shape()}}, {}};
  if (ctx.has_input(1)) {
    ictx.in.push_back(TensorType{ctx.input(1).dtype(), ctx.input(1).shape()});
    ictx.values = {nullptr, ctx.in[1]};
  }
  std::vector<TensorType> types = infer_split(ictx);
  for (size_t k = 0; k < types.size(); k++) {
    int64_t block = types[k].shape[axis] * inner;
    if (ctx.has_output((int)k)) {
      char* y = ctx.output((int)k).ptr<char>();
      for (int64_t o = 0; o < outer; o++)
        copy_bytes(y + o * block * es, x.ptr<const char>() + (o * row + at) * es, block * es);
    }
    at += block;
  }
}

// ---- Slice --------------------------------------------------------------------------------

std::vector<TensorType> infer_slice(const InferCtx& ctx) {
  elem_size(ctx, 0);
  for (int i = 1; i < ctx.num_inputs(); i++)
    if (ctx.has(i) && !is_index_dtype(ctx.in[i].dtype)) ctx.fail("input ", i, " must be int64 or int32");
  std::vector<int64_t> starts = int_values(ctx, 1, "starts"), ends = int_values(ctx, 2, "ends");
  std::vector<int64_t> axes, steps;
  if (ctx.has(3)) axes = int_values(ctx, 3, "axes");
  if (ctx.has(4)) steps = int_values(ctx, 4, "steps");
  SliceSpec spec;
  std::string err = slice_resolve(ctx.in[0].shape, starts, ends, ctx.has(3) ? &axes : nullptr,
                                  ctx.has(4) ? &steps : nullptr, &spec);
  if (!err.empty()) ctx.fail(err);
  return one(ctx.in[0].dtype, spec.out);
}

void ref_slice(const KernelCtx& ctx) {
  const Tensor& x = ctx.input(0);
  Tensor& y = ctx.output(0);
  SliceSpec spec = slice_resolve(ctx);
  size_t es = dtype_size(x.dtype());
  Shape xs = contiguous_strides(x.shape()), st(x.rank());
  int64_t base = 0;
  for (int d = 0; d < x.rank(); d++) {
    base += spec.start[d] * xs[d];
    st[d] = spec.step[d] * xs[d];
  }
  const char* src = x.ptr<const char>() + base * (int64_t)es;
  int64_t i = 0;
  for (BroadcastIter it(y.shape(), {st}); !it.done(); it.next(), i++)
    std::memcpy(y.ptr<char>() + i * es, src + it.off[0] * (int64_t)es, es);
}

// ---- Gather -------------------------------------------------------------------------------

std::vector<TensorType> infer_gather(const InferCtx& ctx) {
  elem_size(ctx, 0);
  const Shape& data = ctx.in[0].shape;
  int r = (int)data.size();
  if (r == 0) ctx.fail("data must have rank >= 1");
  if (!is_index_dtype(ctx.in[1].dtype)) ctx.fail("indices must be int64 or int32, got ", dtype_name(ctx.in[1].dtype));
  int axis = normalize_axis(ctx, ctx.node.attrs.get_int("axis", 0), r);
  Shape out(data.begin(), data.begin() + axis);
  out.insert(out.end(), ctx.in[1].shape.begin(), ctx.in[1].shape.end());
  out.insert(out.end(), data.begin() + axis + 1, data.end());
  return one(ctx.in[0].dtype, out);
}

void ref_gather(const KernelCtx& ctx) {
  const Tensor& x = ctx.input(0);
  const Tensor& idx = ctx.input(1);
  Tensor& y = ctx.output(0);
  int axis = normalize_axis(ctx.node.attrs.get_int("axis", 0), x.rank());
  size_t es = dtype_size(x.dtype());
  int64_t outer = shape_prod(x.shape(), 0, axis), dim = x.dim(axis), inner = shape_prod(x.shape(), axis + 1, x.rank());
  int64_t n = idx.numel();
  for (int64_t o = 0; o < outer; o++) {
    for (int64_t j = 0; j < n; j++) {
      int64_t v = tensor_get_i64(idx, j);
      EMBER_CHECK(v >= -dim && v < dim, Input, "[Gather] node '", ctx.node.name, "': index ", v,
                  " is out of range for axis ", axis, " of size ", dim);
      if (v < 0) v += dim;
      copy_bytes(y.ptr<char>() + (o * n + j) * inner * es, x.ptr<const char>() + (o * dim + v) * inner * es,
                 inner * es);
    }
  }
}

}  // namespace

// ---- shared Slice parameter resolution ----------------------------------------------------

std::string slice_resolve(const Shape& dims, const std::vector<int64_t>& starts,
                          const std::vector<int64_t>& ends, const std::vector<int64_t>* axes,
                          const std::vector<int64_t>* steps, SliceSpec* spec) {
  int r = (int)dims.size();
  size_t n = starts.size();
  spec->out = dims;
  spec->start.assign(r, 0);
  spec->step.assign(r, 1);
  if (ends.size() != n) return str_cat("starts has ", n, " entries, ends has ", ends.size());
  if (axes && axes->size() != n) return str_cat("starts has ", n, " entries, axes has ", axes->size());
  if (steps && steps->size() != n) return str_cat("starts has ", n, " entries, steps has ", steps->size());
  if (!axes && (int64_t)n > r) return str_cat(n, " starts for rank ", r);
  std::vector<bool> seen(r, false);
  for (size_t i = 0; i < n; i++) {
    int64_t a = axes ? (*axes)[i] : (int64_t)i;
    if (a < -r || a >= r) return str_cat("axis ", a, " out of range for rank ", r);
    if (a < 0) a += r;
    if (seen[a]) return str_cat("axis ", a, " is repeated");
    seen[a] = true;
    int64_t step = steps ? (*steps)[i] : 1;
    if (step == 0) return "step is 0";
    int64_t dim = dims[a], s = starts[i], e = ends[i];
    if (s < 0) s += dim;
    if (e < 0) e += dim;
    int64_t count = 0;
    // |step| as unsigned: -INT64_MIN does not fit in int64.
    uint64_t mag = step > 0 ? (uint64_t)step : (uint64_t)0 - (uint64_t)step;
    if (step > 0) {
      s = std::clamp<int64_t>(s, 0, dim);
      e = std::clamp<int64_t>(e, 0, dim);
      if (e > s) count = (int64_t)((uint64_t)(e - s - 1) / mag) + 1;
    } else {
      // NOTE: numpy (the onnx reference) clamps start to [-1, dim - 1]; the ONNX text says
      // [0, dim - 1], which keeps one element for e.g. dim 1, start -2, end -9, step -1.
      s = std::clamp<int64_t>(s, -1, dim - 1);
      e = std::clamp<int64_t>(e, -1, dim - 1);
      if (s > e) count = (int64_t)((uint64_t)(s - e - 1) / mag) + 1;
    }
    spec->out[a] = count;
    spec->start[a] = count ? s : 0;
    // With one element the step never applies; keeping 1 lets copies see a contiguous run.
    spec->step[a] = count > 1 ? step : 1;
  }
  return {};
}

SliceSpec slice_resolve(const KernelCtx& ctx) {
  auto values = [&](int i) {
    return ctx.has_input(i) ? tensor_to_i64_vector(ctx.input(i)) : std::vector<int64_t>{};
  };
  std::vector<int64_t> starts = values(1), ends = values(2), axes = values(3), steps = values(4);
  SliceSpec spec;
  std::string err = slice_resolve(ctx.input(0).shape(), starts, ends, ctx.has_input(3) ? &axes : nullptr,
                                  ctx.has_input(4) ? &steps : nullptr, &spec);
  EMBER_CHECK(err.empty(), Input, "[Slice] node '", ctx.node.name, "': ", err);
  return spec;
}

static const OpDef kOps[] = {
    {OpType::Concat, "Concat", 1, -1, 1, 1, 0, {{"axis", AttrKind::Int, true}}, infer_concat, ref_concat},
    // "split" is the opset-11 attribute form of input 1.
    {OpType::Split, "Split", 1, 2, 1, INT_MAX, 0,
     {{"axis", AttrKind::Int}, {"num_outputs", AttrKind::Int}, {"split", AttrKind::Ints}}, infer_split,
     ref_split},
    {OpType::Slice, "Slice", 3, 5, 1, 1, 0, {}, infer_slice, ref_slice},
    {OpType::Gather, "Gather", 2, 2, 1, 1, 0, {{"axis", AttrKind::Int}}, infer_gather, ref_gather},
};

std::span<const OpDef> op_defs_index() { return kOps; }

}  // namespace ember
