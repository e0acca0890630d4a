// What the mma.sync attention kernels (attention.cu's attention_mma_kernel, paged_attention.cu's
// paged_prefill_kernel) share: a warp's 16 query rows against a tile of keys in shared memory,
// as m16n8k16 fragments. S = Q Kt (mma_scores), the online-softmax step on S (mma_softmax:
// the running max m and sum l of the lane's two rows, O rescaled, P packed as A fragments),
// O += P V (mma_pv); and the pair packing they use.
// Fragments (PTX ISA, mma.m16n8k16; g = lane / 4, c = lane % 4): A 16x16: a0 (row g, cols 2c,
// 2c+1), a1 (g + 8, 2c..), a2 (g, 2c + 8..), a3 (g + 8, 2c + 8..); B 16x8: b0 (k 2c, 2c+1;
// n g), b1 (k 2c + 8..; n g); C 16x8 fp32: c0, c1 (g, 2c..), c2, c3 (g + 8, 2c..). So the C
// tiles of keys 16k .. 16k + 15 (n-tiles 2k, 2k + 1), packed, are the A tile of k-step k.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/kernels/intrinsics.cuh"

namespace ember::cuda {

constexpr float kLog2e = 1.4426950408889634f;

__device__ __forceinline__ uint32_t pack2(__half, float lo, float hi) {
  __half2 h = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&h);
}
__device__ __forceinline__ uint32_t pack2(__nv_bfloat16, float lo, float hi) {
  __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&h);
}
// The sum of a packed pair as rounded (l sums the probabilities P @ V uses, so weights sum to 1).
__device__ __forceinline__ float pair_sum(__half, uint32_t x) {
  float2 f = __half22float2(*reinterpret_cast<__half2*>(&x));
  return f.x + f.y;
}
__device__ __forceinline__ float pair_sum(__nv_bfloat16, uint32_t x) {
  float2 f = __bfloat1622float2(*reinterpret_cast<__nv_bfloat162*>(&x));
  return f.x + f.y;
}

// sc[n] (n-tile n: keys 8n .. 8n + 7 of the tile) += Q Kt for the warp's Q fragments `qf` (NK
// k-steps of 16 head dims) and the key tile ks [keys, LH] (row pitch LH halves). K rows are B's
// columns, so plain ldmatrix; matrices (n-tile 2p, d 16kk), (2p, 16kk + 8), (2p + 1, 16kk),
// (2p + 1, 16kk + 8) are b0, b1 of n-tiles 2p and 2p + 1.
template <class H, int LH, int NK, int NS>
__device__ __forceinline__ void mma_scores(float (&sc)[NS][4], const uint32_t (&qf)[NK][4],
                                           const H* ks, int lane) {
#pragma unroll
  for (int n = 0; n < NS; n++)
#pragma unroll
    for (int e = 0; e < 4; e++) sc[n][e] = 0.0f;
  const int mi = lane >> 3;
#pragma unroll
  for (int kk = 0; kk < NK; kk++)
#pragma unroll
    for (int p = 0; p < NS / 2; p++) {
      uint32_t kf[4];
      ldmatrix_x4(kf, ks + (16 * p + 8 * (mi >> 1) + (lane & 7)) * LH + 16 * kk + 8 * (mi & 1));
      mma_m16n8k16(H{}, sc[2 * p], qf[kk], kf[0], kf[1]);
      mma_m16n8k16(H{}, sc[2 * p + 1], qf[kk], kf[2], kf[3]);
    }
}

// One key tile's online-softmax step for the lane's rows g (r = 0) and g + 8 (r = 1): `sc`
// holds the tile's scores, scaled and masked (-inf: no key), element e of n-tile n being row
// e >> 1. mx[r] is the lane's max over its scores of row r; the quad (lanes 4g .. 4g + 3)
// combines it. Then m and l move to the new max (a row all -inf so far keeps weights 0, not
// NaN), O is rescaled, and P = exp(s - m), rounded to H, becomes the A fragments `pf` of the
// k-steps over the tile's keys, l adding P as rounded.
template <class H, int NS, int NO>
__device__ __forceinline__ void mma_softmax(const float (&sc)[NS][4], float (&mx)[2],
                                            float (&m)[2], float (&l)[2], float (&o)[NO][4],
                                            uint32_t (&pf)[NS / 2][4]) {
  constexpr unsigned kAll = 0xffffffffu;
  float sh[2];
#pragma unroll
  for (int r = 0; r < 2; r++) {
    mx[r] = fmaxf(mx[r], __shfl_xor_sync(kAll, mx[r], 1));
    mx[r] = fmaxf(mx[r], __shfl_xor_sync(kAll, mx[r], 2));
    const float mn = fmaxf(m[r], mx[r]);
    sh[r] = mn == -INFINITY ? 0.0f : mn;
    const float alpha = exp2f((m[r] - sh[r]) * kLog2e);
    m[r] = mn;
    l[r] *= alpha;
#pragma unroll
    for (int n = 0; n < NO; n++) {
      o[n][2 * r] *= alpha;
      o[n][2 * r + 1] *= alpha;
    }
  }
#pragma unroll
  for (int n = 0; n < NS; n++)
#pragma unroll
    for (int r = 0; r < 2; r++) {
      const uint32_t p = pack2(H{}, exp2f((sc[n][2 * r] - sh[r]) * kLog2e),
                               exp2f((sc[n][2 * r + 1] - sh[r]) * kLog2e));
      pf[n >> 1][2 * (n & 1) + r] = p;
      l[r] += pair_sum(H{}, p);
    }
}

// After the last tile: each lane's l holds its quad's part; every lane of the quad gets the
// row's whole sum of P.
__device__ __forceinline__ void mma_row_sums(float (&l)[2]) {
#pragma unroll
  for (int r = 0; r < 2; r++) {
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
  }
}

// o[n] (n-tile n: output dims 8n .. 8n + 7) += P V for P's fragments `pf` (NP k-steps of 16
// keys) and the value tile vs [keys, LH]. V rows are B's k, so ldmatrix.trans; matrices (keys
// 16kk, cols 8(2p)), (16kk + 8, 8(2p)), (16kk, 8(2p + 1)), (16kk + 8, 8(2p + 1)) are b0, b1 of
// n-tiles 2p, 2p + 1.
template <class H, int LH, int NP, int NO>
__device__ __forceinline__ void mma_pv(float (&o)[NO][4], const uint32_t (&pf)[NP][4], const H* vs,
                                       int lane) {
  const int mi = lane >> 3;
#pragma unroll
  for (int kk = 0; kk < NP; kk++)
#pragma unroll
    for (int p = 0; p < NO / 2; p++) {
      uint32_t vf[4];
      const int row = 16 * kk + 8 * (mi & 1) + (lane & 7);
      ldmatrix_x4_trans(vf, vs + row * LH + 16 * p + 8 * (mi >> 1));
      mma_m16n8k16(H{}, o[2 * p], pf[kk], vf[0], vf[1]);
      mma_m16n8k16(H{}, o[2 * p + 1], pf[kk], vf[2], vf[3]);
    }
}

}  // namespace ember::cuda
