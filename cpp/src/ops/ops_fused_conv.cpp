// FusedConv: a 2-D group-1 float32 Conv [-> Relu], made by fuse_conv_packed
// (cpp/src/graph/fuse_conv_packed.cpp) for CPU sessions. Inputs X [N, C, H, W] f32, W f32 and
// bias [m] (optional); attrs m, kernel_shape [kh, kw], Conv's strides, pads, dilations,
// auto_pad, and activation "none" | "relu". W is either Conv's [m, C, kh, kw] (run as Conv's
// GEMM with the relu in its epilogue) or Wp [ceil(m / 32), C kh kw, 32], W transposed into
// 32-column panels (zero past m) for the swapped-role GEMM (kernels/generic/conv_packed_f32.h).
// The reference reads W in either form and sums each output in double, as Conv's does, then
// adds the bias and applies the activation.
#include "kernels/generic/conv_packed_f32.h"
#include "ops/op_util.h"

namespace ember {

ConvGeom fused_conv_geom(const InferCtx& ctx, const Shape& x) {
  const Attrs& at = ctx.node.attrs;
  if (x.size() != 4) ctx.fail("X must be [N, C, H, W], got ", shape_str(x));
  if (at.get_int("group", 1) != 1) ctx.fail("group must be 1");
  std::vector<int64_t> ks = at.get_ints("kernel_shape");
  if (ks.size() != 2) ctx.fail("kernel_shape has ", ks.size(), " values, expected 2");
  int64_t m = at.get_int("m", 0);
  if (m < 1) ctx.fail("m ", m, " must be >= 1");
  return conv_geom(ctx, x, {m, x[1], ks[0], ks[1]}, false);
}

namespace {

std::vector<TensorType> infer_fused_conv(const InferCtx& ctx) {
  const TensorType& x = ctx.in[0];
  const TensorType& w = ctx.in[1];
  if (x.dtype != DType::F32 || w.dtype != DType::F32) ctx.fail("X and Wp must be float32");
  ConvGeom g = fused_conv_geom(ctx, x.shape);
  int64_t k = 0;
  if (__builtin_mul_overflow(g.C, g.k[1] * g.k[2], &k)) ctx.fail("C kh kw overflows int64");
  Shape plain{g.M, g.C, g.k[1], g.k[2]}, panels{ceil_div(g.M, cpu::kConvPanel), k, cpu::kConvPanel};
  if (w.shape != plain && w.shape != panels)
    ctx.fail("W ", shape_str(w.shape), " must be ", shape_str(plain), " or ", shape_str(panels));
  if (ctx.has(2) && (ctx.in[2].dtype != DType::F32 || ctx.in[2].shape != Shape{g.M}))
    ctx.fail("bias must be float32 [", g.M, "], got ", shape_str(ctx.in[2].shape));
  std::string act = ctx.node.attrs.get_string("activation", "none");
  if (act != "none" && act != "relu") ctx.fail("activation '", act, "' is not none or relu");
  return {{DType::F32, {g.N, g.M, g.out[1], g.out[2]}}};
}

void ref_fused_conv(const KernelCtx& ctx) {
  InferCtx ic{ctx.node, {}, {}};
  const ConvGeom g = fused_conv_geom(ic, ctx.input(0).shape());
  const float* x = ctx.input(0).ptr<float>();   // [N, C, H, W]
  const float* wp = ctx.input(1).ptr<float>();  // [M, C, kh, kw] or [ceil(M / 32), K, 32]
  const float* b = ctx.has_input(2) ? ctx.input(2).ptr<float>() : nullptr;  // [M]
  float* y = ctx.output(0).ptr<float>();        // [N, M, OH, OW]
  const bool relu = ctx.node.attrs.get_string("activation", "none") == "relu";
  const int64_t H = g.in[1], W = g.in[2], kh = g.k[1], kw = g.k[2], K = g.C * kh * kw;
  const bool plain = ctx.input(1).rank() == 4;
  const int64_t P = plain ? 1 : cpu::kConvPanel;  // W[m, k] = wp[(m / P) K P + k P + m % P]
  int64_t yi = 0;
  for (int64_t n = 0; n < g.N; n++)
    for (int64_t m = 0; m < g.M; m++) {
      const float* wm = wp + (m / P) * K * P + m % P;  // W[m, k] = wm[k * P]
      for (int64_t oy = 0; oy < g.out[1]; oy++)
        for (int64_t ox = 0; ox < g.out[2]; ox++, yi++) {
          double acc = 0.0;
          for (int64_t c = 0; c < g.C; c++)
            for (int64_t ky = 0; ky < kh; ky++) {
              int64_t iy = oy * g.stride[1] - g.pad[1] + ky * g.dil[1];
              if (iy < 0 || iy >= H) continue;
              for (int64_t kx = 0; kx < kw; kx++) {
                int64_t ix = ox * g.stride[2] - g.pad[2] + kx * g.dil[2];
                if (ix < 0 || ix >= W) continue;
                acc += (double)x[((n * g.C + c) * H + iy) * W + ix] *
                       (double)wm[((c * kh + ky) * kw + kx) * P];
              }
            }
          float v = (float)acc + (b ? b[m] : 0.0f);
          y[yi] = relu && v < 0.0f ? 0.0f : v;
        }
    }
}

const OpDef kOps[] = {
    {OpType::FusedConv, "FusedConv", 2, 3, 1, 1, kOpFused,
     {{"m", AttrKind::Int, true}, {"kernel_shape", AttrKind::Ints, true},
      {"auto_pad", AttrKind::String}, {"dilations", AttrKind::Ints}, {"group", AttrKind::Int},
      {"pads", AttrKind::Ints}, {"strides", AttrKind::Ints}, {"activation", AttrKind::String}},
     infer_fused_conv, ref_fused_conv},
};

}  // namespace

std::span<const OpDef> op_defs_fused_conv() { return kOps; }

}  // namespace ember
