// QConv: Y = act(dequant(quant(X) * Wq) + bias), the static W8A8 form of Conv (group 1),
// replacing Conv(DequantizeLinear(QuantizeLinear(X)), DequantizeLinear(Wq), B) [-> Relu | Gelu]
// (made by the graph pass in cpp/src/graph/fuse_quant.cpp, never by a frontend). Fast kernels:
// kernels/generic/conv_i8.h.
//  Inputs: X f32 [N, C, spatial...]; Wp int8, QMatMul's packed layout (ops_qmatmul.cpp) of
//  Wq [Kc, M], Kc = C * prod(kernel), Wq[c * prod(kernel) + tap, m] = W[m, c, tap] minus its
//  zero point; w_scale f32 [M]; bias f32 [M] (optional); a_scale f32 [] and a_zero_point
//  uint8 | int8 [] (ONNX QuantizeLinear of X). attrs: Conv's (auto_pad, dilations, group = 1,
//  kernel_shape, pads, strides), w_shape = W's shape [M, C, k...], activation as QMatMul's.
//  a16 = clamp(nearbyint(X / s) + zp, zp type's range) - zp (padding is 0: the code of 0.0);
//  acc[n, m, o] = sum over (c, tap) of a16 * Wq exactly in int32; y = ((float)acc * s) *
//  w_scale[m], + bias[m], then the activation in double.
#include <cmath>
#include <vector>

#include "kernels/generic/conv_f32.h"
#include "ops/op_util.h"

