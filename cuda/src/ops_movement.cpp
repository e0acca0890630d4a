// CUDA adapters of the data-movement ops and Rope: they turn a node's attributes, shapes and
// plan-time values (starts, repeats, pads: host_input) into the plans of movement_plan.h and
// launch cuda/kernels/movement.cu. Every element dtype of 1, 2, 4 or 8 bytes moves as raw
// units. Gather and GatherElements check their indices on the device and read a flag back
// (one sync) to raise the reference's Input error. References: cpp/src/ops/ops_shape.cpp,
// ops_index.cpp, ops_tensor.cpp, ops_tensor_index.cpp, ops_llm.cpp.
#include <cstdint>
#include <vector>

#include "cuda/kernels/movement.h"
#include "cuda/src/movement_plan.h"
#include "cuda/src/ops.h"
#include "ops/op_util.h"

namespace ember::cuda {
namespace {

bool movable(DType t) {
  size_t es = dtype_size(t);
  return es == 1 || es == 2 || es == 4 || es == 8;
}

int elem_bytes(const Tensor& t) { return (int)dtype_size(t.dtype()); }

// The values of input i that supports() saw; nullptr turns into an Internal error.
std::vector<int64_t> host_ints(const KernelCtx& ctx, int i, const char* what) {
  const Tensor* t = host_input(ctx, i);
  EMBER_CHECK(t, Internal, "[", op_name(ctx.node.op), "] node '", ctx.node.name, "': ", what,
              " is not known on the host");
  return tensor_to_i64_vector(*t);
}

bool fits(const StridedDims& d) {
  StridedPlan p;
  return strided_plan_from(d, &p);
}

void copy_box(const KernelCtx& ctx, void* dst, const void* src, const StridedDims& d, int es) {
  StridedPlan p;
  EMBER_CHECK(strided_plan_from(d, &p), Internal, "[", op_name(ctx.node.op), "] node '", ctx.node.name,
              "': more than ", kMoveMaxDims, " dims after collapsing");
  movement_strided_copy(dst, src, p, es, stream(ctx));
}

std::vector<int64_t> perm_of(const Node& node, int rank) {
  if (node.attrs.has("perm")) return node.attrs.get_ints("perm");
  std::vector<int64_t> perm;
  for (int i = rank - 1; i >= 0; i--) perm.push_back(i);
  return perm;
}

// Resolves Slice from plan-time values; `values(i)` gives input i's ints or nullptr-free empty.
template <class Values>
SliceSpec slice_spec(const Shape& dims, bool has_axes, bool has_steps, Values&& values, std::string* err) {
  std::vector<int64_t> starts = values(1), ends = values(2), axes, steps;
  if (has_axes) axes = values(3);
  if (has_steps) steps = values(4);
  SliceSpec spec;
  *err = slice_resolve(dims, starts, ends, has_axes ? &axes : nullptr, has_steps ? &steps : nullptr, &spec);
  return spec;
}

StridedDims slice_box(const Shape& dims, const SliceSpec& spec, int64_t* base) {
  return slice_dims(dims, spec.start, spec.step, spec.out, base);
}

// Raises the reference's error when a gather kernel flagged an index.
template <class Message>
void check_index_flag(const KernelCtx& ctx, const Scratch& err, Message&& message) {
  unsigned long long flag[2] = {0, 0};
  read_back(ctx, flag, err.data(), sizeof(flag));
  if (flag[0]) message((int64_t)flag[1]);
}

}  // namespace

// ---- copies: Reshape, Flatten, Squeeze, Unsqueeze, Identity ----------------------------------

void copy_cuda(const KernelCtx& ctx) {
  movement_copy(ctx.output(0).data(), ctx.input(0).data(), (int64_t)ctx.output(0).nbytes(), stream(ctx));
  check_launch("[copy] device-to-device copy");
}

bool copy_cuda_supports(const InferCtx& ctx, const DeviceOptions&) { return movable(ctx.in[0].dtype); }

// ---- Transpose --------------------------------------------------------------------------------

void transpose_cuda(const KernelCtx& ctx) {
  const Tensor& x = ctx.input(0);
  copy_box(ctx, ctx.output(0).data(), x.data(), transpose_dims(x.shape(), perm_of(ctx.node, x.rank())),
           elem_bytes(x));
  check_launch("[transpose] strided copy");
}

bool transpose_cuda_supports(const InferCtx& ctx, const DeviceOptions&) {
  const Shape& s = ctx.in[0].shape;
  return movable(ctx.in[0].dtype) && fits(transpose_dims(s, perm_of(ctx.node, (int)s.size())));
}

// ---- Slice ------------------------------------------------------------------------------------

void slice_cuda(const KernelCtx& ctx) {
  const Tensor& x = ctx.input(0);
  Tensor& y = ctx.output(0);
  std::string err;
  SliceSpec spec = slice_spec(x.shape(), ctx.has_input(3), ctx.has_input(4),
                              [&](int i) { return host_ints(ctx, i, "a slice parameter"); }, &err);
  EMBER_CHECK(err.empty(), Input, "[Slice] node '", ctx.node.name, "': ", err);
  EMBER_CHECK(spec.out == y.shape(), Internal, "[Slice] node '", ctx.node.name, "': output ",
              shape_str(y.shape()), " but the parameters give ", shape_str(spec.out));
  int64_t base = 0;
  StridedDims d = slice_box(x.shape(), spec, &base);
  const int es = elem_bytes(x);
  copy_box(ctx, y.data(), y.numel() ? x.ptr<const char>() + base * es : x.data(), d, es);
  check_launch("[slice] strided copy");
}

bool slice_cuda_supports(const InferCtx& ctx, const DeviceOptions&) {
  if (!movable(ctx.in[0].dtype)) return false;
  for (int i = 1; i <= 4; i++)
    if ((i <= 2 || ctx.has(i)) && !ctx.value(i)) return false;
  std::string err;
  SliceSpec spec = slice_spec(ctx.in[0].shape, ctx.has(3), ctx.has(4),
                              [&](int i) { return tensor_to_i64_vector(*ctx.value(i)); }, &err);
  int64_t base = 0;
  return err.empty() && fits(slice_box(ctx.in[0].shape, spec, &base));
}

// ---- Expand, Tile -----------------------------------------------------------------------------

void expand_cuda(const KernelCtx& ctx) {
  const Tensor& x = ctx.input(0);
  Tensor& y = ctx.output(0);
  copy_box(ctx, y.data(), x.data(), expand_dims(x.shape(), y.shape()), elem_bytes(x));
  check_launch("[expand] broadcast copy");
}

bool expand_cuda_supports(const InferCtx& ctx, const DeviceOptions&) {
  if (!movable(ctx.in[0].dtype) || !ctx.value(1)) return false;
  std::vector<TensorType> out = op_def(OpType::Expand).infer(ctx);
  return fits(expand_dims(ctx.in[0].shape, out[0].shape));
}

void tile_cuda(const KernelCtx& ctx) {
  const Tensor& x = ctx.input(0);
  copy_box(ctx, ctx.output(0).data(), x.data(), tile_dims(x.shape(), host_ints(ctx, 1, "repeats")),
           elem_bytes(x));
  check_launch("[tile] strided copy");
}

bool tile_cuda_supports(const InferCtx& ctx, const DeviceOptions&) {
  const Tensor* reps = ctx.value(1);
  if (!movable(ctx.in[0].dtype) || !reps) return false;
  std::vector<int64_t> r = tensor_to_i64_vector(*reps);
  return r.size() == ctx.in[0].shape.size() && fits(tile_dims(ctx.in[0].shape, r));
}

// ---- Concat, Split ----------------------------------------------------------------------------

void concat_cuda(const KernelCtx& ctx) {
  Tensor& y = ctx.output(0);
  const int axis = normalize_axis(ctx.node.attrs.get_int("axis", 0), y.rank());
  const int es = elem_bytes(y);
  const int64_t outer = shape_prod(y.shape(), 0, axis), inner = shape_prod(y.shape(), axis + 1, y.rank());
  const int64_t row = y.dim(axis) * inner;
  int64_t at = 0;  // start of this input within an output row, in elements
  for (const Tensor* x : ctx.in) {
    const int64_t block = x->dim(axis) * inner;
    copy_box(ctx, y.ptr<char>() + at * es, x->data(), concat_part_dims(outer, block, row), es);
    at += block;
  }
  check_launch("[concat] strided copy");
}

bool concat_cuda_supports(const InferCtx& ctx, const DeviceOptions&) { return movable(ctx.in[0].dtype); }

void split_cuda(const KernelCtx& ctx) {
  const Tensor& x = ctx.input(0);
  const int axis = normalize_axis(ctx.node.attrs.get_int("axis", 0), x.rank());
  const int es = elem_bytes(x);
  const int64_t outer = shape_prod(x.shape(), 0, axis), inner = shape_prod(x.shape(), axis + 1, x.rank());
  const int64_t row = x.dim(axis) * inner;
  // Unused outputs have no tensor to read a size from: the sizes come from inference.
  InferCtx ictx{ctx.node, {TensorType{x.dtype(), x.shape()}}, {nullptr}};
  if (ctx.has_input(1)) {
    ictx.in.push_back(TensorType{ctx.input(1).dtype(), ctx.input(1).shape()});
    ictx.values.push_back(host_input(ctx, 1));
    EMBER_CHECK(ictx.values[1], Internal, "[Split] node '", ctx.node.name, "': split is not known on the host");
  }
  std::vector<TensorType> types = op_def(OpType::Split).infer(ictx);
  int64_t at = 0;
  for (size_t k = 0; k < types.size(); k++) {
    const int64_t block = types[k].shape[axis] * inner;
    if (ctx.has_output((int)k))
      copy_box(ctx, ctx.output((int)k).data(), x.ptr<const char>() + at * es, split_part_dims(outer, block, row), es);
    at += block;
  }
  check_launch("[split] strided copy");
}

bool split_cuda_supports(const InferCtx& ctx, const DeviceOptions&) {
  return movable(ctx.in[0].dtype) && (!ctx.has(1) || ctx.value(1));
}

// ---- Gather, GatherElements -------------------------------------------------------------------

void gather_cuda(const KernelCtx& ctx) {
  const Tensor& x = ctx.input(0);
  const Tensor& idx = ctx.input(1);
  const int axis = normalize_axis(ctx.node.attrs.get_int("axis", 0), x.rank());
  const int64_t outer = shape_prod(x.shape(), 0, axis), dim = x.dim(axis);
  const int64_t inner = shape_prod(x.shape(), axis + 1, x.rank());
  Scratch err(ctx, 2 * sizeof(unsigned long long));
  movement_gather(ctx.output(0).data(), x.data(), idx.data(), idx.dtype() == DType::I64, outer, dim, inner,
                  idx.numel(), elem_bytes(x), err.as<unsigned long long>(), stream(ctx));
  check_launch("[gather] gather");
  check_index_flag(ctx, err, [&](int64_t v) {
    fail(ErrorKind::Input, "[Gather] node '", ctx.node.name, "': index ", v, " is out of range for axis ",
         axis, " of size ", dim);
  });
}

bool gather_cuda_supports(const InferCtx& ctx, const DeviceOptions&) {
  DType it = ctx.in[1].dtype;
  return movable(ctx.in[0].dtype) && (it == DType::I64 || it == DType::I32);
}

void gather_elements_cuda(const KernelCtx& ctx) {
  const Tensor& x = ctx.input(0);
  const Tensor& idx = ctx.input(1);
  const int axis = normalize_axis(ctx.node.attrs.get_int("axis", 0), x.rank());
  GatherElementsPlan plan;
  EMBER_CHECK(gather_elements_plan(x.shape(), idx.shape(), axis, &plan), Internal, "[GatherElements] node '",
              ctx.node.name, "': rank over ", kMoveMaxDims);
  Scratch err(ctx, 2 * sizeof(unsigned long long));
  movement_gather_elements(ctx.output(0).data(), x.data(), idx.data(), idx.dtype() == DType::I64, plan,
                           elem_bytes(x), err.as<unsigned long long>(), stream(ctx));
  check_launch("[gather_elements] gather");
  check_index_flag(ctx, err, [&](int64_t v) {
    fail(ErrorKind::Input, "[GatherElements] node '", ctx.node.name, "': index ", v,
         " is out of range for a dim of size ", x.dim(axis));
  });
}

bool gather_elements_cuda_supports(const InferCtx& ctx, const DeviceOptions&) {
  DType it = ctx.in[1].dtype;
  return movable(ctx.in[0].dtype) && (it == DType::I64 || it == DType::I32) &&
         (int)ctx.in[0].shape.size() <= kMoveMaxDims;
}

// ---- Pad (constant mode), Trilu ---------------------------------------------------------------

void pad_cuda(const KernelCtx& ctx) {
  const Tensor& x = ctx.input(0);
  Tensor& y = ctx.output(0);
  std::vector<int64_t> pads = host_ints(ctx, 1, "pads"), axes, begin, out;
  if (ctx.has_input(3)) axes = host_ints(ctx, 3, "axes");
  std::string err = pad_resolve_constant(x.shape(), pads, ctx.has_input(3) ? &axes : nullptr, &begin, &out);
  EMBER_CHECK(err.empty() && out == y.shape(), Input, "[Pad] node '", ctx.node.name, "': ",
              err.empty() ? "pads changed since planning" : err);
  PadPlan plan;
  EMBER_CHECK(pad_plan(x.shape(), begin, out, &plan), Internal, "[Pad] node '", ctx.node.name,
              "': more than ", kMoveMaxDims, " padded dims");
  const void* value = ctx.has_input(2) && ctx.input(2).numel() == 1 ? ctx.input(2).data() : nullptr;
  movement_pad_constant(y.data(), x.data(), value, plan, elem_bytes(x), stream(ctx));
  check_launch("[pad] constant pad");
}

bool pad_cuda_supports(const InferCtx& ctx, const DeviceOptions&) {
  if (!movable(ctx.in[0].dtype) || ctx.node.attrs.get_string("mode", "constant") != "constant") return false;
  const Tensor* pads = ctx.value(1);
  const Tensor* axes = ctx.has(3) ? ctx.value(3) : nullptr;
  if (!pads || (ctx.has(3) && !axes)) return false;
  std::vector<int64_t> p = tensor_to_i64_vector(*pads), a, begin, out;
  if (axes) a = tensor_to_i64_vector(*axes);
  PadPlan plan;
  return pad_resolve_constant(ctx.in[0].shape, p, axes ? &a : nullptr, &begin, &out).empty() &&
         pad_plan(ctx.in[0].shape, begin, out, &plan);
}

void trilu_cuda(const KernelCtx& ctx) {
  const Tensor& x = ctx.input(0);
  int64_t k = ctx.has_input(1) ? host_ints(ctx, 1, "k").at(0) : 0;
  const bool upper = ctx.node.attrs.get_int("upper", 1) != 0;
  const int64_t m = x.dim(-2), n = x.dim(-1);
  k = std::clamp<int64_t>(k, -(m + n), m + n);  // as the reference: past this all rows are alike
  const int64_t batch = (m == 0 || n == 0) ? 0 : x.numel() / (m * n);
  movement_trilu(ctx.output(0).data(), x.data(), batch, m, n, k, upper, elem_bytes(x), stream(ctx));
  check_launch("[trilu] mask copy");
}

bool trilu_cuda_supports(const InferCtx& ctx, const DeviceOptions&) {
  return movable(ctx.in[0].dtype) && (!ctx.has(1) || ctx.value(1));
}

// ---- Rope -------------------------------------------------------------------------------------

void rope_cuda(const KernelCtx& ctx) {
  const Attrs& at = ctx.node.attrs;
  const Tensor& x = ctx.input(0);
  const Tensor& pos = ctx.input(1);
  const Tensor& inv_freq = ctx.input(2);
  movement_rope_f32(ctx.output(0).ptr<float>(), x.ptr<const float>(), pos.data(), pos.dtype() == DType::I64,
                    inv_freq.ptr<const float>(), x.dim(0), at.get_int("num_heads", 0), at.get_int("head_dim", 0),
                    inv_freq.numel(), at.get_int("interleaved", 0) != 0, stream(ctx));
  check_launch("[rope] rotary embedding");
}

bool rope_cuda_supports(const InferCtx& ctx, const DeviceOptions&) {
  DType pt = ctx.in[1].dtype;
  return ctx.in[0].dtype == DType::F32 && ctx.in[2].dtype == DType::F32 &&
         (pt == DType::I64 || pt == DType::I32);
}

}  // namespace ember::cuda
