// Conv and ConvTranspose (1-D to 3-D; group, dilations, strides, pads, auto_pad; ConvTranspose
// also output_padding and output_shape, with pads derived as onnx.reference derives them).
// References are direct loops accumulating in double; ConvTranspose gathers (each output
// sums the inputs that scatter onto it), so no accumulation buffer is needed.
// Fast f32 Conv: kernels/generic/conv_f32.cpp.
// Conv attr precision "bf16" (float32 Conv in precision="bf16" CPU sessions; graph/fuse.cpp):
// X and W rounded to bf16, each output a float chain over its taps (c, k0, k1, k2) in pairs,
// odd tap first, as vdpbf16ps adds them (taps that read pad count as zeros), then + bias in
// float (kernels/generic/conv_bf16.cpp).
#include <vector>

#include "kernels/generic/conv_f32.h"
#include "ops/op_util.h"

namespace ember {
namespace {

bool is_float_dtype(DType t) {
  return t == DType::F32 || t == DType::F16 || t == DType::BF16 || t == DType::F64;
}

int64_t mul_checked(const InferCtx& ctx, int64_t a, int64_t b, const char* what) {
  int64_t r;
  if (__builtin_mul_overflow(a, b, &r)) ctx.fail(what, " overflows int64");
  return r;
}

int64_t add_checked(const InferCtx& ctx, int64_t a, int64_t b, const char* what) {
  int64_t r;
  if (__builtin_add_overflow(a, b, &r)) ctx.fail(what, " overflows int64");
  return r;
}

int64_t floor_div2(int64_t a) { return a >= 0 ? a / 2 : -((-a + 1) / 2); }

// An ints attribute of `n` values, each >= lo; `def` fills an absent one.
std::vector<int64_t> ints_attr(const InferCtx& ctx, const char* name, size_t n, int64_t def,
                               int64_t lo) {
  if (!ctx.node.attrs.has(name)) return std::vector<int64_t>(n, def);
  std::vector<int64_t> v = ctx.node.attrs.get_ints(name);
  if (v.size() != n) ctx.fail(name, " has ", v.size(), " values, expected ", n);
  for (int64_t x : v)
    if (x < lo) ctx.fail(name, " value ", x, " is below ", lo);
  return v;
}

}  // namespace

ConvGeom conv_geom(const InferCtx& ctx, const Shape& x, const Shape& w, bool transpose) {
  const Attrs& at = ctx.node.attrs;
  if (x.size() < 3 || x.size() > 5)
    ctx.fail("X must be [N, C, spatial...] with 1 to 3 spatial dims, got ", shape_str(x));
  if (w.size() != x.size()) ctx.fail("W ", shape_str(w), " must have X's rank ", x.size());
  ConvGeom g;
  int nsp = (int)x.size() - 2, off = 3 - nsp;
  g.nsp = nsp;
  g.N = x[0];
  g.C = x[1];
  g.G = at.get_int("group", 1);
  if (g.G < 1) ctx.fail("group ", g.G, " must be >= 1");
  if (g.C % g.G != 0) ctx.fail("X has ", g.C, " channels, not a multiple of group ", g.G);
  if (!transpose) {
    g.M = w[0];
    if (w[1] != g.C / g.G)
      ctx.fail("W ", shape_str(w), " needs dim 1 = C / group = ", g.C / g.G, " (X ", shape_str(x),
               ", group ", g.G, ")");
    if (g.M % g.G != 0) ctx.fail("W has ", g.M, " output channels, not a multiple of group ", g.G);
  } else {
    if (w[0] != g.C) ctx.fail("W ", shape_str(w), " needs dim 0 = C = ", g.C);
    g.M = mul_checked(ctx, w[1], g.G, "output channels");
  }
  if (at.has("kernel_shape")) {
    std::vector<int64_t> ks = at.get_ints("kernel_shape");
    if (ks.size() != (size_t)nsp || !std::equal(ks.begin(), ks.end(), w.begin() + 2))
      ctx.fail("kernel_shape does not match W ", shape_str(w));
  }
  std::vector<int64_t> strides = ints_attr(ctx, "strides", nsp, 1, 1);
  std::vector<int64_t> dils = ints_attr(ctx, "dilations", nsp, 1, 1);
  std::string auto_pad = at.get_string("auto_pad", "NOTSET");
  bool same = auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER";
  if (!same && auto_pad != "NOTSET" && auto_pad != "VALID")
    ctx.fail("auto_pad '", auto_pad, "' is not NOTSET, SAME_UPPER, SAME_LOWER or VALID");
  bool has_pads = at.has("pads");
  std::vector<int64_t> pads = ints_attr(ctx, "pads", 2 * nsp, 0, 0);
  std::vector<int64_t> out_pad, out_shape;
  if (transpose) {
    out_pad = ints_attr(ctx, "output_padding", nsp, 0, 0);
    if (at.has("output_shape")) out_shape = ints_attr(ctx, "output_shape", nsp, 0, 0);
  }
  for (int i = 0; i < nsp; i++) {
    int64_t in = x[2 + i], k = w[2 + i], s = strides[i], d = dils[i];
    if (k < 1) ctx.fail("W ", shape_str(w), " has an empty kernel dim");
    int64_t eff = add_checked(ctx, mul_checked(ctx, k - 1, d, "dilated kernel"), 1, "dilated kernel");
    int64_t pb = pads[i], pe = pads[nsp + i], out;
    if (!transpose) {
      if (same) {
        out = in / s + (in % s != 0);
        // (out - 1) * s <= in, so only adding eff can overflow.
        int64_t need = add_checked(ctx, (out - 1) * s - in, eff, "padding");
        need = std::max<int64_t>(0, need);
        pb = auto_pad == "SAME_LOWER" ? (need + 1) / 2 : need / 2;
      } else {
        if (auto_pad == "VALID") pb = pe = 0;
        int64_t span = add_checked(ctx, add_checked(ctx, in, pb, "padded input"), pe, "padded input");
        if (span < eff)
          ctx.fail("padded input ", span, " is smaller than the dilated kernel ", eff, " (dim ", i, ")");
        out = (span - eff) / s + 1;
      }
    } else {
      if (in < 1) ctx.fail("X ", shape_str(x), " has an empty spatial dim");
      if (out_pad[i] >= std::max(s, d))
        ctx.fail("output_padding ", out_pad[i], " must be below the stride or dilation");
      int64_t full = add_checked(ctx, mul_checked(ctx, s, in - 1, "output size"),
                                 add_checked(ctx, out_pad[i], eff, "output size"), "output size");
      if (same && !has_pads) {
        out = out_shape.empty() ? mul_checked(ctx, in, s, "output size") : out_shape[i];
        int64_t total = full - out;  // both in [0, 2^63)
        pb = auto_pad == "SAME_UPPER" ? floor_div2(total) : total - floor_div2(total);
      } else {
        if (auto_pad == "VALID") pb = pe = 0;
        out = out_shape.empty() ? full - add_checked(ctx, pb, pe, "pads") : out_shape[i];
        if (out < 0) ctx.fail("output dim ", i, " would be ", out, " (pads exceed the output)");
      }
    }
    g.in[off + i] = in;
    g.k[off + i] = k;
    g.out[off + i] = out;
    g.stride[off + i] = s;
    g.dil[off + i] = d;
    g.pad[off + i] = pb;
  }
  return g;
}

namespace {

std::vector<TensorType> infer_conv(const InferCtx& ctx) {
  bool transpose = ctx.node.op == OpType::ConvTranspose;
  DType t = ctx.in[0].dtype;
  if (!is_float_dtype(t)) ctx.fail("unsupported dtype ", dtype_name(t));
  for (int i = 1; i < 3; i++)
    if (ctx.has(i) && ctx.in[i].dtype != t)
      ctx.fail("input ", i, " is ", dtype_name(ctx.in[i].dtype), ", X is ", dtype_name(t));
  ConvGeom g = conv_geom(ctx, ctx.in[0].shape, ctx.in[1].shape, transpose);
  std::string prec = ctx.node.attrs.get_string("precision", "fp32");
  if (prec != "fp32" && (prec != "bf16" || transpose || t != DType::F32))
    ctx.fail("precision '", prec, "' (float32 Conv: 'fp32' or 'bf16')");
  if (ctx.has(2) && (ctx.in[2].shape.size() != 1 || ctx.in[2].shape[0] != g.M))
    ctx.fail("B ", shape_str(ctx.in[2].shape), " must be [", g.M, "]");
  Shape out = {g.N, g.M};
  for (int i = 3 - g.nsp; i < 3; i++) out.push_back(g.out[i]);
  return one(t, out);
}

template <class T>
void conv_ref_typed(const KernelCtx& ctx, const ConvGeom& g) {
  const T* x = ctx.input(0).ptr<T>();  // [N, C, in...]
  const T* w = ctx.input(1).ptr<T>();  // [M, C/G, k...]
  const T* b = ctx.has_input(2) ? ctx.input(2).ptr<T>() : nullptr;  // [M]
  T* y = ctx.output(0).ptr<T>();       // [N, M, out...]
  int64_t cg = g.C / g.G, mg = g.M / g.G;
  int64_t isz = g.in_size(), ksz = g.k_size(), osz = g.out_size();
  int64_t yi = 0;
  for (int64_t n = 0; n < g.N; n++) {
    for (int64_t m = 0; m < g.M; m++) {
      int64_t grp = m / mg;
      for (int64_t o0 = 0; o0 < g.out[0]; o0++)
        for (int64_t o1 = 0; o1 < g.out[1]; o1++)
          for (int64_t o2 = 0; o2 < g.out[2]; o2++, yi++) {
            double acc = b ? (double)load(b, m) : 0.0;
            for (int64_t c = 0; c < cg; c++) {
              const T* xc = x + (n * g.C + grp * cg + c) * isz;
              const T* wc = w + (m * cg + c) * ksz;
              for (int64_t k0 = 0; k0 < g.k[0]; k0++) {
                int64_t i0 = o0 * g.stride[0] - g.pad[0] + k0 * g.dil[0];
                if (i0 < 0 || i0 >= g.in[0]) continue;
                for (int64_t k1 = 0; k1 < g.k[1]; k1++) {
                  int64_t i1 = o1 * g.stride[1] - g.pad[1] + k1 * g.dil[1];
                  if (i1 < 0 || i1 >= g.in[1]) continue;
                  for (int64_t k2 = 0; k2 < g.k[2]; k2++) {
                    int64_t i2 = o2 * g.stride[2] - g.pad[2] + k2 * g.dil[2];
                    if (i2 < 0 || i2 >= g.in[2]) continue;
                    acc += (double)load(xc, (i0 * g.in[1] + i1) * g.in[2] + i2) *
                           (double)load(wc, (k0 * g.k[1] + k1) * g.k[2] + k2);
                  }
                }
              }
            }
            store(y, yi, (compute_t<T>)acc);
          }
    }
  }
  (void)osz;
}

// precision "bf16" (see the top of the file).
void conv_ref_bf16(const KernelCtx& ctx, const ConvGeom& g) {
  const float* x = ctx.input(0).ptr<float>();  // [N, C, in...]
  const float* w = ctx.input(1).ptr<float>();  // [M, C/G, k...]
  const float* b = ctx.has_input(2) ? ctx.input(2).ptr<float>() : nullptr;  // [M]
  float* y = ctx.output(0).ptr<float>();       // [N, M, out...]
  auto rb = [](float v) { return bf16_to_f32(f32_to_bf16(v)); };
  const int64_t cg = g.C / g.G, mg = g.M / g.G, isz = g.in_size(), ksz = g.k_size();
  std::vector<float> taps(cg * ksz + 1);
  int64_t yi = 0;
  for (int64_t n = 0; n < g.N; n++)
    for (int64_t m = 0; m < g.M; m++) {
      const int64_t grp = m / mg;
      const float* wm = w + m * cg * ksz;
      for (int64_t o0 = 0; o0 < g.out[0]; o0++)
        for (int64_t o1 = 0; o1 < g.out[1]; o1++)
          for (int64_t o2 = 0; o2 < g.out[2]; o2++, yi++) {
            int64_t t = 0;
            for (int64_t c = 0; c < cg; c++)
              for (int64_t k0 = 0; k0 < g.k[0]; k0++)
                for (int64_t k1 = 0; k1 < g.k[1]; k1++)
                  for (int64_t k2 = 0; k2 < g.k[2]; k2++, t++) {
                    int64_t i0 = o0 * g.stride[0] - g.pad[0] + k0 * g.dil[0];
                    int64_t i1 = o1 * g.stride[1] - g.pad[1] + k1 * g.dil[1];
                    int64_t i2 = o2 * g.stride[2] - g.pad[2] + k2 * g.dil[2];
                    bool in = i0 >= 0 && i0 < g.in[0] && i1 >= 0 && i1 < g.in[1] && i2 >= 0 &&
                              i2 < g.in[2];
                    taps[t] = in ? rb(x[(n * g.C + grp * cg + c) * isz +
                                        (i0 * g.in[1] + i1) * g.in[2] + i2])
                                 : 0.0f;
                  }
            float acc = 0.0f;
            for (int64_t i = 0; i < t; i += 2) {
              if (i + 1 < t) acc += taps[i + 1] * rb(wm[i + 1]);
              acc += taps[i] * rb(wm[i]);
              if (acc != acc) break;  // NOTE: as ref_fused_matmul_bf16 (g++ 12 vectorised sum)
            }
            y[yi] = b ? acc + b[m] : acc;
          }
    }
}

// Output o receives input i through kernel tap k when o = i * stride - pad + k * dil.
template <class T>
void conv_transpose_ref_typed(const KernelCtx& ctx, const ConvGeom& g) {
  const T* x = ctx.input(0).ptr<T>();  // [N, C, in...]
  const T* w = ctx.input(1).ptr<T>();  // [C, M/G, k...]
  const T* b = ctx.has_input(2) ? ctx.input(2).ptr<T>() : nullptr;  // [M]
  T* y = ctx.output(0).ptr<T>();       // [N, M, out...]
  int64_t cg = g.C / g.G, mg = g.M / g.G;
  int64_t isz = g.in_size(), ksz = g.k_size();
  // The input index for output o and tap k, or -1 when no input lands there.
  auto src = [&](int d, int64_t o, int64_t k) -> int64_t {
    int64_t t = o + g.pad[d] - k * g.dil[d];
    if (t < 0 || t % g.stride[d] != 0) return -1;
    t /= g.stride[d];
    return t < g.in[d] ? t : -1;
  };
  int64_t yi = 0;
  for (int64_t n = 0; n < g.N; n++) {
    for (int64_t m = 0; m < g.M; m++) {
      int64_t grp = m / mg, mm = m % mg;
      for (int64_t o0 = 0; o0 < g.out[0]; o0++)
        for (int64_t o1 = 0; o1 < g.out[1]; o1++)
          for (int64_t o2 = 0; o2 < g.out[2]; o2++, yi++) {
            double acc = b ? (double)load(b, m) : 0.0;
            for (int64_t c = grp * cg; c < (grp + 1) * cg; c++) {
              const T* xc = x + (n * g.C + c) * isz;
              const T* wc = w + (c * mg + mm) * ksz;
              for (int64_t k0 = 0; k0 < g.k[0]; k0++) {
                int64_t i0 = src(0, o0, k0);
                if (i0 < 0) continue;
                for (int64_t k1 = 0; k1 < g.k[1]; k1++) {
                  int64_t i1 = src(1, o1, k1);
                  if (i1 < 0) continue;
                  for (int64_t k2 = 0; k2 < g.k[2]; k2++) {
                    int64_t i2 = src(2, o2, k2);
                    if (i2 < 0) continue;
                    acc += (double)load(xc, (i0 * g.in[1] + i1) * g.in[2] + i2) *
                           (double)load(wc, (k0 * g.k[1] + k1) * g.k[2] + k2);
                  }
                }
              }
            }
            store(y, yi, (compute_t<T>)acc);
          }
    }
  }
}

void ref_conv(const KernelCtx& ctx) {
  bool transpose = ctx.node.op == OpType::ConvTranspose;
  InferCtx ic{ctx.node, {}, {}};
  ConvGeom g = conv_geom(ic, ctx.input(0).shape(), ctx.input(1).shape(), transpose);
  dispatch_dtype(ctx.input(0).dtype(), [&](auto t) {
    using T = decltype(t);
    if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double> ||
                  std::is_same_v<T, f16_t> || std::is_same_v<T, bf16_t>) {
      if (transpose) conv_transpose_ref_typed<T>(ctx, g);
      else if (ctx.node.attrs.get_string("precision", "fp32") == "bf16") conv_ref_bf16(ctx, g);
      else conv_ref_typed<T>(ctx, g);
    } else {
      fail(ErrorKind::Model, "[", op_name(ctx.node.op), "] unsupported dtype ",
           dtype_name(ctx.input(0).dtype()));
    }
  });
}

}  // namespace

static const OpDef kOps[] = {
    {OpType::Conv, "Conv", 2, 3, 1, 1, 0,
     {{"auto_pad", AttrKind::String}, {"dilations", AttrKind::Ints}, {"group", AttrKind::Int},
      {"kernel_shape", AttrKind::Ints}, {"pads", AttrKind::Ints}, {"strides", AttrKind::Ints},
      {"precision", AttrKind::String}},
     infer_conv, ref_conv},
    {OpType::ConvTranspose, "ConvTranspose", 2, 3, 1, 1, 0,
     {{"auto_pad", AttrKind::String}, {"dilations", AttrKind::Ints}, {"group", AttrKind::Int},
      {"kernel_shape", AttrKind::Ints}, {"output_padding", AttrKind::Ints},
      {"output_shape", AttrKind::Ints}, {"pads", AttrKind::Ints}, {"strides", AttrKind::Ints}},
     infer_conv, ref_conv},
};

std::span<const OpDef> op_defs_conv() { return kOps; }

}  // namespace ember
