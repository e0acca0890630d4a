// Fused attention Y = softmax(scale(Q @ Kt) + mask) @ V, flash style: each block owns a tile of
// query rows of one batch matrix and walks the keys in tiles, keeping per row the running max m,
// the running sum l and the unnormalised output O (online softmax: on a new max, l and O are
// rescaled by exp(m_old - m_new)); scores never reach global memory. Operands are addressed by
// AttnArgs strides, so "bhsd", "bshd" and broadcasting are one kernel.
// attention_f32_kernel: fp32 SIMT, 4 warps x 4 rows, 32-key tiles (a key per lane), D, Dv <= 256.
// attention_tc_kernel: wmma 16x16x16 (fp16/bf16 in, fp32 accumulate), 4 warps x 16 rows, 64-key
// tiles; scores go through shared memory for the softmax, O stays in shared memory in fp32.
// Reference: ref_attention in cpp/src/ops/ops_fused.cpp; the tile loop is emulated on the CPU by
// attention_emulate (cuda/src/attention_plan.cpp).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include "cuda/kernels/attention.h"

namespace ember::cuda {
namespace {

constexpr unsigned kFull = 0xffffffffu;

__device__ __forceinline__ float warp_max(float x) {
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(kFull, x, o));
  return x;
}

__device__ __forceinline__ float warp_sum(float x) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(kFull, x, o);
  return x;
}

// Stages keys [t0, t0 + keys) of Kt as rows ks[t * pitch + d] (zero past T and D), reading
// along whichever of t or d is contiguous in memory.
template <class E, class Conv>
__device__ __forceinline__ void stage_keys(const AttnArgs& a, const float* kb, int64_t t0, int keys,
                                           int dpad, int pitch, E* ks, Conv conv) {
  const int n = keys * dpad;
  if (a.k_t == 1) {
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
      int d = i / keys, t = i % keys;
      bool in = t0 + t < a.T && d < a.D;
      ks[t * pitch + d] = conv(in ? kb[d * a.k_d + (t0 + t)] : 0.0f);
    }
  } else {
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
      int t = i / dpad, d = i % dpad;
      bool in = t0 + t < a.T && d < a.D;
      ks[t * pitch + d] = conv(in ? kb[(t0 + t) * a.k_t + d] : 0.0f);
    }
  }
}

// Stages rows [t0, t0 + keys) of V as vs[t * pitch + j] (zero past T and Dv: a padded key has
// probability 0, and 0 * garbage could be NaN).
template <class E, class Conv>
__device__ __forceinline__ void stage_values(const AttnArgs& a, const float* vb, int64_t t0, int keys,
                                             int jpad, int pitch, E* vs, Conv conv) {
  for (int i = threadIdx.x; i < keys * jpad; i += blockDim.x) {
    int t = i / jpad, j = i % jpad;
    bool in = t0 + t < a.T && j < a.Dv;
    vs[t * pitch + j] = conv(in ? vb[(t0 + t) * a.v_t + j] : 0.0f);
  }
}

struct ToF32 {
  __device__ float operator()(float x) const { return x; }
};
struct ToF16 {
  __device__ __half operator()(float x) const { return __float2half_rn(x); }
};
struct ToBF16 {
  __device__ __nv_bfloat16 operator()(float x) const { return __float2bfloat16_rn(x); }
};
__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }

// ---- fp32 SIMT path ----

