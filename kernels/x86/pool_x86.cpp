// Driver for the AVX2 MaxPool plane kernel (pool_avx2.cpp): geometry from pool_geom, threads
// over the N * C planes, each plane whole in one thread (so results never depend on the
// split). Accepts what the generic max_pool_f32 accepts (kernels/generic/pool_f32.cpp) and
// registers with its supports() predicate.
#include <algorithm>

#include "kernels/generic/kernels_generic.h"
#include "kernels/x86/kernels_x86.h"
#include "ops/pool_geom.h"

namespace ember::cpu {

void max_pool_f32_avx2(const KernelCtx& ctx) {
  const Tensor& x = ctx.input(0);  // [N, C, H, W]
  Tensor& y = ctx.output(0);       // [N, C, OH, OW]
  InferCtx ic{ctx.node, {{x.dtype(), x.shape()}}, {nullptr}};
  PoolGeom g = pool_geom(ic, x.shape());
  const int64_t H = g.in[0], W = g.in[1], OH = g.out[0], OW = g.out[1];
  if (y.numel() == 0) return;
  const float* px = x.ptr<float>();
  float* py = y.ptr<float>();
  // ~16K outputs a chunk at least, so tiny planes do not each wake a thread.
  int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, OH * OW));
  ctx.parallel_for(x.dim(0) * x.dim(1), grain, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; p++)
      max_pool_f32_plane_avx2(px + p * H * W, py + p * OH * OW, H, W, OH, OW, g.k.data(),
                              g.s.data(), g.d.data(), g.pb.data());
  });
}

}  // namespace ember::cpu
