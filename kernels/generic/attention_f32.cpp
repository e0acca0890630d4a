// Attention (the fused op in cpp/src/ops/ops_fused.cpp, whose reference is the specification):
// softmax(scale(Q Kt) + mask) V without writing the [.., S, T] scores to memory. Tasks are
// (batch matrix, block of query rows) on the pool; each runs Q_blk Kt and P V as one-thread
// sgemm calls on the ISA's micro-kernel, so every score and output element sums in order
// (d, then t) as the unfused MatMuls do, and scales, masks and normalises its rows between.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/generic/kernels_generic.h"
#include "ops/op_util.h"

namespace ember::cpu {
namespace {

// Scores per task at most ~32K floats (128 KiB, L2-sized): as many query rows as fit, so K and
// V are packed once for many rows.
constexpr int64_t kScoreBlock = 32768;

// Per-matrix element offsets of each operand over the broadcast leading dims.
struct AttnLayout {
  int64_t S, D, T, Dv, batch;
  std::vector<int64_t> q, k, v, m;
  int64_t mask_s = 0, mask_t = 0;
};

Shape lead(const Shape& s) { return s.size() >= 2 ? Shape(s.begin(), s.end() - 2) : Shape{}; }

AttnLayout layout(const KernelCtx& ctx) {
  const Shape& qs = ctx.input(0).shape();
  const Shape& ks = ctx.input(1).shape();
  const Shape& vs = ctx.input(2).shape();
  const Shape& ys = ctx.output(0).shape();
  AttnLayout l;
  l.S = qs[qs.size() - 2];
  l.D = qs.back();
  l.T = ks.back();
  l.Dv = vs.back();
  Shape batch(ys.begin(), ys.end() - 2);  // infer_attention broadcast these
  l.batch = shape_numel(batch);
  Shape mshape = ctx.has_input(3) ? ctx.input(3).shape() : Shape{};
  int64_t ms = mshape.size() >= 2 ? mshape[mshape.size() - 2] : 1;
  int64_t mt = mshape.empty() ? 1 : mshape.back();
  l.mask_t = mt == 1 ? 0 : 1;
  l.mask_s = ms == 1 ? 0 : mt;
  std::vector<Shape> st = {broadcast_strides(lead(qs), batch), broadcast_strides(lead(ks), batch),
                           broadcast_strides(lead(vs), batch), broadcast_strides(lead(mshape), batch)};
  int64_t mats[4] = {l.S * l.D, l.D * l.T, l.T * l.Dv, ms * mt};
  std::vector<int64_t>* outs[4] = {&l.q, &l.k, &l.v, &l.m};
  for (BroadcastIter it(batch, st); !it.done(); it.next())
    for (int i = 0; i < 4; i++) outs[i]->push_back(it.off[i] * mats[i]);
  return l;
}

}  // namespace

void attention_f32_with(const KernelCtx& ctx, const GemmMicro& micro,
                        void (*softmax_row)(const float* x, float* y, int64_t n)) {
  AttnLayout l = layout(ctx);
  float* y = ctx.output(0).ptr<float>();  // [batch..., S, Dv]
  if (l.batch == 0 || l.S == 0 || l.Dv == 0) return;
  const float* q = ctx.input(0).ptr<float>();  // [..., S, D]
  const float* k = ctx.input(1).ptr<float>();  // [..., D, T]
  const float* v = ctx.input(2).ptr<float>();  // [..., T, Dv]
  const float* m = ctx.has_input(3) ? ctx.input(3).ptr<float>() : nullptr;
  float scale = (float)ctx.node.attrs.get_float("scale", 1.0);
  bool div = ctx.node.attrs.get_string("scale_op", "mul") == "div";
  int64_t qrows = std::min(l.S, std::max<int64_t>(8, kScoreBlock / std::max<int64_t>(l.T, 1)));
  int64_t qblocks = (l.S + qrows - 1) / qrows;
  ctx.parallel_for(l.batch * qblocks, 1, [&](int64_t t0, int64_t t1) {
    std::vector<float> scores(qrows * std::max<int64_t>(l.T, 1));
    for (int64_t task = t0; task < t1; task++) {
      int64_t b = task / qblocks, s0 = task % qblocks * qrows;
      int64_t rows = std::min(qrows, l.S - s0);
      SgemmArgs g;  // scores[rows, T] = Q[s0:s0+rows] Kt
      g.M = rows;
      g.N = l.T;
      g.K = l.D;
      g.a = q + l.q[b] + s0 * l.D;
      g.a_rs = l.D;
      g.b = k + l.k[b];
      g.b_rs = l.T;
      g.c = scores.data();
      g.c_rs = l.T;
      if (l.T > 0) sgemm(g, 1, micro);
      for (int64_t r = 0; r < rows && l.T > 0; r++) {
        float* sr = scores.data() + r * l.T;
        for (int64_t t = 0; t < l.T; t++) sr[t] = div ? sr[t] / scale : sr[t] * scale;
        if (m) {
          const float* mr = m + l.m[b] + (s0 + r) * l.mask_s;
          for (int64_t t = 0; t < l.T; t++) sr[t] += mr[t * l.mask_t];
        }
        softmax_row(sr, sr, l.T);
      }
      SgemmArgs o;  // Y[s0:s0+rows] = P V
      o.M = rows;
      o.N = l.Dv;
      o.K = l.T;
      o.a = scores.data();
      o.a_rs = l.T;
      o.b = v + l.v[b];
      o.b_rs = l.Dv;
      o.c = y + (b * l.S + s0) * l.Dv;
      o.c_rs = l.Dv;
      sgemm(o, 1, micro);
    }
  });
}

void attention_f32(const KernelCtx& ctx) {
  attention_f32_with(ctx, gemm_micro_generic(), softmax_f32_row);
}

}  // namespace ember::cpu
