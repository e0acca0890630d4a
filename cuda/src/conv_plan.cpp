// Conv and pooling plans (see conv_plan.h): the core's geometry narrowed to 2-D, the path and
// im2col chunk of a Conv, and the strided-batched GEMMs of one chunk.
#include "cuda/src/conv_plan.h"

#include <algorithm>
#include <climits>

#include "kernels/generic/conv_f32.h"
#include "ops/pool_geom.h"

namespace ember::cuda {

bool conv2d_from(const ConvGeom& g, Conv2d* out) {
  // ConvGeom pads 1-D and 2-D convs to three dims with leading dims of 1; a 3-D conv whose
  // depth is trivial is a 2-D conv too.
  if (g.in[0] != 1 || g.k[0] != 1 || g.out[0] != 1 || g.pad[0] != 0) return false;
  Conv2d c;
  c.N = g.N;
  c.C = g.C;
  c.M = g.M;
  c.G = g.G;
  c.H = g.in[1];
  c.W = g.in[2];
  c.OH = g.out[1];
  c.OW = g.out[2];
  c.kh = g.k[1];
  c.kw = g.k[2];
  c.sh = g.stride[1];
  c.sw = g.stride[2];
  c.dh = g.dil[1];
  c.dw = g.dil[2];
  c.ph = g.pad[1];
  c.pw = g.pad[2];
  *out = c;
  return true;
}

bool conv_plan(const Conv2d& g, int64_t cols_bytes, ConvPlan* plan) {
  ConvPlan p;
  if (g.N == 0 || g.M == 0 || g.P() == 0) {
    p.path = ConvPath::Empty;
  } else if (g.C == 0) {
    p.path = ConvPath::Fill;  // an empty sum: Y is the bias
  } else if (g.cg() == 1) {
    p.path = ConvPath::Direct;  // depthwise (any channel multiplier), or a single input channel
  } else {
    bool one = g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && g.ph == 0 && g.pw == 0 &&
               g.OH == g.H && g.OW == g.W;  // end pads would grow the output
    int64_t rows = g.rows(), P = g.P();
    if (one) {
      p.path = ConvPath::Gemm1x1;
      p.nb = g.N;
      p.pc = P;
    } else {
      p.path = ConvPath::Im2col;
      int64_t per_image = rows * P * (int64_t)sizeof(float);  // < 2^40 * 4: no overflow
      if (per_image <= cols_bytes) {
        p.nb = std::min(g.N, cols_bytes / per_image);
        p.pc = P;
      } else {
        p.nb = 1;
        p.pc = cols_bytes / (rows * (int64_t)sizeof(float));
        if (p.pc < std::min(P, kConvMinPixelChunk)) return false;
        if (p.pc > 64) p.pc -= p.pc % 64;  // keeps the GEMM's ldb and cols offsets aligned
      }
      p.cols_elems = p.nb * rows * p.pc;
    }
    // cuBLASLt indexes with 32 bits; its batch count is an int32.
    int64_t lim = INT32_MAX;
    if (g.mg() > lim || g.kg() > lim || p.pc > lim || P > lim || p.nb > lim || g.G > lim)
      return false;
    int64_t chunks = (g.N + p.nb - 1) / p.nb * ((P + p.pc - 1) / p.pc);
    p.gemm_calls = chunks * std::min(g.G, p.nb);
  }
  *plan = p;
  return true;
}

std::vector<ConvGemmCall> conv_gemm_calls(const Conv2d& g, int64_t n0, int64_t nb, int64_t p0,
                                          int64_t pc) {
  int64_t K = g.kg(), mg = g.mg(), rows = g.rows(), P = g.P();
  std::vector<ConvGemmCall> calls;
  ConvGemmCall c;
  c.m = mg;
  c.n = pc;
  c.k = K;
  c.ldb = pc;
  c.ldd = P;
  if (g.G <= nb) {
    // One call per group: every image of the chunk shares the group's weights.
    c.batch = nb;
    c.stride_a = 0;
    c.stride_b = rows * pc;
    c.stride_d = g.M * P;
    for (int64_t grp = 0; grp < g.G; grp++) {
      c.a_off = grp * mg * K;
      c.b_off = grp * K * pc;
      c.d_off = (n0 * g.M + grp * mg) * P + p0;
      calls.push_back(c);
    }
  } else {
    // One call per image: the groups are the batch (weights, cols and Y rows all step).
    c.batch = g.G;
    c.stride_a = mg * K;
    c.stride_b = K * pc;
    c.stride_d = mg * P;
    for (int64_t i = 0; i < nb; i++) {
      c.a_off = 0;
      c.b_off = i * rows * pc;
      c.d_off = (n0 + i) * g.M * P + p0;
      calls.push_back(c);
    }
  }
  return calls;
}

bool pool2d_from(const PoolGeom& g, int64_t n, int64_t c, bool is_max, bool include_pad,
                 Pool2d* out) {
  if (g.nsp < 1 || g.nsp > 2) return false;
  int o = g.nsp == 2 ? 1 : 0;  // index of W's entries
  Pool2d p;
  p.planes = n * c;
  p.is_max = is_max;
  p.include_pad = include_pad;
  p.W = g.in[o];
  p.OW = g.out[o];
  p.kw = g.k[o];
  p.sw = g.s[o];
  p.dw = g.d[o];
  p.pw = g.pb[o];
  p.pew = g.pe[o];
  if (g.nsp == 2) {
    p.H = g.in[0];
    p.OH = g.out[0];
    p.kh = g.k[0];
    p.sh = g.s[0];
    p.dh = g.d[0];
    p.ph = g.pb[0];
    p.peh = g.pe[0];
  }
  *out = p;
  return true;
}

}  // namespace ember::cuda
