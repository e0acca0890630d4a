// Conv with precision "bf16" (reference: the Conv row in cpp/src/ops/ops_conv.cpp, its bf16
// branch): per (batch, group) the bf16 GEMM (gemm_bf16.cpp) Y[mg, out] = W[mg, kg] @ P[kg, out]
// + bias per row, P the input patches (rows (c, k0, k1, k2), zero where the kernel reads pad).
// P is built straight into bf16 pair panels: pair q's two patch rows are gathered into fp32,
// then rounded and interleaved by the micro-kernel's round_pairs (tasks over q on the pool),
// so no fp32 patch matrix is kept. W is
// rounded per call by the GEMM; every output is one vdpbf16ps chain over (c, k0, k1, k2).
#include <algorithm>
#include <vector>

#include "kernels/generic/conv_f32.h"
#include "kernels/generic/gemm_bf16.h"
#include "ops/op_util.h"

namespace ember::cpu {
namespace {

// Patch row kk = (c, k0, k1, k2) of image x (channel c at xc) over all outputs -> row [osz].
void patch_row(const ConvGeom& g, const float* xc, int64_t kk_tap, float* row) {
  const int64_t k2 = kk_tap % g.k[2], k1 = kk_tap / g.k[2] % g.k[1], k0 = kk_tap / g.k[2] / g.k[1];
  for (int64_t o0 = 0; o0 < g.out[0]; o0++) {
    const int64_t i0 = o0 * g.stride[0] - g.pad[0] + k0 * g.dil[0];
    for (int64_t o1 = 0; o1 < g.out[1]; o1++) {
      const int64_t i1 = o1 * g.stride[1] - g.pad[1] + k1 * g.dil[1];
      float* r = row + (o0 * g.out[1] + o1) * g.out[2];
      if (i0 < 0 || i0 >= g.in[0] || i1 < 0 || i1 >= g.in[1]) {
        std::fill(r, r + g.out[2], 0.0f);
        continue;
      }
      const float* xr = xc + (i0 * g.in[1] + i1) * g.in[2];
      for (int64_t o2 = 0; o2 < g.out[2]; o2++) {
        const int64_t i2 = o2 * g.stride[2] - g.pad[2] + k2 * g.dil[2];
        r[o2] = i2 >= 0 && i2 < g.in[2] ? xr[i2] : 0.0f;
      }
    }
  }
}

}  // namespace

bool conv_bf16_supports(const InferCtx& ctx) {
  return ctx.node.attrs.get_string("precision", "fp32") == "bf16" && ctx.has(1) &&
         ctx.in[0].dtype == DType::F32 && ctx.in[1].dtype == DType::F32;
}

void conv_bf16_with(const KernelCtx& ctx, const BgemmMicro& micro) {
  InferCtx ic{ctx.node, {}, {}};
  ConvGeom g = conv_geom(ic, ctx.input(0).shape(), ctx.input(1).shape(), false);
  const float* x = ctx.input(0).ptr<float>();  // [N, C, in...]
  const float* w = ctx.input(1).ptr<float>();  // [M, C/G, k...]
  const float* b = ctx.has_input(2) ? ctx.input(2).ptr<float>() : nullptr;  // [M]
  float* y = ctx.output(0).ptr<float>();       // [N, M, out...]
  const int64_t osz = g.out_size(), isz = g.in_size(), ksz = g.k_size();
  if (g.N == 0 || g.M == 0 || osz == 0) return;
  const int64_t cg = g.C / g.G, mg = g.M / g.G, kg = cg * ksz;
  const int64_t kp = ceil_div(kg, 2), np = ceil_div(osz, 16);
  // The patch panels [np, kp, 16] pairs, kept per calling thread (large: faulting them in each
  // call would cost more than the gathers).
  thread_local std::vector<uint32_t> panels;
  panels.resize(np * kp * 16);
  uint32_t* pan = panels.data();
  for (int64_t n = 0; n < g.N; n++) {
    for (int64_t grp = 0; grp < g.G; grp++) {
      const float* xg = x + (n * g.C + grp * cg) * isz;
      ctx.parallel_for(kp, std::max<int64_t>(1, 4096 / std::max<int64_t>(osz, 1)),
                       [&](int64_t q0, int64_t q1) {
        std::vector<float> rows(2 * osz);
        for (int64_t q = q0; q < q1; q++) {
          for (int e = 0; e < 2; e++) {
            const int64_t kk = 2 * q + e;
            if (kk < kg)
              patch_row(g, xg + (kk / ksz) * isz, kk % ksz, rows.data() + e * osz);
            else
              std::fill_n(rows.data() + e * osz, osz, 0.0f);
          }
          micro.round_pairs(rows.data(), rows.data() + osz, osz, pan + q * 16, kp * 16);
        }
      });
      BgemmArgs a;  // Y[grp's channels] = W[grp's rows] @ P
      a.M = mg;
      a.N = osz;
      a.K = kg;
      a.a = w + grp * mg * kg;
      a.a_rs = kg;
      a.b_packed = reinterpret_cast<const uint16_t*>(pan);
      a.c = y + (n * g.M + grp * mg) * osz;
      a.c_rs = osz;
      a.bias = b ? b + grp * mg : nullptr;
      a.bias_per_row = true;
      bgemm(a, ctx.max_threads, micro);
    }
  }
}

void conv_bf16(const KernelCtx& ctx) { conv_bf16_with(ctx, bgemm_micro_generic()); }

}  // namespace ember::cpu
