// Fused attention (SDPA) on CUDA: the launchers of cuda/kernels/attention.cu, and what they
// share with the host plan (cuda/src/attention_plan.h): the argument block, the tile sizes and
// shared-memory layouts, and the online-softmax rules, which the CPU emulation runs too.
// Plain C++ (no CUDA headers); under nvcc the helpers are __host__ __device__.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>

#ifdef __CUDACC__
#define EMBER_ATTN_HD __host__ __device__ inline
#else
#define EMBER_ATTN_HD inline
#endif

namespace ember::cuda {

// Batch dims left after merging (attention_args): more than this runs on the CPU.
constexpr int kAttnMaxBatchRank = 6;
enum AttnOperand { kAttnQ = 0, kAttnK, kAttnV, kAttnM, kAttnY, kAttnOperands };

// One Attention node, every operand addressed by element strides (both layouts, broadcasting).
struct AttnArgs {
  const float* q = nullptr;     // Q[b, s, d] at off_q(b) + s * q_rs + d
  const float* k = nullptr;     // Kt[b, d, t] at off_k(b) + d * k_d + t * k_t
  const float* v = nullptr;     // V[b, t, j] at off_v(b) + t * v_t + j
  const float* mask = nullptr;  // optional; mask[b, s, t] at off_m(b) + s * mask_s + t * mask_t
  float* y = nullptr;           // Y[b, s, j] at off_y(b) + s * y_rs + j
  int64_t S = 0, T = 0, D = 0, Dv = 0;
  int64_t q_rs = 0, k_d = 0, k_t = 0, v_t = 0, y_rs = 0, mask_s = 0, mask_t = 0;
  int64_t nbatch = 1;  // product of bdim
  int nb = 0;          // batch rank
  int64_t bdim[kAttnMaxBatchRank] = {};
  int64_t st[kAttnOperands][kAttnMaxBatchRank] = {};  // element step of each operand per batch dim
  float scale = 1.0f;
  int div = 0;  // 1: scores / scale, 0: scores * scale (the rounding of the unfused graph)
};

// ---- tiles ----
// F32 (SIMT) path: 4 warps, 4 query rows each; a key tile has one key per lane.
constexpr int kAttnF32Rows = 16;
constexpr int kAttnF32Keys = 32;
constexpr int kAttnF32MaxHead = 256;
// Tensor-core path: 4 warps, 16 query rows each (one wmma row block); 64 keys per tile.
constexpr int kAttnTcRows = 64;
constexpr int kAttnTcKeys = 64;
constexpr int kAttnThreads = 128;

EMBER_ATTN_HD int64_t attn_q_tiles(int64_t S, int rows) { return (S + rows - 1) / rows; }

// F32 shared memory, floats: Q [rows, D], K [keys, kpitch], V [keys, Dv]. An odd K pitch puts
// the 32 lanes' keys (one per lane, same d) in 32 different banks.
EMBER_ATTN_HD int64_t attn_f32_kpitch(int64_t D) { return D % 2 == 0 ? D + 1 : D; }
EMBER_ATTN_HD size_t attn_f32_smem_bytes(int64_t D, int64_t Dv) {
  return sizeof(float) *
         size_t(kAttnF32Rows * D + kAttnF32Keys * attn_f32_kpitch(D) + kAttnF32Keys * Dv);
}

// Tensor-core shared memory for head dim `hd` (D and Dv padded), byte offsets. Row pitches
// keep every 16-row block 32-byte aligned (wmma) and stagger rows across banks.
struct AttnTcSmem {
  int lh, ls, lp, lo;            // pitches (elements): Q/K/V halves, scores, probs, output
  size_t q, k, v, s, p, o, r;    // offsets (bytes)
  size_t bytes;
};
EMBER_ATTN_HD AttnTcSmem attn_tc_smem(int hd) {
  AttnTcSmem m{};
  m.lh = hd + 8;
  m.ls = kAttnTcKeys + 4;
  m.lp = kAttnTcKeys + 8;
  m.lo = hd + 4;
  m.q = 0;
  m.k = m.q + size_t(kAttnTcRows) * m.lh * 2;
  m.v = m.k + size_t(kAttnTcKeys) * m.lh * 2;
  m.s = m.v + size_t(kAttnTcKeys) * m.lh * 2;
  m.p = m.s + size_t(kAttnTcRows) * m.ls * 4;
  m.o = m.p + size_t(kAttnTcRows) * m.lp * 2;
  m.r = m.o + size_t(kAttnTcRows) * m.lo * 4;
  m.bytes = m.r + size_t(kAttnTcRows) * 4;
  return m;
}

// mma.sync path (same 64 rows and 64-key tiles): shared memory holds only the K and V tiles,
// fp16 / bf16 [kAttnTcKeys, hd + 8] each (the pad staggers ldmatrix rows across banks), and the
// next tiles' fp32 copies [kAttnTcKeys * hd] each.
EMBER_ATTN_HD constexpr int attn_mma_pitch(int hd) { return hd + 8; }
EMBER_ATTN_HD size_t attn_mma_smem_bytes(int hd) {
  return size_t(2) * kAttnTcKeys * (attn_mma_pitch(hd) * 2 + hd * 4);
}

// Whether the mma kernel runs `a` at head dim hd: hd 32, 64 or 128; K contiguous along d or t;
// Q, K, V and Y read and written in float2 / float4 steps, so each stride a multiple of 4
// elements and each pointer 16-byte aligned (null passes: a plan may ask before binding).
EMBER_ATTN_HD bool attn_mma_supports(const AttnArgs& a, int hd) {
  if ((hd != 32 && hd != 64 && hd != 128) || (a.k_d != 1 && a.k_t != 1)) return false;
  const int64_t k_step = a.k_d == 1 ? a.k_t : a.k_d;
  if (a.q_rs % 4 || k_step % 4 || a.v_t % 4 || a.y_rs % 4) return false;
  const int ops[] = {kAttnQ, kAttnK, kAttnV, kAttnY};
  for (int o : ops)
    for (int d = 0; d < a.nb; d++)
      if (a.st[o][d] % 4) return false;
  const void* ptrs[] = {a.q, a.k, a.v, a.y};
  for (const void* p : ptrs)
    if (reinterpret_cast<uintptr_t>(p) % 16) return false;
  return true;
}

// ---- what the kernels and the emulation share ----

// Element offsets of batch `b`'s matrices, per operand.
EMBER_ATTN_HD void attn_batch_offsets(const AttnArgs& a, int64_t b, int64_t off[kAttnOperands]) {
  for (int o = 0; o < kAttnOperands; o++) off[o] = 0;
  for (int d = a.nb - 1; d >= 0; d--) {
    int64_t i = b % a.bdim[d];
    b /= a.bdim[d];
    for (int o = 0; o < kAttnOperands; o++) off[o] += i * a.st[o][d];
  }
}

EMBER_ATTN_HD float attn_score(float dot, float scale, int div) {
  return div ? dot / scale : dot * scale;
}

// The max a tile's terms are taken relative to. While every score of a row is -inf it is 0,
// so the terms are exp(-inf) = 0, not exp(-inf - -inf) = NaN, and a later finite key counts.
EMBER_ATTN_HD float attn_shift(float m) { return m == -INFINITY ? 0.0f : m; }

// Y = O / l. A row whose scores are all -inf gives 0 / 0 = NaN, as the reference's
// exp(-inf - -inf) does; with no keys (T = 0) the reference writes 0.
EMBER_ATTN_HD float attn_finish(float o, float l, int64_t T) { return T == 0 ? 0.0f : o / l; }

// ---- launchers (return at once; nothing to launch when S, Dv or nbatch is 0) ----

// fp32 math throughout; D, Dv <= kAttnF32MaxHead.
void attention_f32(const AttnArgs& a, void* stream);
// Tensor cores (wmma 16x16x16, fp32 accumulation): Q, K, V and the probabilities rounded to
// fp16 (bf16 when `bf16`) in shared memory; scores, softmax statistics and the output in fp32.
// head_pad: one of 32, 64, 80, 96, 128, at least D and Dv. sm_80 or newer.
void attention_tc(const AttnArgs& a, int head_pad, bool bf16, void* stream);
// Same contract with mma.sync m16n8k16 in registers (attn_mma_supports(a, head_pad) holds).
void attention_mma(const AttnArgs& a, int head_pad, bool bf16, void* stream);
// Dynamic shared memory a block may opt into on the current device (bytes; 0 when unknown).
size_t attention_smem_limit();

}  // namespace ember::cuda
