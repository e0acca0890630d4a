// MaxPool, f32, 2-D, without the Indices output (reference: ops_pool.cpp): planes (n, c) split
// over the pool; per output, the window clipped to the input once per row and column range,
// then a plain max over contiguous row segments. Ties and NaN as the reference: the first tap
// starts the max and only a strictly greater value replaces it; an all-padding window gives 0.
#include <algorithm>

#include "kernels/generic/kernels_generic.h"
#include "ops/pool_geom.h"

namespace ember::cpu {

bool max_pool_f32_supports(const InferCtx& ctx) {
  return ctx.in[0].dtype == DType::F32 && ctx.in[0].shape.size() == 4 &&
         !(ctx.node.outputs.size() > 1 && ctx.node.outputs[1] >= 0);
}

void max_pool_f32(const KernelCtx& ctx) {
  const Tensor& x = ctx.input(0);  // [N, C, H, W]
  Tensor& y = ctx.output(0);       // [N, C, OH, OW]
  InferCtx ic{ctx.node, {{x.dtype(), x.shape()}}, {nullptr}};
  PoolGeom g = pool_geom(ic, x.shape());
  const int64_t H = g.in[0], W = g.in[1], OH = g.out[0], OW = g.out[1];
  const float* px = x.ptr<float>();
  float* py = y.ptr<float>();
  int64_t planes = x.dim(0) * x.dim(1);
  ctx.parallel_for(planes, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; p++) {
      const float* xp = px + p * H * W;
      float* yp = py + p * OH * OW;
      for (int64_t oh = 0; oh < OH; oh++) {
        int64_t h0 = oh * g.s[0] - g.pb[0];
        for (int64_t ow = 0; ow < OW; ow++) {
          int64_t w0 = ow * g.s[1] - g.pb[1];
          bool any = false;
          float best = 0.0f;
          for (int64_t kh = 0; kh < g.k[0]; kh++) {
            int64_t ih = h0 + kh * g.d[0];
            if (ih < 0 || ih >= H) continue;
            const float* row = xp + ih * W;
            for (int64_t kw = 0; kw < g.k[1]; kw++) {
              int64_t iw = w0 + kw * g.d[1];
              if (iw < 0 || iw >= W) continue;
              float v = row[iw];
              if (!any || v > best) best = v;
              any = true;
            }
          }
          yp[oh * OW + ow] = best;
        }
      }
    }
  });
}

}  // namespace ember::cpu
