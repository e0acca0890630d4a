// Pooling geometry (MaxPool / AveragePool), shared by the references in ops_pool.cpp and the
// fast kernels (kernels/generic/pool_f32.cpp, kernels/x86/pool_x86.cpp).
#pragma once
#include <vector>

#include "ember/op.h"

namespace ember {

struct PoolGeom {
  int nsp = 0;                           // spatial dims
  Shape in, out;                         // spatial sizes
  std::vector<int64_t> k, s, d, pb, pe;  // kernel, stride, dilation, begin / end pads
};

// Checks X [N, C, spatial...] and the node's pooling attributes (overflow-safe); fails via ctx.
PoolGeom pool_geom(const InferCtx& ctx, const Shape& x);

}  // namespace ember