namespace ember {
namespace {

constexpr int64_t kPanel = 16;
constexpr int64_t kMaxK = 65536;  // as QMatMul: int32 sums cannot overflow

// The Conv node QConv stands for: X's shape and w_shape, through Conv's own checks.
ConvGeom qconv_geom(const InferCtx& ctx, const Shape& x) {
  std::vector<int64_t> ws = ctx.node.attrs.get_ints("w_shape");
  if (ws.size() < 3 || ws.size() > 5) ctx.fail("w_shape must have rank 3..5, got ", ws.size());
  for (int64_t d : ws)
    if (d < 0) ctx.fail("w_shape has a negative dim");
  ConvGeom g = conv_geom(ctx, x, Shape(ws.begin(), ws.end()), false);
  if (g.G != 1) ctx.fail("group must be 1, got ", g.G);
  return g;
}

std::vector<TensorType> infer_qconv(const InferCtx& ctx) {
  const TensorType& x = ctx.in[0];
  if (x.dtype != DType::F32) ctx.fail("X must be float32, got ", dtype_name(x.dtype));
  ConvGeom g = qconv_geom(ctx, x.shape);
  int64_t kc = g.C * g.k_size();
  if (kc > kMaxK) ctx.fail("C * kernel = ", kc, " is over ", kMaxK, " (int32 sums could overflow)");
  Shape want{(g.M + kPanel - 1) / kPanel, (kc + 1) / 2, kPanel, 2};
  if (ctx.in[1].dtype != DType::I8 || ctx.in[1].shape != want)
    ctx.fail("packed Wp must be int8 ", shape_str(want), ", got ", dtype_name(ctx.in[1].dtype), " ",
             shape_str(ctx.in[1].shape));
  if (ctx.in[2].dtype != DType::F32 || ctx.in[2].shape != Shape{g.M})
    ctx.fail("w_scale must be float32 [", g.M, "], got ", shape_str(ctx.in[2].shape));
  if (ctx.has(3) && (ctx.in[3].dtype != DType::F32 || ctx.in[3].shape != Shape{g.M}))
    ctx.fail("bias must be float32 [", g.M, "], got ", shape_str(ctx.in[3].shape));
  if (!ctx.has(4) || !ctx.has(5)) ctx.fail("a_scale and a_zero_point (inputs 4, 5) are required");
  if (ctx.in[4].dtype != DType::F32 || ctx.in[4].shape.size() > 1 || shape_numel(ctx.in[4].shape) != 1)
    ctx.fail("a_scale must be a float32 scalar");
  DType zt = ctx.in[5].dtype;
  if ((zt != DType::U8 && zt != DType::I8) || ctx.in[5].shape.size() > 1 || shape_numel(ctx.in[5].shape) != 1)
    ctx.fail("a_zero_point must be a uint8 or int8 scalar");
  fused_activation(&ctx, ctx.node);
  Shape out = {g.N, g.M};
  for (int i = 3 - g.nsp; i < 3; i++) out.push_back(g.out[i]);
  return {{DType::F32, out}};
}

void ref_qconv(const KernelCtx& ctx) {
  InferCtx ic{ctx.node, {}, {}};
  ConvGeom g = qconv_geom(ic, ctx.input(0).shape());
  const float* x = ctx.input(0).ptr<float>();    // [N, C, in...]
  const int8_t* wp = ctx.input(1).ptr<int8_t>();  // packed Wq [Kc, M]
  const float* ws = ctx.input(2).ptr<float>();   // [M]
  const float* b = ctx.has_input(3) ? ctx.input(3).ptr<float>() : nullptr;  // [M]
  float s = ctx.input(4).ptr<float>()[0];
  const Tensor& zt = ctx.input(5);
  bool u8 = zt.dtype() == DType::U8;
  int zp = u8 ? zt.ptr<uint8_t>()[0] : zt.ptr<int8_t>()[0];
  int qmin = u8 ? 0 : -128, qmax = u8 ? 255 : 127;
  FusedAct act = fused_activation(nullptr, ctx.node);
  float* y = ctx.output(0).ptr<float>();  // [N, M, out...]
  int64_t ksz = g.k_size(), isz = g.in_size(), kh = (g.C * ksz + 1) / 2;
  auto code = [&](float v) {
    float q = std::nearbyint(v / s) + (float)zp;
    q = std::isnan(q) ? (float)qmin : std::fmin(std::fmax(q, (float)qmin), (float)qmax);
    return (int)q - zp;
  };
  auto wq = [&](int64_t k, int64_t m) {
    return (int)wp[(((m / kPanel) * kh + k / 2) * kPanel + m % kPanel) * 2 + k % 2];
  };
  for (int64_t n = 0; n < g.N; n++) {
    for (int64_t m = 0; m < g.M; m++) {
      for (int64_t o0 = 0; o0 < g.out[0]; o0++) {
        for (int64_t o1 = 0; o1 < g.out[1]; o1++) {
          for (int64_t o2 = 0; o2 < g.out[2]; o2++) {
            int32_t acc = 0;
            for (int64_t c = 0; c < g.C; c++) {
              for (int64_t t = 0; t < ksz; t++) {
                int64_t t2 = t % g.k[2], t1 = t / g.k[2] % g.k[1], t0 = t / (g.k[2] * g.k[1]);
                int64_t i0 = o0 * g.stride[0] - g.pad[0] + t0 * g.dil[0];
                int64_t i1 = o1 * g.stride[1] - g.pad[1] + t1 * g.dil[1];
                int64_t i2 = o2 * g.stride[2] - g.pad[2] + t2 * g.dil[2];
                if (i0 < 0 || i0 >= g.in[0] || i1 < 0 || i1 >= g.in[1] || i2 < 0 || i2 >= g.in[2])
                  continue;
                float v = x[(n * g.C + c) * isz + (i0 * g.in[1] + i1) * g.in[2] + i2];
                acc += code(v) * wq(c * ksz + t, m);
              }
            }
            float r = ((float)acc * s) * ws[m];
            if (b) r += b[m];
            *y++ = (float)fused_activate_d(act, r);
          }
        }
      }
    }
  }
}

}  // namespace

static const OpDef kOps[] = {
    {OpType::QConv, "QConv", 3, 6, 1, 1, kOpFused,
     {{"auto_pad", AttrKind::String}, {"dilations", AttrKind::Ints}, {"group", AttrKind::Int},
      {"kernel_shape", AttrKind::Ints}, {"pads", AttrKind::Ints}, {"strides", AttrKind::Ints},
      {"w_shape", AttrKind::Ints, true}, {"activation", AttrKind::String}},
     infer_qconv, ref_qconv},
};

std::span<const OpDef> op_defs_qconv() { return kOps; }

}  // namespace ember