// C: output columns per lane, ceil(Dv / 32). Block: kAttnF32Rows rows of batch b.
template <int C>
__global__ void __launch_bounds__(kAttnThreads) attention_f32_kernel(AttnArgs a, int64_t q_tiles) {
  extern __shared__ float smem_f[];
  constexpr int R = kAttnF32Rows / (kAttnThreads / 32);  // rows per warp
  constexpr int K = kAttnF32Keys;
  static_assert(K == 32, "a key per lane");
  const int D = (int)a.D, Dv = (int)a.Dv, kp = (int)attn_f32_kpitch(a.D);
  float* qs = smem_f;              // [kAttnF32Rows, D]
  float* ks = qs + kAttnF32Rows * D;  // [K, kp]
  float* vs = ks + K * kp;         // [K, Dv]
  const int64_t b = blockIdx.x / q_tiles, s0 = (blockIdx.x % q_tiles) * kAttnF32Rows;
  int64_t off[kAttnOperands];
  attn_batch_offsets(a, b, off);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;

  for (int i = threadIdx.x; i < kAttnF32Rows * D; i += blockDim.x) {
    int64_t s = s0 + i / D;
    qs[i] = s < a.S ? a.q[off[kAttnQ] + s * a.q_rs + i % D] : 0.0f;
  }
  float m[R], l[R], o[R][C];
#pragma unroll
  for (int r = 0; r < R; r++) {
    m[r] = -INFINITY;
    l[r] = 0.0f;
#pragma unroll
    for (int c = 0; c < C; c++) o[r][c] = 0.0f;
  }
  for (int64_t t0 = 0; t0 < a.T; t0 += K) {
    __syncthreads();  // the last tile's readers are done (first pass: Q is staged)
    stage_keys(a, a.k + off[kAttnK], t0, K, D, kp, ks, ToF32{});
    stage_values(a, a.v + off[kAttnV], t0, K, Dv, Dv, vs, ToF32{});
    __syncthreads();
    const int64_t t = t0 + lane;
    const bool valid = t < a.T;
    float sc[R];
#pragma unroll
    for (int r = 0; r < R; r++) sc[r] = 0.0f;
    for (int d = 0; d < D; d++) {  // summed over d in order, as the reference does
      float kv = ks[lane * kp + d];
#pragma unroll
      for (int r = 0; r < R; r++) sc[r] = fmaf(qs[(warp * R + r) * D + d], kv, sc[r]);
    }
    float p[R];
#pragma unroll
    for (int r = 0; r < R; r++) {
      const int64_t s = s0 + warp * R + r;
      float x = attn_score(sc[r], a.scale, a.div);
      if (a.mask && valid && s < a.S) x += a.mask[off[kAttnM] + s * a.mask_s + t * a.mask_t];
      if (!valid) x = -INFINITY;
      float mn = fmaxf(m[r], warp_max(x));
      float sh = attn_shift(mn);
      float alpha = expf(m[r] - sh);
      p[r] = valid ? expf(x - sh) : 0.0f;
      l[r] = l[r] * alpha + warp_sum(p[r]);
      m[r] = mn;
#pragma unroll
      for (int c = 0; c < C; c++) o[r][c] *= alpha;
    }
    const int nt = a.T - t0 < K ? (int)(a.T - t0) : K;
    for (int tt = 0; tt < nt; tt++) {
      float pt[R];
#pragma unroll
      for (int r = 0; r < R; r++) pt[r] = __shfl_sync(kFull, p[r], tt);
#pragma unroll
      for (int c = 0; c < C; c++) {
        int j = lane + 32 * c;
        float vj = j < Dv ? vs[tt * Dv + j] : 0.0f;
#pragma unroll
        for (int r = 0; r < R; r++) o[r][c] = fmaf(pt[r], vj, o[r][c]);
      }
    }
  }
#pragma unroll
  for (int r = 0; r < R; r++) {
    const int64_t s = s0 + warp * R + r;
    if (s >= a.S) continue;
    float* ys = a.y + off[kAttnY] + s * a.y_rs;
#pragma unroll
    for (int c = 0; c < C; c++) {
      int j = lane + 32 * c;
      if (j < Dv) ys[j] = attn_finish(o[r][c], l[r], a.T);
    }
  }
}

// ---- tensor-core path ----

// H: __half or __nv_bfloat16; HD: padded head dim (multiple of 16, <= 128).
template <class H, int HD, class Conv>
__global__ void __launch_bounds__(kAttnThreads) attention_tc_kernel(AttnArgs a, int64_t q_tiles) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  using namespace nvcuda;
  constexpr int BT = kAttnTcKeys, W = 16;  // keys per tile; rows per warp
  static_assert(BT == 64 && kAttnTcRows == W * kAttnThreads / 32, "softmax: a lane per 2 keys");
  constexpr int NK = HD / 16;              // 16-wide steps over the head dim
  extern __shared__ __align__(128) unsigned char smem_tc[];
  const AttnTcSmem L = attn_tc_smem(HD);
  H* qs = reinterpret_cast<H*>(smem_tc + L.q);          // [kAttnTcRows, lh]
  H* ks = reinterpret_cast<H*>(smem_tc + L.k);          // [BT, lh]  (K, so Kt col-major)
  H* vs = reinterpret_cast<H*>(smem_tc + L.v);          // [BT, lh]
  float* ss = reinterpret_cast<float*>(smem_tc + L.s);  // [kAttnTcRows, ls] scores
  H* ps = reinterpret_cast<H*>(smem_tc + L.p);          // [kAttnTcRows, lp] probabilities
  float* os = reinterpret_cast<float*>(smem_tc + L.o);  // [kAttnTcRows, lo] unnormalised Y
  float* rs = reinterpret_cast<float*>(smem_tc + L.r);  // [kAttnTcRows] rescale, then 1 / l
  const Conv conv;
  const int64_t b = blockIdx.x / q_tiles, s0 = (blockIdx.x % q_tiles) * kAttnTcRows;
  int64_t off[kAttnOperands];
  attn_batch_offsets(a, b, off);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, w0 = warp * W;

  for (int i = threadIdx.x; i < kAttnTcRows * HD; i += blockDim.x) {
    int r = i / HD, d = i % HD;
    int64_t s = s0 + r;
    qs[r * L.lh + d] = conv(s < a.S && d < a.D ? a.q[off[kAttnQ] + s * a.q_rs + d] : 0.0f);
  }
  for (int i = threadIdx.x; i < kAttnTcRows * L.lo; i += blockDim.x) os[i] = 0.0f;
  __syncthreads();
  // The warp's Q rows stay in registers for the whole key loop.
  wmma::fragment<wmma::matrix_a, 16, 16, 16, H, wmma::row_major> qf[NK];
