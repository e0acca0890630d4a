// Plans for the CUDA attention kernels and the CPU emulation of their tile loop; see
// attention_plan.h.
#include "cuda/src/attention_plan.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <vector>

namespace ember::cuda {
namespace {

// The tensor-core path runs the mma.sync kernel where it fits; EMBER_CUDA_ATTN_KERNEL=wmma keeps
// the wmma one. NOTE: no GPU has run the mma kernel yet (written after the 2026-11-29 device
// budget was spent). It passes the emulated-device tests (cuda/emu/tests/test_emu_attention.cpp)
// and ptxas for sm_90 (<= 224 registers, no spills); check.sh runs the attention tests and the
// SDPA / BERT benchmarks both ways. Read once.
bool attention_use_mma() {
  static const bool use = [] {
    const char* e = std::getenv("EMBER_CUDA_ATTN_KERNEL");
    return !(e && std::strcmp(e, "wmma") == 0);
  }();
  return use;
}

}  // namespace

int attention_tc_head_pad(int64_t D, int64_t Dv) {
  if (D <= 0 || Dv <= 0 || D % 8 != 0 || Dv % 8 != 0) return 0;
  int64_t need = std::max(D, Dv);
  for (int hd : {32, 64, 80, 96, 128})
    if (need <= hd) return hd;
  return 0;
}

bool attention_args(const AttnGeom& g, AttnArgs* a) {
  a->S = g.S;
  a->T = g.T;
  a->D = g.D;
  a->Dv = g.Dv;
  a->q_rs = g.q_rs;
  a->k_d = g.k_d;
  a->k_t = g.k_t;
  a->v_t = g.v_t;
  a->y_rs = g.y_rs;
  a->mask_s = g.has_mask ? g.mask_s : 0;
  a->mask_t = g.has_mask ? g.mask_t : 0;
  const Shape* st[kAttnOperands] = {&g.q_st, &g.k_st, &g.v_st, &g.m_st, &g.y_st};
  // Merged dims, outermost first: a dim folds into the one before it when every operand's
  // step there is the inner step times the inner size (or both are 0: broadcast across both).
  std::vector<int64_t> dims;
  std::vector<std::vector<int64_t>> steps(kAttnOperands);
  int64_t nbatch = 1;
  for (size_t i = 0; i < g.batch.size(); i++) {
    int64_t n = g.batch[i];
    nbatch *= n;
    if (n == 1) continue;
    bool merge = !dims.empty();
    for (int o = 0; o < kAttnOperands && merge; o++) merge = steps[o].back() == (*st[o])[i] * n;
    if (merge) {
      dims.back() *= n;
      for (int o = 0; o < kAttnOperands; o++) steps[o].back() = (*st[o])[i];
    } else {
      dims.push_back(n);
      for (int o = 0; o < kAttnOperands; o++) steps[o].push_back((*st[o])[i]);
    }
  }
  a->nbatch = nbatch;
  if (nbatch == 0) dims.clear();  // nothing runs; no dims to hold
  if ((int)dims.size() > kAttnMaxBatchRank) return false;
  a->nb = (int)dims.size();
  for (int d = 0; d < a->nb; d++) {
    a->bdim[d] = dims[d];
    for (int o = 0; o < kAttnOperands; o++) a->st[o][d] = steps[o][d];
  }
  return true;
}

AttnPlan attention_plan(const AttnArgs& a, Precision precision, size_t smem_limit) {
  AttnPlan p;
  const size_t limit = std::max<size_t>(smem_limit, 48 * 1024);
  int hd = precision == Precision::F32 ? 0 : attention_tc_head_pad(a.D, a.Dv);
  if (hd && attn_tc_smem(hd).bytes <= limit) {
    p.path = precision == Precision::BF16 ? AttnPath::BF16 : AttnPath::F16;
    p.rows = kAttnTcRows;
    p.keys = kAttnTcKeys;
    p.head_pad = hd;
    // Only where the wmma kernel fits too, so EMBER_CUDA_ATTN_KERNEL never changes the path.
    p.mma = attn_mma_supports(a, hd) && attention_use_mma();
    p.smem = p.mma ? attn_mma_smem_bytes(hd) : attn_tc_smem(hd).bytes;
  } else if (a.D <= kAttnF32MaxHead && a.Dv <= kAttnF32MaxHead &&
             attn_f32_smem_bytes(a.D, a.Dv) <= limit) {
    // Also what F16 / BF16 run for head dims the tensor-core kernel lacks: exact, on the device.
    p.path = AttnPath::F32;
    p.rows = kAttnF32Rows;
    p.keys = kAttnF32Keys;
    p.smem = attn_f32_smem_bytes(a.D, a.Dv);
  } else {
    p.why = "head dims over 256 (or over the device's shared memory)";
    return p;
  }
  p.q_tiles = attn_q_tiles(a.S, p.rows);
  constexpr int64_t kMaxBlocks = std::numeric_limits<int32_t>::max();  // gridDim.x
  if (p.q_tiles > 0 && a.nbatch > kMaxBlocks / p.q_tiles) {
    p.why = "more than 2^31 - 1 blocks";
    return p;
  }
  p.blocks = a.nbatch * p.q_tiles;
  p.ok = true;
  return p;
}

void attention_emulate(const AttnArgs& a, const AttnPlan& plan) {
  const int K = plan.keys;
  std::vector<float> x(K), p(K), o(a.Dv);
  for (int64_t blk = 0; blk < plan.blocks; blk++) {
    const int64_t b = blk / plan.q_tiles, s0 = (blk % plan.q_tiles) * plan.rows;
    int64_t off[kAttnOperands];
    attn_batch_offsets(a, b, off);
    for (int r = 0; r < plan.rows; r++) {  // the kernels run these rows in parallel
      const int64_t s = s0 + r;
      if (s >= a.S) continue;
      float m = -INFINITY, l = 0.0f;
      std::fill(o.begin(), o.end(), 0.0f);
      for (int64_t t0 = 0; t0 < a.T; t0 += K) {
        float tile_max = -INFINITY;
        for (int c = 0; c < K; c++) {
          const int64_t t = t0 + c;
          const bool valid = t < a.T;
          float dot = 0.0f;
          for (int64_t d = 0; d < a.D && valid; d++)
            dot = std::fma(a.q[off[kAttnQ] + s * a.q_rs + d], a.k[off[kAttnK] + d * a.k_d + t * a.k_t], dot);
          float xv = attn_score(dot, a.scale, a.div);
          if (a.mask && valid) xv += a.mask[off[kAttnM] + s * a.mask_s + t * a.mask_t];
          x[c] = valid ? xv : -INFINITY;
          tile_max = std::fmax(tile_max, x[c]);
        }
        const float mn = std::fmax(m, tile_max), sh = attn_shift(mn), alpha = std::exp(m - sh);
        float sum = 0.0f;
        for (int c = 0; c < K; c++) sum += p[c] = t0 + c < a.T ? std::exp(x[c] - sh) : 0.0f;
        l = l * alpha + sum;
        m = mn;
        const int64_t nt = std::min<int64_t>(K, a.T - t0);
        for (int64_t j = 0; j < a.Dv; j++) {
          o[j] *= alpha;
          for (int64_t c = 0; c < nt; c++) o[j] = std::fma(p[c], a.v[off[kAttnV] + (t0 + c) * a.v_t + j], o[j]);
        }
      }
      for (int64_t j = 0; j < a.Dv; j++) a.y[off[kAttnY] + s * a.y_rs + j] = attn_finish(o[j], l, a.T);
    }
  }
}

}  // namespace ember::cuda
