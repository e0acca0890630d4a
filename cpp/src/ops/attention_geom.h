// Attention geometry (the fused op in ops_fused.cpp), shared by its reference and the fast
// kernels (kernels/generic/attention_f32.cpp): which matrices to multiply and how to walk them.
//
// layout "bhsd": Q [..., S, D], Kt [..., D, T], V [..., T, Dv] -> Y [..., S, Dv].
// layout "bshd": Q [B, S, H, D], K [B, T, H, D], V [B, T, H, Dv] -> Y [B, S, H, Dv] (heads
// interleaved, as linear layers write them; no transposes needed).
// The mask (optional) broadcasts to the scores [batch..., S, T] without growing S or T.
#pragma once
#include "ember/op.h"

namespace ember {

struct AttnGeom {
  int64_t S = 0, D = 0, T = 0, Dv = 0;
  Shape batch;                      // the score matrices' leading dims ([B, H] for bshd)
  Shape q_st, k_st, v_st, m_st, y_st;  // element offset of each matrix, per batch dim
  int64_t q_rs = 0;                 // Q[s, d] at s * q_rs + d
  int64_t k_d = 0, k_t = 0;         // Kt[d, t] at d * k_d + t * k_t
  int64_t v_t = 0;                  // V[t, j] at t * v_t + j
  int64_t y_rs = 0;                 // Y[s, j] at s * y_rs + j
  int64_t mask_s = 0, mask_t = 0;   // mask[s, t] at s * mask_s + t * mask_t (0: broadcast)
  bool has_mask = false;
  Shape out;                        // Y's shape
};

// Checks the inputs' shapes against the node's layout; fails via ctx.
AttnGeom attention_geom(const InferCtx& ctx, const Shape& q, const Shape& k, const Shape& v,
                        const Shape* mask);

}  // namespace ember