#pragma unroll
  for (int kk = 0; kk < NK; kk++) wmma::load_matrix_sync(qf[kk], qs + w0 * L.lh + kk * 16, L.lh);
  float m[W], l[W];  // every lane holds the warp's 16 rows' statistics
#pragma unroll
  for (int r = 0; r < W; r++) {
    m[r] = -INFINITY;
    l[r] = 0.0f;
  }

  for (int64_t t0 = 0; t0 < a.T; t0 += BT) {
    __syncthreads();  // every warp is done with the last K/V tile
    stage_keys(a, a.k + off[kAttnK], t0, BT, HD, L.lh, ks, conv);
    stage_values(a, a.v + off[kAttnV], t0, BT, HD, L.lh, vs, conv);
    __syncthreads();
    // Scores of the warp's rows: [16, HD] x [HD, BT] -> ss rows w0 .. w0 + 15.
#pragma unroll
    for (int n = 0; n < BT / 16; n++) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::fill_fragment(acc, 0.0f);
#pragma unroll
      for (int kk = 0; kk < NK; kk++) {
        wmma::fragment<wmma::matrix_b, 16, 16, 16, H, wmma::col_major> kf;
        wmma::load_matrix_sync(kf, ks + n * 16 * L.lh + kk * 16, L.lh);
        wmma::mma_sync(acc, qf[kk], kf, acc);
      }
      wmma::store_matrix_sync(ss + w0 * L.ls + n * 16, acc, L.ls, wmma::mem_row_major);
    }
    __syncwarp();
    // Online softmax per row, a lane per two keys; l sums the rounded probabilities the
    // P @ V product uses, so the weights sum to 1.
    const int64_t ta = t0 + lane, tb = t0 + lane + 32;
    const bool va = ta < a.T, vb = tb < a.T;
#pragma unroll
    for (int r = 0; r < W; r++) {
      const int row = w0 + r;
      const int64_t s = s0 + row;
      float xa = attn_score(ss[row * L.ls + lane], a.scale, a.div);
      float xb = attn_score(ss[row * L.ls + lane + 32], a.scale, a.div);
      if (a.mask && s < a.S) {
        const float* mr = a.mask + off[kAttnM] + s * a.mask_s;
        if (va) xa += mr[ta * a.mask_t];
        if (vb) xb += mr[tb * a.mask_t];
      }
      if (!va) xa = -INFINITY;
      if (!vb) xb = -INFINITY;
      float mn = fmaxf(m[r], warp_max(fmaxf(xa, xb)));
      float sh = attn_shift(mn);
      float alpha = expf(m[r] - sh);
      H pa = conv(va ? expf(xa - sh) : 0.0f), pb = conv(vb ? expf(xb - sh) : 0.0f);
      ps[row * L.lp + lane] = pa;
      ps[row * L.lp + lane + 32] = pb;
      l[r] = l[r] * alpha + warp_sum(to_f32(pa) + to_f32(pb));
      m[r] = mn;
      if (lane == 0) rs[row] = alpha;
    }
    __syncwarp();
    for (int i = lane; i < W * HD; i += 32) os[(w0 + i / HD) * L.lo + i % HD] *= rs[w0 + i / HD];
    __syncwarp();
    // O rows += P [16, BT] x V [BT, HD].
#pragma unroll
    for (int n = 0; n < NK; n++) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::load_matrix_sync(acc, os + w0 * L.lo + n * 16, L.lo, wmma::mem_row_major);
