// Attention (the fused op in cpp/src/ops/ops_fused.cpp, whose reference is the specification):
// softmax(scale(Q Kt) + mask) V without writing the [.., S, T] scores to memory. Tasks are
// (batch matrix, block of query rows) on the pool; each runs Q_blk Kt and P V as one-thread
// sgemm calls on the ISA's micro-kernel, so every score and output element sums in order
// (d, then t) as the unfused MatMuls do; its rows are scaled, masked and exponentiated between
// (one row function per ISA), and each output row is divided by its sum of exponentials at the
// end (softmax's normalisation moved past P V: the same value within rounding).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <vector>

#include "kernels/generic/kernels_generic.h"
#include "ops/attention_geom.h"
#include "ops/op_util.h"

namespace ember::cpu {
namespace {

// Scores per task at most ~32K floats (128 KiB, L2-sized): as many query rows as fit, so K and
// V are packed once for many rows.
constexpr int64_t kScoreBlock = 32768;

// Element offsets of each score matrix's operands (q, k, v, mask, y), one entry per matrix.
struct Offsets {
  std::vector<int64_t> q, k, v, m, y;
};

Offsets offsets(const AttnGeom& g) {
  Offsets o;
  std::vector<int64_t>* outs[5] = {&o.q, &o.k, &o.v, &o.m, &o.y};
  for (BroadcastIter it(g.batch, {g.q_st, g.k_st, g.v_st, g.m_st, g.y_st}); !it.done(); it.next())
    for (int i = 0; i < 5; i++) outs[i]->push_back(it.off[i]);
  return o;
}

}  // namespace

float attention_scores_row(float* s, int64_t n, float scale, bool div, const float* mask,
                           int64_t mask_t) {
  for (int64_t t = 0; t < n; t++) s[t] = div ? s[t] / scale : s[t] * scale;
  if (mask)
    for (int64_t t = 0; t < n; t++) s[t] += mask[t * mask_t];
  float mx = -INFINITY;
  for (int64_t t = 0; t < n; t++) mx = s[t] > mx ? s[t] : mx;  // a NaN never wins
  for (int64_t t = 0; t < n; t++) s[t] -= mx;
  exp_f32_array(s, s, n);
  double sum = 0.0;
  for (int64_t t = 0; t < n; t++) sum += s[t];
  return (float)sum;
}

void attention_f32_with(const KernelCtx& ctx, const GemmMicro& micro, AttentionRowFn scores_row,
                        AttentionRowsFn scores_rows) {
  InferCtx ic{ctx.node, {}, {}};
  for (const Tensor* t : ctx.in) ic.in.push_back(t ? TensorType{t->dtype(), t->shape()} : TensorType{});
  const Shape* mshape = ctx.has_input(3) ? &ctx.input(3).shape() : nullptr;
  AttnGeom l = attention_geom(ic, ctx.input(0).shape(), ctx.input(1).shape(),
                              ctx.input(2).shape(), mshape);
  Offsets off = offsets(l);
  int64_t batch = (int64_t)off.q.size();
  float* y = ctx.output(0).ptr<float>();
  if (batch == 0 || l.S == 0 || l.Dv == 0) return;
  const float* q = ctx.input(0).ptr<float>();
  const float* k = ctx.input(1).ptr<float>();
  const float* v = ctx.input(2).ptr<float>();
  const float* m = ctx.has_input(3) ? ctx.input(3).ptr<float>() : nullptr;
  float scale = (float)ctx.node.attrs.get_float("scale", 1.0);
  bool div = ctx.node.attrs.get_string("scale_op", "mul") == "div";
  int64_t qrows = std::min(l.S, std::max<int64_t>(8, kScoreBlock / std::max<int64_t>(l.T, 1)));
  int64_t qblocks = (l.S + qrows - 1) / qrows;
  // Tasks are claimed one at a time (as sgemm's blocks): a worker that wakes late takes what
  // is left instead of leaving its fixed half to run after the caller's.
  const int64_t tasks = batch * qblocks;
  std::atomic<int64_t> next{0};
  ctx.parallel_for(tasks, 1, [&](int64_t, int64_t) {  // one call per thread
    std::vector<float> scores(qrows * std::max<int64_t>(l.T, 1)), sums(qrows);
    for (int64_t task; (task = next.fetch_add(1, std::memory_order_relaxed)) < tasks;) {
      int64_t b = task / qblocks, s0 = task % qblocks * qrows;
      int64_t rows = std::min(qrows, l.S - s0);
      SgemmArgs g;  // scores[rows, T] = Q[s0:s0+rows] Kt
      g.M = rows;
      g.N = l.T;
      g.K = l.D;
      g.a = q + off.q[b] + s0 * l.q_rs;
      g.a_rs = l.q_rs;
      g.b = k + off.k[b];
      g.b_rs = l.k_d;
      g.b_cs = l.k_t;
      g.c = scores.data();
      g.c_rs = l.T;
      if (l.T > 0) sgemm(g, 1, micro);
      const float* m0 = m ? m + off.m[b] + s0 * l.mask_s : nullptr;
      if (scores_rows && l.T > 0)
        scores_rows(scores.data(), rows, l.T, l.T, scale, div, m0, l.mask_s, l.mask_t, sums.data());
      for (int64_t r = 0; r < rows && l.T > 0 && !scores_rows; r++) {
        const float* mr = m ? m0 + r * l.mask_s : nullptr;
        sums[r] = scores_row(scores.data() + r * l.T, l.T, scale, div, mr, l.mask_t);
      }
      SgemmArgs o;  // Y[s0:s0+rows] = P V
      o.M = rows;
      o.N = l.Dv;
      o.K = l.T;
      o.a = scores.data();
      o.a_rs = l.T;
      o.b = v + off.v[b];
      o.b_rs = l.v_t;
      o.c = y + off.y[b] + s0 * l.y_rs;
      o.c_rs = l.y_rs;
      sgemm(o, 1, micro);
      for (int64_t r = 0; r < rows && l.T > 0; r++) {
        float* yr = o.c + r * o.c_rs;
        for (int64_t d = 0; d < l.Dv; d++) yr[d] /= sums[r];
      }
    }
  });
}

void attention_f32(const KernelCtx& ctx) {
  attention_f32_with(ctx, gemm_micro_generic(), attention_scores_row);
}

}  // namespace ember::cpu
