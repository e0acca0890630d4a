// CumSum (prefix sums along an axis) and GatherND (index tuples into leading dims): ops
// that real exports (HF BERT/GPT-2 position ids, dynamo attention masks) emit beside the
// core set.
#include "ops/op_util.h"

namespace ember {
namespace {

// ---- CumSum -----------------------------------------------------------------------------

std::vector<TensorType> infer_cumsum(const InferCtx& ctx) {
  if (ctx.in[1].dtype != DType::I32 && ctx.in[1].dtype != DType::I64)
    ctx.fail("axis must be int32 or int64");
  if (shape_numel(ctx.in[1].shape) != 1) ctx.fail("axis must hold one value");
  if (ctx.in[0].dtype == DType::Bool) ctx.fail("input cannot be bool");
  return one(ctx.in[0].dtype, ctx.in[0].shape);
}

void ref_cumsum(const KernelCtx& ctx) {
  const Tensor& x = ctx.input(0);
  Tensor& out = ctx.output(0);
  int rank = x.rank();
  int64_t axis = tensor_get_i64(ctx.input(1), 0);
  EMBER_CHECK(axis >= -rank && axis < rank && rank > 0, Input, "[CumSum] node '", ctx.node.name,
              "': axis ", axis, " out of range for rank ", rank);
  if (axis < 0) axis += rank;
  bool exclusive = ctx.node.attrs.get_int("exclusive", 0) != 0;
  bool reverse = ctx.node.attrs.get_int("reverse", 0) != 0;
  int64_t n = x.dim((int)axis), inner = 1, outer = 1;
  for (int d = (int)axis + 1; d < rank; d++) inner *= x.dim(d);
  for (int d = 0; d < axis; d++) outer *= x.dim(d);
  dispatch_dtype(x.dtype(), [&](auto t) {
    using T = decltype(t);
    if constexpr (!std::is_same_v<T, bool>) {
      const T* px = x.ptr<T>();  // [outer, n, inner]
      T* po = out.ptr<T>();
      // Integers accumulate in uint64: they wrap like numpy instead of overflowing (UB).
      using A = std::conditional_t<std::is_integral_v<T>, uint64_t, compute_t<T>>;
      auto put = [&](int64_t off, A acc) {
        if constexpr (std::is_integral_v<T>) po[off] = (T)(int64_t)acc;
        else store(po, off, acc);
      };
      for (int64_t o = 0; o < outer; o++) {
        for (int64_t i = 0; i < inner; i++) {
          A acc = 0;
          for (int64_t k = 0; k < n; k++) {
            int64_t j = reverse ? n - 1 - k : k;
            int64_t off = (o * n + j) * inner + i;
            A v;
            if constexpr (std::is_integral_v<T>) v = (A)(int64_t)px[off];
            else v = load(px, off);
            if (exclusive) {
              put(off, acc);
              acc += v;
            } else {
              acc += v;
              put(off, acc);
            }
          }
        }
      }
    }
  });
}

// ---- GatherND ---------------------------------------------------------------------------

std::vector<TensorType> infer_gather_nd(const InferCtx& ctx) {
  const Shape& data = ctx.in[0].shape;
  const Shape& idx = ctx.in[1].shape;
  int64_t b = ctx.node.attrs.get_int("batch_dims", 0);
  if (ctx.in[1].dtype != DType::I64) ctx.fail("indices must be int64");
  if (idx.empty()) ctx.fail("indices must have rank >= 1");
  int64_t m = idx.back();
  if (b < 0 || b >= (int64_t)std::min(data.size(), idx.size()))
    ctx.fail("batch_dims ", b, " out of range");
  if (m < 1 || b + m > (int64_t)data.size())
    ctx.fail("index tuples of length ", m, " do not fit data of rank ", data.size());
  for (int64_t d = 0; d < b; d++)
    if (data[d] != idx[d]) ctx.fail("batch dim ", d, " differs: ", data[d], " vs ", idx[d]);
  Shape out(idx.begin(), idx.end() - 1);
  out.insert(out.end(), data.begin() + b + m, data.end());
  return one(ctx.in[0].dtype, out);
}

void ref_gather_nd(const KernelCtx& ctx) {
  const Tensor& data = ctx.input(0);
  const Tensor& idx = ctx.input(1);
  Tensor& out = ctx.output(0);
  int64_t b = ctx.node.attrs.get_int("batch_dims", 0);
  int64_t m = idx.dim(-1);
  int64_t batch = 1, slice = 1;
  for (int64_t d = 0; d < b; d++) batch *= data.dim((int)d);
  for (int d = (int)(b + m); d < data.rank(); d++) slice *= data.dim(d);
  int64_t tuples = idx.numel() / std::max<int64_t>(m, 1) / std::max<int64_t>(batch, 1);
  int64_t per_batch = data.numel() / std::max<int64_t>(batch, 1);  // elements per batch entry
  size_t es = dtype_size(data.dtype());
  const int64_t* pi = idx.ptr<int64_t>();  // [batch, tuples, m]
  const char* pd = static_cast<const char*>(data.data());
  char* po = static_cast<char*>(out.data());
  for (int64_t bi = 0; bi < batch; bi++) {
    for (int64_t t = 0; t < tuples; t++) {
      const int64_t* tuple = pi + (bi * tuples + t) * m;
      int64_t off = 0;
      for (int64_t k = 0; k < m; k++) {
        int64_t dim = data.dim((int)(b + k));
        int64_t v = tuple[k];
        EMBER_CHECK(v >= -dim && v < dim, Input, "[GatherND] node '", ctx.node.name, "': index ",
                    v, " out of range for dim ", b + k, " of size ", dim);
        off = off * dim + (v < 0 ? v + dim : v);
      }
      std::memcpy(po + ((bi * tuples + t) * slice) * es, pd + (bi * per_batch + off * slice) * es,
                  (size_t)slice * es);
    }
  }
}

}  // namespace

static const OpDef kOps[] = {
    {OpType::CumSum, "CumSum", 2, 2, 1, 1, 0,
     {{"exclusive", AttrKind::Bool}, {"reverse", AttrKind::Bool}}, infer_cumsum, ref_cumsum},
    {OpType::GatherND, "GatherND", 2, 2, 1, 1, 0, {{"batch_dims", AttrKind::Int}},
     infer_gather_nd, ref_gather_nd},
};

std::span<const OpDef> op_defs_scan() { return kOps; }

}  // namespace ember
