// Attention with precision "bf16" (the fused op in cpp/src/ops/ops_fused.cpp; its reference
// is the specification): attention_f32.cpp's plan with the bf16 GEMM (gemm_bf16.cpp). Tasks
// are (batch matrix, block of query rows); each packs its Kt and V as bf16 pairs (rounded to
// nearest even), runs Q_blk Kt on bf16 operands into fp32 scores, turns each score row into
// exponentials in fp32 (the ISA's row function), then P V with P rounded to bf16, and divides
// each output row by its fp32 sum. Every score and output element is one vdpbf16ps chain, the
// same whatever S, the block or the thread: results do not depend on the batch.
#include <algorithm>
#include <vector>

#include "kernels/generic/gemm_bf16.h"
#include "ops/attention_geom.h"
#include "ops/op_util.h"

namespace ember::cpu {
namespace {

// Scores per task at most ~32K floats (128 KiB, L2-sized), as attention_f32.cpp.
constexpr int64_t kScoreBlock = 32768;

}  // namespace

bool attention_bf16_supports(const InferCtx& ctx) {
  return ctx.node.attrs.get_string("precision", "fp32") == "bf16";
}

void attention_bf16_with(const KernelCtx& ctx, const BgemmMicro& micro, AttentionRowFn scores_row) {
  InferCtx ic{ctx.node, {}, {}};
  for (const Tensor* t : ctx.in)
    ic.in.push_back(t ? TensorType{t->dtype(), t->shape()} : TensorType{});
  const Shape* mshape = ctx.has_input(3) ? &ctx.input(3).shape() : nullptr;
  AttnGeom l = attention_geom(ic, ctx.input(0).shape(), ctx.input(1).shape(),
                              ctx.input(2).shape(), mshape);
  // Element offsets of each score matrix's operands: q, k, v, mask, y.
  std::vector<int64_t> off[5];
  for (BroadcastIter it(l.batch, {l.q_st, l.k_st, l.v_st, l.m_st, l.y_st}); !it.done(); it.next())
    for (int i = 0; i < 5; i++) off[i].push_back(it.off[i]);
  const int64_t batch = (int64_t)off[0].size();
  float* y = ctx.output(0).ptr<float>();
  if (batch == 0 || l.S == 0 || l.Dv == 0) return;
  if (l.T == 0) {  // no keys: P V is empty
    for (int64_t b = 0; b < batch; b++)
      for (int64_t s = 0; s < l.S; s++)
        std::fill_n(y + off[4][b] + s * l.y_rs, l.Dv, 0.0f);
    return;
  }
  const float* q = ctx.input(0).ptr<float>();
  const float* k = ctx.input(1).ptr<float>();
  const float* v = ctx.input(2).ptr<float>();
  const float* m = ctx.has_input(3) ? ctx.input(3).ptr<float>() : nullptr;
  const float scale = (float)ctx.node.attrs.get_float("scale", 1.0);
  const bool div = ctx.node.attrs.get_string("scale_op", "mul") == "div";
  const int64_t qrows = std::min(l.S, std::max<int64_t>(8, kScoreBlock / l.T));
  const int64_t qblocks = ceil_div(l.S, qrows);
  const int64_t kt_size = ceil_div(l.T, 16) * ceil_div(l.D, 2) * 32;  // bf16 elements
  const int64_t v_size = ceil_div(l.Dv, 16) * ceil_div(l.T, 2) * 32;
  ctx.parallel_for(batch * qblocks, 1, [&](int64_t t0, int64_t t1) {
    std::vector<float> scores(qrows * l.T), sums(qrows);
    std::vector<uint16_t> kt_p(kt_size), v_p(v_size);
    int64_t packed_b = -1;
    for (int64_t task = t0; task < t1; task++) {
      const int64_t b = task / qblocks, s0 = task % qblocks * qrows;
      const int64_t rows = std::min(qrows, l.S - s0);
      if (b != packed_b) {  // Kt [D, T] and V [T, Dv] as bf16 pairs, once per matrix
        bgemm_pack_b_with(k + off[1][b], l.k_d, l.k_t, l.D, l.T, kt_p.data(), micro);
        bgemm_pack_b_with(v + off[2][b], l.v_t, 1, l.T, l.Dv, v_p.data(), micro);
        packed_b = b;
      }
      BgemmArgs g;  // scores[rows, T] = Q[s0:s0+rows] Kt
      g.M = rows;
      g.N = l.T;
      g.K = l.D;
      g.a = q + off[0][b] + s0 * l.q_rs;
      g.a_rs = l.q_rs;
      g.b_packed = kt_p.data();
      g.c = scores.data();
      g.c_rs = l.T;
      bgemm(g, 1, micro);
      for (int64_t r = 0; r < rows; r++) {
        const float* mr = m ? m + off[3][b] + (s0 + r) * l.mask_s : nullptr;
        sums[r] = scores_row(scores.data() + r * l.T, l.T, scale, div, mr, l.mask_t);
      }
      BgemmArgs o;  // Y[s0:s0+rows] = P V
      o.M = rows;
      o.N = l.Dv;
      o.K = l.T;
      o.a = scores.data();
      o.a_rs = l.T;
      o.b_packed = v_p.data();
      o.c = y + off[4][b] + s0 * l.y_rs;
      o.c_rs = l.y_rs;
      bgemm(o, 1, micro);
      for (int64_t r = 0; r < rows; r++) {
        float* yr = o.c + r * o.c_rs;
        for (int64_t d = 0; d < l.Dv; d++) yr[d] /= sums[r];
      }
    }
  });
}

void attention_bf16(const KernelCtx& ctx) {
  attention_bf16_with(ctx, bgemm_micro_generic(), attention_scores_row);
}

}  // namespace ember::cpu
