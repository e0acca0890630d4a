// MaxPool (optional int64 Indices) and AveragePool over any number of spatial dims, with
// explicit or automatic padding, strides, dilations and ceil_mode. Output sizes follow
// onnx.reference (PyTorch's rule: with ceil_mode the last window must start inside the input
// or its begin padding). References only: scalar loops, sums in double.
#include <type_traits>

#include "ops/op_util.h"
#include "ops/pool_geom.h"

namespace ember {
namespace {

// Kernel sizes, strides, dilations and pads above this are refused, so every window and
// output-size expression stays far inside int64.
constexpr int64_t kMaxPoolAttr = int64_t(1) << 31;

std::vector<int64_t> attr_ints(const InferCtx& ctx, const char* name, int n, int64_t def,
                               int64_t lo) {
  std::vector<int64_t> v = ctx.node.attrs.get_ints(name);
  if (v.empty() && !ctx.node.attrs.has(name)) v.assign(n, def);
  if ((int)v.size() != n) ctx.fail(name, " has ", v.size(), " values, expected ", n);
  for (int64_t x : v)
    if (x < lo || x > kMaxPoolAttr) ctx.fail(name, " value ", x, " is out of range");
  return v;
}

}  // namespace

PoolGeom pool_geom(const InferCtx& ctx, const Shape& x) {
  if (x.size() < 3) ctx.fail("X must have rank >= 3 ([N, C, spatial...]), got ", shape_str(x));
  PoolGeom g;
  g.nsp = (int)x.size() - 2;
  g.in.assign(x.begin() + 2, x.end());
  if (!ctx.node.attrs.has("kernel_shape")) ctx.fail("kernel_shape is required");
  g.k = attr_ints(ctx, "kernel_shape", g.nsp, 1, 1);
  g.s = attr_ints(ctx, "strides", g.nsp, 1, 1);
  g.d = attr_ints(ctx, "dilations", g.nsp, 1, 1);
  std::vector<int64_t> pads = attr_ints(ctx, "pads", 2 * g.nsp, 0, 0);
  bool ceil_mode = ctx.node.attrs.get_int("ceil_mode", 0) != 0;
  std::string ap = ctx.node.attrs.get_string("auto_pad", "NOTSET");
  if (ap != "NOTSET" && ap != "VALID" && ap != "SAME_UPPER" && ap != "SAME_LOWER")
    ctx.fail("auto_pad '", ap, "' is not supported");
  int64_t kvol = 1;
  for (int64_t k : g.k)
    if (__builtin_mul_overflow(kvol, k, &kvol)) ctx.fail("kernel_shape volume overflows");
  g.pb.assign(g.nsp, 0);
  g.pe.assign(g.nsp, 0);
  g.out.assign(g.nsp, 0);
  for (int i = 0; i < g.nsp; i++) {
    int64_t in = g.in[i], s = g.s[i];
    int64_t win = (g.k[i] - 1) * g.d[i] + 1;  // <= 2^62
    int64_t o = 0;
    if (ap == "NOTSET") {
      g.pb[i] = pads[i];
      g.pe[i] = pads[g.nsp + i];
      int64_t span = in + g.pb[i] + g.pe[i] - win;  // no overflow: in <= 2^62, pads <= 2^31
      if (span < 0) ctx.fail("kernel window ", win, " is larger than padded input dim ", i);
      o = span / s + 1;
      if (ceil_mode && span % s != 0) {
        o++;
        if ((o - 1) * s >= in + g.pb[i]) o--;
      }
    } else if (ap == "VALID") {
      if (in < win) ctx.fail("kernel window ", win, " is larger than input dim ", i);
      o = (in - win) / s + 1;
    } else {
      o = in == 0 ? 0 : (in - 1) / s + 1;
      int64_t total = std::max<int64_t>(0, (o - 1) * s + win - in);
      int64_t half = total / 2;
      g.pb[i] = ap == "SAME_UPPER" ? half : total - half;
      g.pe[i] = total - g.pb[i];
    }
    g.out[i] = o;
  }
  return g;
}

namespace {

std::vector<TensorType> infer_pool(const InferCtx& ctx) {
  DType t = ctx.in[0].dtype;
  bool is_max = ctx.node.op == OpType::MaxPool;
  bool ok = t == DType::F32 || t == DType::F16 || t == DType::BF16 || t == DType::F64 ||
            (is_max && (t == DType::I8 || t == DType::U8));
  if (!ok) ctx.fail("input type ", dtype_name(t), " is not supported");
  const Shape& x = ctx.in[0].shape;
  PoolGeom g = pool_geom(ctx, x);
  Shape out = {x[0], x[1]};
  out.insert(out.end(), g.out.begin(), g.out.end());
  if (is_max) {
    int64_t so = ctx.node.attrs.get_int("storage_order", 0);
    if (so != 0 && so != 1) ctx.fail("storage_order must be 0 or 1, got ", so);
  }
  std::vector<TensorType> r = one(t, out);
  if (is_max && ctx.node.outputs.size() > 1) r.push_back({DType::I64, out});
  return r;
}

template <class T>
void pool_typed(const KernelCtx& ctx, const PoolGeom& g) {
  const Tensor& x = ctx.input(0);
  Tensor& y = ctx.output(0);
  bool is_max = ctx.node.op == OpType::MaxPool;
  bool include_pad = ctx.node.attrs.get_int("count_include_pad", 0) != 0;
  bool col_major = ctx.node.attrs.get_int("storage_order", 0) != 0;
  int64_t* pi = ctx.has_output(1) ? ctx.output(1).ptr<int64_t>() : nullptr;
  const T* px = x.ptr<T>();
  T* py = y.ptr<T>();
  int nsp = g.nsp;
  int64_t nc = x.dim(0) * x.dim(1);
  int64_t in_sz = shape_numel(g.in), out_sz = shape_numel(g.out);
  // Per output, the window is walked only over its taps inside the input ([lo, hi) per dim),
  // so hostile kernel sizes cost nothing; taps in the padding are counted analytically.
  std::vector<int64_t> o(nsp), kk(nsp), lo(nsp), hi(nsp);
  for (int64_t plane = 0; plane < nc; plane++) {
    const T* xp = px + plane * in_sz;
    std::fill(o.begin(), o.end(), 0);
    for (int64_t oi = 0; oi < out_sz; oi++) {
      double acc = 0.0;
      compute_t<T> best{};
      int64_t best_at = -1;
      double count = 1, padded_count = 1;  // double: padded windows can be huge
      bool empty = false;
      for (int i = 0; i < nsp; i++) {
        int64_t st = o[i] * g.s[i] - g.pb[i], d = g.d[i];  // first tap; st >= -pb
        lo[i] = st >= 0 ? 0 : (-st + d - 1) / d;
        hi[i] = g.in[i] - 1 - st >= 0 ? std::min(g.k[i], (g.in[i] - 1 - st) / d + 1) : 0;
        int64_t ph = g.in[i] + g.pe[i] - 1 - st >= 0
                         ? std::min(g.k[i], (g.in[i] + g.pe[i] - 1 - st) / d + 1) : 0;
        if (hi[i] <= lo[i]) empty = true;
        count *= (double)std::max<int64_t>(0, hi[i] - lo[i]);
        padded_count *= (double)ph;
        kk[i] = lo[i];
      }
      if (include_pad) count = padded_count;
      while (!empty) {
        int64_t flat = 0;
        for (int i = 0; i < nsp; i++)
          flat = flat * g.in[i] + o[i] * g.s[i] - g.pb[i] + kk[i] * g.d[i];
        compute_t<T> v = load(xp, flat);
        if (is_max) {
          if (best_at < 0 || v > best) {
            best = v;
            best_at = flat;
          }
        } else {
          acc += (double)v;
        }
        int i = nsp - 1;
        for (; i >= 0; i--) {
          if (++kk[i] < hi[i]) break;
          kk[i] = lo[i];
        }
        if (i < 0) break;
      }
      int64_t yi = plane * out_sz + oi;
      if (is_max) {
        store(py, yi, best_at < 0 ? compute_t<T>{} : best);
        if (pi) {
          int64_t idx = best_at;
          if (col_major && best_at >= 0) {
            // re-express the row-major spatial offset column-major
            int64_t rem = best_at, mul = 1;
            std::vector<int64_t> c(nsp);
            for (int i = nsp - 1; i >= 0; i--) {
              c[i] = rem % g.in[i];
              rem /= g.in[i];
            }
            idx = 0;
            for (int i = 0; i < nsp; i++) {
              idx += c[i] * mul;
              mul *= g.in[i];
            }
          }
          pi[yi] = best_at < 0 ? -1 : plane * in_sz + idx;
        }
      } else {
        store(py, yi, (compute_t<T>)(count > 0 ? acc / count : NAN));
      }
      for (int i = nsp - 1; i >= 0; i--) {
        if (++o[i] < g.out[i]) break;
        o[i] = 0;
      }
    }
  }
}

void ref_pool(const KernelCtx& ctx) {
  const Tensor& x = ctx.input(0);
  InferCtx ic{ctx.node, {{x.dtype(), x.shape()}}, {nullptr}};
  PoolGeom g = pool_geom(ic, x.shape());
  dispatch_dtype(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    if constexpr (is_float_v<T> || std::is_same_v<T, int8_t> || std::is_same_v<T, uint8_t>)
      pool_typed<T>(ctx, g);
    else
      fail(ErrorKind::Internal, "[", op_name(ctx.node.op), "] unsupported dtype");
  });
}

}  // namespace

static const OpDef kOps[] = {
    {OpType::MaxPool, "MaxPool", 1, 1, 1, 2, 0,
     {{"kernel_shape", AttrKind::Ints, true}, {"strides", AttrKind::Ints},
      {"pads", AttrKind::Ints}, {"dilations", AttrKind::Ints}, {"ceil_mode", AttrKind::Bool},
      {"auto_pad", AttrKind::String}, {"storage_order", AttrKind::Int}},
     infer_pool, ref_pool},
    {OpType::AveragePool, "AveragePool", 1, 1, 1, 1, 0,
     {{"kernel_shape", AttrKind::Ints, true}, {"strides", AttrKind::Ints},
      {"pads", AttrKind::Ints}, {"dilations", AttrKind::Ints}, {"ceil_mode", AttrKind::Bool},
      {"auto_pad", AttrKind::String}, {"count_include_pad", AttrKind::Bool}},
     infer_pool, ref_pool},
};

std::span<const OpDef> op_defs_pool() { return kOps; }

}  // namespace ember