#pragma unroll
      for (int kk = 0; kk < BT / 16; kk++) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, H, wmma::row_major> pf;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, H, wmma::row_major> vf;
        wmma::load_matrix_sync(pf, ps + w0 * L.lp + kk * 16, L.lp);
        wmma::load_matrix_sync(vf, vs + kk * 16 * L.lh + n * 16, L.lh);
        wmma::mma_sync(acc, pf, vf, acc);
      }
      wmma::store_matrix_sync(os + w0 * L.lo + n * 16, acc, L.lo, wmma::mem_row_major);
    }
  }
  __syncwarp();
  if (lane == 0) {
#pragma unroll
    for (int r = 0; r < W; r++) rs[w0 + r] = l[r];
  }
  __syncwarp();
  for (int i = lane; i < W * (int)a.Dv; i += 32) {
    const int r = i / (int)a.Dv, j = i % (int)a.Dv;
    const int64_t s = s0 + w0 + r;
    if (s < a.S) a.y[off[kAttnY] + s * a.y_rs + j] = attn_finish(os[(w0 + r) * L.lo + j], rs[w0 + r], a.T);
  }
#else
  __trap();  // attention_tc needs sm_80 (bf16 wmma); the plan never picks it below
#endif
}

template <class K>
void launch(K kernel, int64_t blocks, int64_t q_tiles, size_t smem, const AttnArgs& a, void* stream) {
  // Over 48 KiB of dynamic shared memory needs the opt-in (set per kernel, so each time).
  if (smem > 48 * 1024) cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
  kernel<<<(unsigned)blocks, kAttnThreads, smem, static_cast<cudaStream_t>(stream)>>>(a, q_tiles);
}

template <class H, class Conv>
void launch_tc(const AttnArgs& a, int head_pad, int64_t blocks, int64_t q_tiles, void* stream) {
  size_t smem = attn_tc_smem(head_pad).bytes;
  switch (head_pad) {
    case 32: return launch(attention_tc_kernel<H, 32, Conv>, blocks, q_tiles, smem, a, stream);
    case 64: return launch(attention_tc_kernel<H, 64, Conv>, blocks, q_tiles, smem, a, stream);
    case 80: return launch(attention_tc_kernel<H, 80, Conv>, blocks, q_tiles, smem, a, stream);
    case 96: return launch(attention_tc_kernel<H, 96, Conv>, blocks, q_tiles, smem, a, stream);
    case 128: return launch(attention_tc_kernel<H, 128, Conv>, blocks, q_tiles, smem, a, stream);
    default: break;  // the plan only picks the sizes above
  }
}

}  // namespace

void attention_f32(const AttnArgs& a, void* stream) {
  if (a.S == 0 || a.Dv == 0 || a.nbatch == 0) return;
  int64_t q_tiles = attn_q_tiles(a.S, kAttnF32Rows);
  int64_t blocks = a.nbatch * q_tiles;
  size_t smem = attn_f32_smem_bytes(a.D, a.Dv);
  switch ((a.Dv + 31) / 32) {
    case 1: return launch(attention_f32_kernel<1>, blocks, q_tiles, smem, a, stream);
    case 2: return launch(attention_f32_kernel<2>, blocks, q_tiles, smem, a, stream);
    case 3: return launch(attention_f32_kernel<3>, blocks, q_tiles, smem, a, stream);
    case 4: return launch(attention_f32_kernel<4>, blocks, q_tiles, smem, a, stream);
    case 5: return launch(attention_f32_kernel<5>, blocks, q_tiles, smem, a, stream);
    case 6: return launch(attention_f32_kernel<6>, blocks, q_tiles, smem, a, stream);
    case 7: return launch(attention_f32_kernel<7>, blocks, q_tiles, smem, a, stream);
    case 8: return launch(attention_f32_kernel<8>, blocks, q_tiles, smem, a, stream);
    default: break;  // Dv > 256: the plan refuses it
  }
}

void attention_tc(const AttnArgs& a, int head_pad, bool bf16, void* stream) {
  if (a.S == 0 || a.Dv == 0 || a.nbatch == 0) return;
  int64_t q_tiles = attn_q_tiles(a.S, kAttnTcRows);
  int64_t blocks = a.nbatch * q_tiles;
  if (bf16)
    launch_tc<__nv_bfloat16, ToBF16>(a, head_pad, blocks, q_tiles, stream);
  else
    launch_tc<__half, ToF16>(a, head_pad, blocks, q_tiles, stream);
}

size_t attention_smem_limit() {
  int dev = 0, bytes = 0;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess) {
    cudaGetLastError();  // leave no error for check_launch to find
    return 0;
  }
  return (size_t)bytes;
}

}  // namespace ember::cuda
