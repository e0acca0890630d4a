// Tensor manipulation, part 1: ReduceMin/ReduceProd/ReduceL2 (axes as in ops_reduce.cpp),
// ArgMax/ArgMin, Tile, Pad, DepthToSpace, SpaceToDepth. References are scalar loops over the
// output's multi-index; data movement copies raw bytes so every element dtype works. Index
// ops (GatherElements, Scatter*, OneHot, Einsum) live in ops_tensor_index.cpp.
#include <limits>

#include "ops/op_util.h"

namespace ember {
namespace {

// ---- ReduceMin / ReduceProd / ReduceL2 ------------------------------------------------------
// Same axes rules as ops_reduce.cpp (reduce_axes, reduced_shape in op_util.h).

template <class T>
void red_typed(OpType op, const Tensor& x, const ReduceAxes& r, Tensor& out) {
  const T* px = x.ptr<T>();
  T* po = out.ptr<T>();
  int64_t n_out = out.numel();
  Shape st = reduce_out_strides(x.shape(), r);
  if constexpr (std::is_same_v<T, bool>) {
    std::vector<uint8_t> acc(n_out, 1);  // Min over bools is AND; empty set: true
    int64_t i = 0;
    for (BroadcastIter it(x.shape(), {st}); !it.done(); it.next(), i++) acc[it.off[0]] &= (uint8_t)px[i];
    for (int64_t o = 0; o < n_out; o++) po[o] = acc[o] != 0;
  } else if constexpr (is_float_v<T>) {
    double init = op == OpType::ReduceMin ? INFINITY : op == OpType::ReduceProd ? 1.0 : 0.0;
    std::vector<double> acc(n_out, init);
    int64_t i = 0;
    for (BroadcastIter it(x.shape(), {st}); !it.done(); it.next(), i++) {
      double v = (double)load(px, i);
      double& a = acc[it.off[0]];
      if (op == OpType::ReduceMin) {
        if (v < a || std::isnan(v)) a = v;
      } else if (op == OpType::ReduceProd) {
        a *= v;
      } else {
        a += v * v;
      }
    }
    for (int64_t o = 0; o < n_out; o++)
      store(po, o, (compute_t<T>)(op == OpType::ReduceL2 ? std::sqrt(acc[o]) : acc[o]));
  } else {
    std::vector<uint64_t> acc(n_out, op == OpType::ReduceMin ? (uint64_t)(int64_t)std::numeric_limits<T>::max()
                                     : op == OpType::ReduceProd ? 1 : 0);
    int64_t i = 0;
    for (BroadcastIter it(x.shape(), {st}); !it.done(); it.next(), i++) {
      int64_t v = (int64_t)px[i];
      uint64_t& a = acc[it.off[0]];
      if (op == OpType::ReduceMin) a = (uint64_t)std::min((int64_t)a, v);
      else if (op == OpType::ReduceProd) a *= (uint64_t)v;  // wraps like numpy
      else a += (uint64_t)(int64_t)(T)(uint64_t)((uint64_t)v * (uint64_t)v);  // np.square wraps in T
    }
    for (int64_t o = 0; o < n_out; o++) {
      if (op == OpType::ReduceL2) {
        // numpy: squares in the element type, summed in int64, sqrt in double, truncated.
        double s = (double)(int64_t)acc[o];
        po[o] = s > 0 ? (T)std::min(std::sqrt(s), (double)std::numeric_limits<T>::max()) : (T)0;
      } else {
        po[o] = (T)(int64_t)acc[o];
      }
    }
  }
}

void ref_red(const KernelCtx& ctx) {
  const Tensor& x = ctx.input(0);
  Tensor& out = ctx.output(0);
  ReduceAxes r = reduce_axes(ctx.node, x.rank(), ctx.has_input(1) ? &ctx.input(1) : nullptr);
  if (!r.error.empty())
    fail(ErrorKind::Model, "[", op_name(ctx.node.op), "] node '", ctx.node.name, "': ", r.error);
  // noop: the identity, except L2 (sqrt of ReduceSumSquare, which squares in its noop case).
  if (r.noop && ctx.node.op != OpType::ReduceL2) {
    if (x.nbytes()) std::memcpy(out.data(), x.data(), x.nbytes());
    return;
  }
  if (r.noop) r.mask.assign(x.rank(), false);
  dispatch_dtype(x.dtype(), [&](auto t) {
    using T = decltype(t);
    if constexpr (std::is_same_v<T, int16_t>) {
      fail(ErrorKind::Model, "[", op_name(ctx.node.op), "] unsupported dtype ", dtype_name(x.dtype()));
    } else {
      red_typed<T>(ctx.node.op, x, r, out);
    }
  });
}

const std::vector<AttrSpec> kReduceAttrs = {
    {"axes", AttrKind::Ints}, {"keepdims", AttrKind::Bool}, {"noop_with_empty_axes", AttrKind::Bool}};

// ---- ArgMax / ArgMin ----------------------------------------------------------------------

std::vector<TensorType> infer_arg(const InferCtx& ctx) {
  DType t = ctx.in[0].dtype;
  if (t == DType::Bool || dtype_size(t) == 0) ctx.fail("unsupported dtype ", dtype_name(t));
  Shape s = ctx.in[0].shape;
  int r = (int)s.size();
  if (r == 0) ctx.fail("input must have rank >= 1");
  int axis = normalize_axis(ctx, ctx.node.attrs.get_int("axis", 0), r);
  if (s[axis] == 0) ctx.fail("axis ", axis, " has size 0");
  if (ctx.node.attrs.get_int("keepdims", 1) != 0) s[axis] = 1;
  else s.erase(s.begin() + axis);
  return one(DType::I64, s);
}

template <class T>
void arg_typed(const KernelCtx& ctx, int axis) {
  const Tensor& x = ctx.input(0);
  const T* px = x.ptr<T>();
  int64_t* py = ctx.output(0).ptr<int64_t>();
  bool is_max = ctx.node.op == OpType::ArgMax;
  bool last = ctx.node.attrs.get_int("select_last_index", 0) != 0;
  int64_t outer = shape_prod(x.shape(), 0, axis), n = x.dim(axis), inner = shape_prod(x.shape(), axis + 1, x.rank());
  using C = compute_t<T>;
  // NaN ranks above every number for both (numpy's argmax and argmin both pick the first NaN).
  auto cmp = [&](C a, C b) -> int {  // > 0 when a beats b
    if constexpr (is_float_v<T>) {
      bool na = std::isnan((double)a), nb = std::isnan((double)b);
      if (na || nb) return na == nb ? 0 : (na ? 1 : -1);
    }
    if (a == b) return 0;
    return (is_max ? a > b : a < b) ? 1 : -1;
  };
  for (int64_t o = 0; o < outer; o++)
    for (int64_t i = 0; i < inner; i++) {
      const T* p = px + o * n * inner + i;
      int64_t best = 0;
      C bv = load(p, 0);
      for (int64_t k = 1; k < n; k++) {
        C v = load(p, k * inner);
        int c = cmp(v, bv);
        if (c > 0 || (c == 0 && last)) {
          best = k;
          bv = v;
        }
      }
      py[o * inner + i] = best;
    }
}

void ref_arg(const KernelCtx& ctx) {
  const Tensor& x = ctx.input(0);
  int axis = normalize_axis(ctx.node.attrs.get_int("axis", 0), x.rank());
  dispatch_dtype(x.dtype(), [&](auto t) {
    using T = decltype(t);
    if constexpr (std::is_same_v<T, bool>) {
      fail(ErrorKind::Model, "[", op_name(ctx.node.op), "] unsupported dtype bool");
    } else {
      arg_typed<T>(ctx, axis);
    }
  });
}

// ---- Tile ---------------------------------------------------------------------------------

std::vector<TensorType> infer_tile(const InferCtx& ctx) {
  elem_size(ctx, 0);
  const Shape& s = ctx.in[0].shape;
  std::vector<int64_t> reps = int_values(ctx, 1, "repeats", false);
  if (reps.size() != s.size())
    ctx.fail("repeats has ", reps.size(), " entries for an input of rank ", s.size());
  Shape out(s.size());
  for (size_t d = 0; d < s.size(); d++) {
    if (reps[d] < 0) ctx.fail("repeats ", shape_str(reps), " has a negative entry");
    if (__builtin_mul_overflow(s[d], reps[d], &out[d]))
      ctx.fail("dim ", d, " (", s[d], ") times ", reps[d], " overflows int64");
  }
  return one(ctx.in[0].dtype, out);
}

void ref_tile(const KernelCtx& ctx) {
  const Tensor& x = ctx.input(0);
  Tensor& y = ctx.output(0);
  size_t es = dtype_size(x.dtype());
  Shape xs = contiguous_strides(x.shape());
  const char* px = x.ptr<const char>();
  char* py = y.ptr<char>();
  int64_t o = 0;
  for_each_index(y.shape(), [&](const std::vector<int64_t>& idx) {
    int64_t src = 0;
    for (int d = 0; d < x.rank(); d++) src += (idx[d] % x.dim(d)) * xs[d];
    std::memcpy(py + o * es, px + src * es, es);
    o++;
  });
}

// ---- Pad ----------------------------------------------------------------------------------

enum class PadMode { Constant, Reflect, Edge, Wrap };

struct PadSpec {
  PadMode mode = PadMode::Constant;
  std::vector<int64_t> begin;  // per data dim; negative crops
  Shape out;
  std::string error;
};

PadSpec pad_resolve(const Node& node, const Shape& s, const std::vector<int64_t>& pads,
                    const std::vector<int64_t>* axes_in) {
  PadSpec p;
  std::string m = node.attrs.get_string("mode", "constant");
  if (m == "constant") p.mode = PadMode::Constant;
  else if (m == "reflect") p.mode = PadMode::Reflect;
  else if (m == "edge") p.mode = PadMode::Edge;
  else if (m == "wrap") p.mode = PadMode::Wrap;
  else {
    p.error = str_cat("unknown mode '", m, "'");
    return p;
  }
  int r = (int)s.size();
  std::vector<int64_t> axes;
  if (axes_in) axes = *axes_in;
  else for (int d = 0; d < r; d++) axes.push_back(d);
  if (pads.size() != 2 * axes.size()) {
    p.error = str_cat("pads has ", pads.size(), " entries for ", axes.size(), " axes");
    return p;
  }
  p.begin.assign(r, 0);
  std::vector<int64_t> end(r, 0);
  std::vector<bool> seen(r, false);
  for (size_t i = 0; i < axes.size(); i++) {
    int64_t a = axes[i];
    if (a < -r || a >= r) {
      p.error = str_cat("axis ", a, " out of range for rank ", r);
      return p;
    }
    int d = (int)(a < 0 ? a + r : a);
    if (seen[d]) {
      p.error = str_cat("axis ", a, " appears twice");
      return p;
    }
    seen[d] = true;
    p.begin[d] = pads[i];
    end[d] = pads[axes.size() + i];
  }
  p.out.resize(r);
  for (int d = 0; d < r; d++) {
    int64_t v;
    if (__builtin_add_overflow(s[d], p.begin[d], &v) || __builtin_add_overflow(v, end[d], &v) || v < 0) {
      p.error = str_cat("pads ", shape_str(pads), " give dim ", d, " (", s[d], ") a negative or overflowing size");
      return p;
    }
    if (p.mode != PadMode::Constant && s[d] == 0 && v > 0) {
      p.error = str_cat("cannot pad an empty dim ", d, " in mode '", m, "'");
      return p;
    }
    p.out[d] = v;
  }
  return p;
}

std::vector<TensorType> infer_pad(const InferCtx& ctx) {
  elem_size(ctx, 0);
  std::vector<int64_t> pads = int_values(ctx, 1, "pads", false);
  std::vector<int64_t> axes;
  if (ctx.has(3)) axes = int_values(ctx, 3, "axes", true);
  if (ctx.has(2)) {
    if (ctx.in[2].dtype != ctx.in[0].dtype)
      ctx.fail("constant_value is ", dtype_name(ctx.in[2].dtype), ", data is ", dtype_name(ctx.in[0].dtype));
    if (shape_numel(ctx.in[2].shape) != 1) ctx.fail("constant_value must hold one element");
  }
  PadSpec p = pad_resolve(ctx.node, ctx.in[0].shape, pads, ctx.has(3) ? &axes : nullptr);
  if (!p.error.empty()) ctx.fail(p.error);
  return one(ctx.in[0].dtype, p.out);
}

// Source index along a dim of size n for padded position j (outside [0, n)); -1: constant.
int64_t pad_source(PadMode mode, int64_t j, int64_t n) {
  switch (mode) {
    case PadMode::Constant: return -1;
    case PadMode::Edge: return j < 0 ? 0 : n - 1;
    case PadMode::Wrap: return ((j % n) + n) % n;
    case PadMode::Reflect: {
      if (n == 1) return 0;
      int64_t period = 2 * (n - 1);
      int64_t k = ((j % period) + period) % period;
      return k < n ? k : period - k;
    }
  }
  return -1;
}

std::vector<int64_t> kernel_ints(const KernelCtx& ctx, int i) {
  const Tensor& t = ctx.input(i);
  if ((t.dtype() != DType::I64 && t.dtype() != DType::I32) || t.rank() > 1)
    fail(ErrorKind::Input, "[", op_name(ctx.node.op), "] node '", ctx.node.name, "': input ", i,
         " must be a 1-D int tensor");
  return tensor_to_i64_vector(t);
}

void ref_pad(const KernelCtx& ctx) {
  const Tensor& x = ctx.input(0);
  Tensor& y = ctx.output(0);
  std::vector<int64_t> pads = kernel_ints(ctx, 1), axes;
  bool has_axes = ctx.has_input(3);
  if (has_axes) axes = kernel_ints(ctx, 3);
  PadSpec p = pad_resolve(ctx.node, x.shape(), pads, has_axes ? &axes : nullptr);
  if (!p.error.empty() || p.out != y.shape())
    fail(ErrorKind::Input, "[Pad] node '", ctx.node.name, "': ", p.error.empty() ? "pads changed since planning" : p.error);
  size_t es = dtype_size(x.dtype());
  std::vector<char> cval(es, 0);
  if (ctx.has_input(2) && ctx.input(2).numel() == 1) std::memcpy(cval.data(), ctx.input(2).data(), es);
  Shape xs = contiguous_strides(x.shape());
  const char* px = x.ptr<const char>();
  char* py = y.ptr<char>();
  int64_t o = 0;
  for_each_index(y.shape(), [&](const std::vector<int64_t>& idx) {
    int64_t src = 0;
    bool constant = false;
    for (int d = 0; d < x.rank() && !constant; d++) {
      int64_t j = idx[d] - p.begin[d], n = x.dim(d);
      if (j < 0 || j >= n) j = pad_source(p.mode, j, n);
      if (j < 0) constant = true;
      else src += j * xs[d];
    }
    std::memcpy(py + o * es, constant ? cval.data() : px + src * es, es);
    o++;
  });
}

// ---- DepthToSpace / SpaceToDepth ----------------------------------------------------------

int64_t block_of(const InferCtx& ctx, int64_t* bb) {
  int64_t b = ctx.node.attrs.get_int("blocksize", 0);
  if (b <= 0 || __builtin_mul_overflow(b, b, bb)) ctx.fail("blocksize must be positive, got ", b);
  return b;
}

std::vector<TensorType> infer_d2s(const InferCtx& ctx) {
  elem_size(ctx, 0);
  const Shape& s = ctx.in[0].shape;
  if (s.size() != 4) ctx.fail("input must be 4-D, got ", shape_str(s));
  int64_t bb, b = block_of(ctx, &bb);
  std::string mode = ctx.node.attrs.get_string("mode", "DCR");
  if (mode != "DCR" && mode != "CRD") ctx.fail("unknown mode '", mode, "'");
  if (s[1] % bb != 0) ctx.fail("channels ", s[1], " are not a multiple of blocksize^2 = ", bb);
  Shape out = {s[0], s[1] / bb, 0, 0};
  if (__builtin_mul_overflow(s[2], b, &out[2]) || __builtin_mul_overflow(s[3], b, &out[3]))
    ctx.fail("output size overflows int64");
  return one(ctx.in[0].dtype, out);
}

std::vector<TensorType> infer_s2d(const InferCtx& ctx) {
  elem_size(ctx, 0);
  const Shape& s = ctx.in[0].shape;
  if (s.size() != 4) ctx.fail("input must be 4-D, got ", shape_str(s));
  int64_t bb, b = block_of(ctx, &bb);
  std::string mode = ctx.node.attrs.get_string("mode", "DCR");  // opset 28
  if (mode != "DCR" && mode != "CRD") ctx.fail("unknown mode '", mode, "'");
  if (s[2] % b != 0 || s[3] % b != 0)
    ctx.fail("spatial dims ", s[2], "x", s[3], " are not multiples of blocksize ", b);
  Shape out = {s[0], 0, s[2] / b, s[3] / b};
  if (__builtin_mul_overflow(s[1], bb, &out[1])) ctx.fail("output size overflows int64");
  return one(ctx.in[0].dtype, out);
}

// Both move [N, C, H, W] <-> [N, C/bb, H*b, W*b]; `small` is the space-side (big spatial) tensor.
// Channel of the depth side for (c, bh, bw): DCR: (bh*b + bw)*C' + c; CRD: c*bb + bh*b + bw.
void depth_space_copy(const KernelCtx& ctx, bool to_space) {
  const Tensor& x = ctx.input(0);
  Tensor& y = ctx.output(0);
  int64_t b = ctx.node.attrs.get_int("blocksize", 1);
  bool dcr = ctx.node.attrs.get_string("mode", "DCR") == "DCR";
  const Tensor& sp = to_space ? y : x;  // [N, C', H*b, W*b]
  const Tensor& dp = to_space ? x : y;  // [N, C'*bb, H, W]
  int64_t N = sp.dim(0), Cs = sp.dim(1), H = dp.dim(2), W = dp.dim(3), Cd = dp.dim(1);
  size_t es = dtype_size(x.dtype());
  const char* src = x.ptr<const char>();
  char* dst = y.ptr<char>();
  for (int64_t n = 0; n < N; n++)
    for (int64_t c = 0; c < Cs; c++)
      for (int64_t h = 0; h < H; h++)
        for (int64_t bh = 0; bh < b; bh++)
          for (int64_t w = 0; w < W; w++)
            for (int64_t bw = 0; bw < b; bw++) {
              int64_t cd = dcr ? (bh * b + bw) * Cs + c : c * b * b + bh * b + bw;
              int64_t di = ((n * Cd + cd) * H + h) * W + w;
              int64_t si = ((n * Cs + c) * (H * b) + h * b + bh) * (W * b) + w * b + bw;
              if (to_space) std::memcpy(dst + si * es, src + di * es, es);
              else std::memcpy(dst + di * es, src + si * es, es);
            }
}

void ref_d2s(const KernelCtx& ctx) { depth_space_copy(ctx, true); }
void ref_s2d(const KernelCtx& ctx) { depth_space_copy(ctx, false); }

}  // namespace

static const OpDef kOps[] = {
    {OpType::ReduceMin, "ReduceMin", 1, 2, 1, 1, 0, kReduceAttrs, infer_reduce, ref_red},
    {OpType::ReduceProd, "ReduceProd", 1, 2, 1, 1, 0, kReduceAttrs, infer_reduce, ref_red},
    {OpType::ReduceL2, "ReduceL2", 1, 2, 1, 1, 0, kReduceAttrs, infer_reduce, ref_red},
    {OpType::ArgMax, "ArgMax", 1, 1, 1, 1, 0,
     {{"axis", AttrKind::Int}, {"keepdims", AttrKind::Bool}, {"select_last_index", AttrKind::Bool}},
     infer_arg, ref_arg},
    {OpType::ArgMin, "ArgMin", 1, 1, 1, 1, 0,
     {{"axis", AttrKind::Int}, {"keepdims", AttrKind::Bool}, {"select_last_index", AttrKind::Bool}},
     infer_arg, ref_arg},
    {OpType::Tile, "Tile", 2, 2, 1, 1, 0, {}, infer_tile, ref_tile},
    {OpType::Pad, "Pad", 2, 4, 1, 1, 0, {{"mode", AttrKind::String}}, infer_pad, ref_pad},
    {OpType::DepthToSpace, "DepthToSpace", 1, 1, 1, 1, 0,
     {{"blocksize", AttrKind::Int, true}, {"mode", AttrKind::String}}, infer_d2s, ref_d2s},
    {OpType::SpaceToDepth, "SpaceToDepth", 1, 1, 1, 1, 0,
     {{"blocksize", AttrKind::Int, true}, {"mode", AttrKind::String}},
     infer_s2d, ref_s2d},
};

std::span<const OpDef> op_defs_tensor() { return kOps; }

}  // namespace ember
