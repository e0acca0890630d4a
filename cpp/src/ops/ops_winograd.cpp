// WinogradConv: a 3x3, stride 1, dilation 1, group 1 Conv (2-D) [-> Add(., R)] [-> Relu] in
// Winograd F(2x2, 3x3) form, made by fuse_conv_winograd (cpp/src/graph/fuse_winograd.cpp) for
// CPU sessions. Inputs X [N, C, H, W] f32, U [16, M, C] f32 (the filters as G g G^T, see
// kernels/generic/winograd_f32.h), bias [M] (optional), R f32 (optional: a residual added as
// Add adds it, broadcasting); attrs pads [top, left, bottom, right], activation "none" |
// "relu". Y [N, M, H + top + bottom - 2, W + left + right - 2], or its broadcast with R.
// The reference follows the definition tile by tile in float: V = B^T d B (d the tile's 4 x 4
// window, zero outside X), P[xi] = sum over c in order of U[xi][m][c] V_c[xi], Y = A^T P A
// (rows of P first), + bias, then the activation. It differs from Conv's direct sums by
// rounding only (tests/cpp/test_winograd.cpp bounds it).
#include "ops/op_util.h"

namespace ember {
namespace {

std::vector<TensorType> infer_winograd_conv(const InferCtx& ctx) {
  const TensorType& x = ctx.in[0];
  const TensorType& u = ctx.in[1];
  if (x.dtype != DType::F32 || u.dtype != DType::F32) ctx.fail("X and U must be float32");
  if (x.shape.size() != 4) ctx.fail("X must be [N, C, H, W], got ", shape_str(x.shape));
  if (u.shape.size() != 3 || u.shape[0] != 16 || u.shape[2] != x.shape[1])
    ctx.fail("U ", shape_str(u.shape), " must be [16, M, C] with C = ", x.shape[1]);
  int64_t m = u.shape[1];
  if (ctx.has(2) && (ctx.in[2].dtype != DType::F32 || ctx.in[2].shape != Shape{m}))
    ctx.fail("bias must be float32 [", m, "], got ", shape_str(ctx.in[2].shape));
  std::string act = ctx.node.attrs.get_string("activation", "none");
  if (act != "none" && act != "relu") ctx.fail("activation '", act, "' is not none or relu");
  std::vector<int64_t> pads = ctx.node.attrs.get_ints("pads");
  if (pads.size() != 4) ctx.fail("pads has ", pads.size(), " values, expected 4");
  for (int64_t p : pads)
    if (p < 0 || p > 1 << 20) ctx.fail("pad ", p, " is outside [0, 2^20]");
  int64_t oh = x.shape[2] + pads[0] + pads[2] - 2, ow = x.shape[3] + pads[1] + pads[3] - 2;
  if (oh < 1 || ow < 1)
    ctx.fail("X ", shape_str(x.shape), " with pads is smaller than the 3 x 3 kernel");
  Shape y{x.shape[0], m, oh, ow};
  if (!ctx.has(3)) return {{DType::F32, y}};
  if (ctx.in[3].dtype != DType::F32) ctx.fail("R must be float32");
  return {{DType::F32, broadcast_shapes(ctx, y, ctx.in[3].shape)}};
}

void ref_winograd_conv(const KernelCtx& ctx) {
  static const float BT[4][4] = {{1, 0, -1, 0}, {0, 1, 1, 0}, {0, -1, 1, 0}, {0, 1, 0, -1}};
  static const float AT[2][4] = {{1, 1, 1, 0}, {0, 1, -1, -1}};
  const Tensor& xt = ctx.input(0);
  const Tensor& ut = ctx.input(1);
  Tensor& yt = ctx.output(0);  // Y, or its broadcast with R
  const int64_t N = xt.dim(0), C = xt.dim(1), H = xt.dim(2), W = xt.dim(3), M = ut.dim(1);
  std::vector<int64_t> pads = ctx.node.attrs.get_ints("pads");
  const int64_t OH = H + pads[0] + pads[2] - 2, OW = W + pads[1] + pads[3] - 2;
  const float* x = xt.ptr<float>();
  const float* u = ut.ptr<float>();
  const float* bias = ctx.has_input(2) ? ctx.input(2).ptr<float>() : nullptr;
  bool relu = ctx.node.attrs.get_string("activation", "none") == "relu";
  // The convolution and bias into yc (Y's shape); then + R (broadcast) and the activation.
  std::vector<float> yc((size_t)(N * M * OH * OW));
  float* y = yc.data();
  // A sum of the nonzero terms c[i] * v[i] (each +-1) in order of i.
  auto combine = [](const float* c, auto v) {
    float s = 0.0f;
    bool first = true;
    for (int i = 0; i < 4; i++) {
      if (c[i] == 0) continue;
      s = first ? (c[i] > 0 ? v(i) : -v(i)) : (c[i] > 0 ? s + v(i) : s - v(i));
      first = false;
    }
    return s;
  };
  std::vector<float> vt((size_t)(16 * C));  // V [c][16] of one tile
  for (int64_t n = 0; n < N; n++)
    for (int64_t ty = 0; 2 * ty < OH; ty++)
      for (int64_t tx = 0; 2 * tx < OW; tx++) {
        for (int64_t c = 0; c < C; c++) {
          float d[4][4], r[4][4];
          for (int i = 0; i < 4; i++)
            for (int k = 0; k < 4; k++) {
              int64_t iy = 2 * ty - pads[0] + i, ix = 2 * tx - pads[1] + k;
              bool in = iy >= 0 && iy < H && ix >= 0 && ix < W;
              d[i][k] = in ? x[((n * C + c) * H + iy) * W + ix] : 0.0f;
            }
          for (int i = 0; i < 4; i++)  // r = d B
            for (int k = 0; k < 4; k++) r[i][k] = combine(BT[k], [&](int l) { return d[i][l]; });
          for (int j = 0; j < 4; j++)  // B^T r
            for (int k = 0; k < 4; k++)
              vt[c * 16 + 4 * j + k] = combine(BT[j], [&](int i) { return r[i][k]; });
        }
        for (int64_t m = 0; m < M; m++) {
          float p[4][4], q[4][2];
          for (int xi = 0; xi < 16; xi++) {
            float s = 0.0f;
            for (int64_t c = 0; c < C; c++) s += u[(xi * M + m) * C + c] * vt[c * 16 + xi];
            p[xi / 4][xi % 4] = s;
          }
          for (int j = 0; j < 4; j++)  // P A
            for (int b = 0; b < 2; b++) q[j][b] = combine(AT[b], [&](int k) { return p[j][k]; });
          for (int a = 0; a < 2; a++)
            for (int b = 0; b < 2; b++) {
              int64_t oy = 2 * ty + a, ox = 2 * tx + b;
              if (oy >= OH || ox >= OW) continue;
              float v = combine(AT[a], [&](int j) { return q[j][b]; }) + (bias ? bias[m] : 0.0f);
              y[((n * M + m) * OH + oy) * OW + ox] = v;
            }
        }
      }
  const Shape yshape{N, M, OH, OW};
  const Tensor* rt = ctx.has_input(3) ? &ctx.input(3) : nullptr;
  const Shape& out = yt.shape();
  std::vector<Shape> strides = {broadcast_strides(yshape, out)};
  if (rt) strides.push_back(broadcast_strides(rt->shape(), out));
  float* o = yt.ptr<float>();
  int64_t i = 0;
  for (BroadcastIter it(out, strides); !it.done(); it.next(), i++) {
    float v = yc[it.off[0]];
    if (rt) v += rt->ptr<float>()[it.off[1]];
    o[i] = relu && v < 0.0f ? 0.0f : v;
  }
}

const OpDef kOps[] = {
    {OpType::WinogradConv, "WinogradConv", 2, 4, 1, 1, kOpFused,
     {{"pads", AttrKind::Ints, true}, {"activation", AttrKind::String}}, infer_winograd_conv,
     ref_winograd_conv},
};

}  // namespace

std::span<const OpDef> op_defs_winograd() { return kOps; }

}  // namespace ember
