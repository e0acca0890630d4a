// W4A16 GEMM for Q4MatMul (reference: cpp/src/ops/ops_q4matmul.cpp): y = act(A @ W^T + bias),
// W = code * scale + offset with int4 codes in k16 x n64 mma tiles (layouts: q4_gemm.h).
// A block owns 64 columns; a cp.async ring of 64 K stages (codes, scale and offset rows, and
// for "small" the float A rows) feeds the main loop from shared memory; A becomes T (fp16 or
// bf16) fragments in the kernel (small) or first by q4_convert_a (large). Each lane dequantizes
// its 16 bytes per k16 tile in registers (nibbles | magic exponent -> exact T integers, then
// fma(code, scale, offset)) for mma.sync m16n8k16, fp32 sums. "small" (M <= 16 per block,
// decode): the 4 warps split each stage's k16 tiles and add up in shared memory; "large": m128
// blocks, a warp 32 rows over all K; "stream" (decode, opt-in): no ring, each lane loads its
// tiles into registers a few ahead. K splits write partial sums; the last block of a tile to
// finish adds them in split order (+ bias, act), so no second kernel runs. Marlin
// (IST-DASLab) is the model for the tile layout and the dequant.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "cuda/kernels/intrinsics.cuh"
#include "cuda/kernels/q4_gemm.h"

namespace ember::cuda {
namespace {

constexpr int kThreads = 128;
// Ring depths (stages of 64 K): small 7 x 6.5 KB = 45.5 KB (codes 2 KB, params 0.5 KB, float A
// 4 KB; under the 48 KB of static shared memory), large 4 x 2.5 KB.
constexpr int kRingSmall = kQ4RingSmall, kRingLarge = 4;

__device__ __forceinline__ float q4_act(float v, int act) {
  switch (act) {
    case 1: return v < 0.0f ? 0.0f : v;
    case 2: return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
    case 3: return 0.5f * v * (1.0f + tanhf(0.79788456080286536f * (v + 0.044715f * v * v * v)));
    default: return v;
  }
}

// T-specific pieces: packing two floats, the dequantization magic, the mma instruction.
struct F16Ops {
  static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
    __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&h);
  }
  // fp16 param bits (scale or offset) broadcast to both halves.
  static __device__ __forceinline__ uint32_t param2(uint16_t bits) { return bits | (uint32_t)bits << 16; }
  // Nibbles i and i + 4 of q -> fma(code, s, o) for each, in fp16. 0x6400 is 1024: its ulp is
  // 1, so (bits | 0x6400) - 1024 is the code exactly.
  static __device__ __forceinline__ uint32_t dequant(uint32_t q, int i, uint32_t s, uint32_t o) {
    uint32_t t = ((q >> (4 * i)) & 0x000f000fu) | 0x64006400u;
    const uint32_t magic = 0x64006400u;
    __half2 v = __hsub2(*reinterpret_cast<__half2*>(&t), *reinterpret_cast<const __half2*>(&magic));
    __half2 w = __hfma2(v, *reinterpret_cast<__half2*>(&s), *reinterpret_cast<__half2*>(&o));
    return *reinterpret_cast<uint32_t*>(&w);
  }
  static __device__ __forceinline__ void mma(float* c, const uint4& a, uint32_t b0, uint32_t b1) {
    const uint32_t r[4] = {a.x, a.y, a.z, a.w};
    mma_m16n8k16(__half{}, c, r, b0, b1);
  }
};

struct BF16Ops {
  static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
    __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&h);
  }
  // The packed params are fp16; their bf16 rounding here.
  static __device__ __forceinline__ uint32_t param2(uint16_t bits) {
    __half h = __ushort_as_half(bits);
    __nv_bfloat16 b = __float2bfloat16_rn(__half2float(h));
    const uint32_t u = __bfloat16_as_ushort(b);
    return u | u << 16;
  }
  // 0x4300 is 128 in bf16 (7 mantissa bits: ulp 1 at 128), so (bits | 0x4300) - 128 is exact.
  static __device__ __forceinline__ uint32_t dequant(uint32_t q, int i, uint32_t s, uint32_t o) {
    uint32_t t = ((q >> (4 * i)) & 0x000f000fu) | 0x43004300u;
    const uint32_t magic = 0x43004300u;
    __nv_bfloat162 v = __hsub2(*reinterpret_cast<__nv_bfloat162*>(&t),
                               *reinterpret_cast<const __nv_bfloat162*>(&magic));
    __nv_bfloat162 w = __hfma2(v, *reinterpret_cast<__nv_bfloat162*>(&s),
                               *reinterpret_cast<__nv_bfloat162*>(&o));
    return *reinterpret_cast<uint32_t*>(&w);
  }
  static __device__ __forceinline__ void mma(float* c, const uint4& a, uint32_t b0, uint32_t b1) {
    const uint32_t r[4] = {a.x, a.y, a.z, a.w};
    mma_m16n8k16(__nv_bfloat16{}, c, r, b0, b1);
  }
};

// Lane's A fragment of m16 tile mt, k16 tile kt as T: its 8 values (q4_a_coord), 0 past m and k.
template <class Ops>
__device__ __forceinline__ uint4 q4_a_fragment(const float* __restrict__ a,  // [m, k]
                                               int64_t m, int64_t k, int64_t mt, int64_t kt,
                                               int lane) {
  float v[8];
#pragma unroll
  for (int e = 0; e < 8; e++) {
    const Q4Coord c = q4_a_coord(lane, e);
    const int64_t row = mt * 16 + c.n, col = kt * 16 + c.k;
    v[e] = row < m && col < k ? a[row * k + col] : 0.0f;
  }
  return make_uint4(Ops::pack(v[0], v[1]), Ops::pack(v[2], v[3]), Ops::pack(v[4], v[5]),
                    Ops::pack(v[6], v[7]));
}

// One thread per (m16 tile, k16 tile, lane): that lane's A fragment.
template <class Ops>
__global__ void q4_convert_a_kernel(const float* __restrict__ a,  // [m, k]
                                    uint4* __restrict__ frag,     // [Mp/16, Kp/16, 32]
                                    int64_t m, int64_t k, int64_t kt_count, int64_t total) {
  const int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (idx >= total) return;
  const int64_t mt = idx / 32 / kt_count, kt = idx / 32 % kt_count;
  frag[idx] = q4_a_fragment<Ops>(a, m, k, mt, kt, (int)(idx % 32));
}

// acc[t] += A tile t (fragments af[t]) x the k16 x n64 weight tile of this lane's codes `w`,
// dequantized in registers with its 8 scales `s8` and offsets `o8` (one per n8 subtile).
template <class Ops, int MT>
__device__ __forceinline__ void q4_mma_tile(float (&acc)[MT][8][4], const uint4& w, const uint4& s8,
                                            const uint4& o8, const uint4 (&af)[MT]) {
  const uint16_t* sh = reinterpret_cast<const uint16_t*>(&s8);
  const uint16_t* oh = reinterpret_cast<const uint16_t*>(&o8);
  const uint32_t words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
  for (int j = 0; j < 4; j++) {
    // Word j: subtiles 2j (nibbles 0, 4 | 1, 5) and 2j + 1 (2, 6 | 3, 7).
    const uint32_t s0 = Ops::param2(sh[2 * j]), o0 = Ops::param2(oh[2 * j]);
    const uint32_t s1 = Ops::param2(sh[2 * j + 1]), o1 = Ops::param2(oh[2 * j + 1]);
    const uint32_t b00 = Ops::dequant(words[j], 0, s0, o0), b01 = Ops::dequant(words[j], 1, s0, o0);
    const uint32_t b10 = Ops::dequant(words[j], 2, s1, o1), b11 = Ops::dequant(words[j], 3, s1, o1);
#pragma unroll
    for (int t = 0; t < MT; t++) {
      Ops::mma(acc[t][2 * j], af[t], b00, b01);
      Ops::mma(acc[t][2 * j + 1], af[t], b10, b11);
    }
  }
}

// The block's sums to `out` ([m, n], or split blockIdx.z's slice of the [splits, m, n]
// partials): warps 1..KW-1 (K slots) hand theirs to warp 0 through `red`, added in warp order,
// then bias and act unless partial. `red` may overlay shared memory the main loop read: the
// first barrier waits for every warp to be done with it.
template <int MT, int KW>
__device__ __forceinline__ void q4_finish(float (&acc)[MT][8][4],
                                          float (*red)[MT * 32][32],  // [KW - 1][acc][lane]
                                          int kslot, int mt0, int nt,
                                          const float* __restrict__ bias,  // [n] or null
                                          float* __restrict__ out, int m, int n, int act,
                                          bool partial) {
  const int lane = threadIdx.x % 32, g = lane / 4;
  // C fragment: c[r] is (row g + 8 (r / 2), column 2 (lane % 4) + r % 2) of each m16 x n8.
  float* dst = partial ? out + (size_t)blockIdx.z * m * n : out;
  auto store = [&](int t, int s, int r, float v) {
    const int row = (mt0 + t) * 16 + g + 8 * (r / 2);
    const int col = nt * 64 + s * 8 + 2 * (lane % 4) + r % 2;
    if (row >= m || col >= n) return;
    if (!partial) v = q4_act(bias ? v + bias[col] : v, act);
    dst[(size_t)row * n + col] = v;
  };
  if constexpr (KW > 1) {
    __syncthreads();
    if (kslot > 0) {
#pragma unroll
      for (int t = 0; t < MT; t++)
#pragma unroll
        for (int s = 0; s < 8; s++)
#pragma unroll
          for (int r = 0; r < 4; r++) red[kslot - 1][(t * 8 + s) * 4 + r][lane] = acc[t][s][r];
    }
    __syncthreads();
    if (kslot > 0) return;
    // Warp 0 leaves the totals in red[0] (each lane its own slots) and stores them from there
    // in a rolled loop: 32 inlined activations at once would take ~50 more registers.
#pragma unroll
    for (int t = 0; t < MT; t++)
#pragma unroll
      for (int s = 0; s < 8; s++)
#pragma unroll
        for (int r = 0; r < 4; r++) {
          const int idx = (t * 8 + s) * 4 + r;
          float v = acc[t][s][r];
#pragma unroll
          for (int w = 0; w < KW - 1; w++) v += red[w][idx][lane];
          red[0][idx][lane] = v;
        }
#pragma unroll 1
    for (int idx = 0; idx < MT * 32; idx++)
      store(idx / 32, idx / 4 % 8, idx % 4, red[0][idx][lane]);
  } else {
#pragma unroll
    for (int t = 0; t < MT; t++)
#pragma unroll
      for (int s = 0; s < 8; s++)
#pragma unroll
        for (int r = 0; r < 4; r++) store(t, s, r, acc[t][s][r]);
  }
}

// K splits: after the block's partial sums are stored, the tile's counter (one per (n tile,
// m block) of the grid) counts the splits done; the last block to finish adds the tile's BM x 64
// partial sums in split order (the order q4_reduce_kernel used: the same bits whatever block
// is last), + bias, act, into y, and sets the counter back to 0 for the next launch. The
// fences make every block's partial sums visible before its count; the adder reads them past
// L1 (__ldcg).
template <int BM>
__device__ __forceinline__ void q4_split_finish(
    const float* __restrict__ partial,  // [splits, m, n]
    const float* __restrict__ bias,     // [n] or null
    float* __restrict__ y,              // [m, n]
    int* __restrict__ counters,         // [grid y, grid x]
    int m, int n, int act) {
  __shared__ int last;
  __threadfence();
  __syncthreads();
  const int tile = blockIdx.y * gridDim.x + blockIdx.x;
  if (threadIdx.x == 0) last = atomicAdd(&counters[tile], 1) == (int)gridDim.z - 1;
  __syncthreads();
  if (!last) return;
  __threadfence();
  const size_t mn = (size_t)m * n;
  const int row0 = blockIdx.y * BM, col0 = blockIdx.x * kQ4TileN;
  for (int i = threadIdx.x; i < BM * kQ4TileN; i += blockDim.x) {
    const int row = row0 + i / kQ4TileN, col = col0 + i % kQ4TileN;
    if (row >= m || col >= n) continue;
    const size_t at = (size_t)row * n + col;
    float v = __ldcg(partial + at);
    for (int s = 1; s < (int)gridDim.z; s++) v += __ldcg(partial + s * mn + at);
    if (bias) v += bias[col];
    y[at] = q4_act(v, act);
  }
  if (threadIdx.x == 0) counters[tile] = 0;
}

template <bool A_F32>
constexpr int kMinBlocks = A_F32 ? kQ4SmallBlocksPerSm : 0;

// Where column c (0..63) of A row r (0..15) sits in a stage: rotated by 8 r, which keeps the
// 16-byte pieces and the float2 pairs whole and puts the rows a half warp reads on distinct banks.
__device__ __forceinline__ int q4_a_pos(int r, int c) { return (c + 8 * r) % 64; }
// The in-kernel conversion reads fragment elements 2h, 2h + 1 as one float2.
constexpr bool q4_a_pairs_adjacent() {
  for (int lane = 0; lane < 32; lane++)
    for (int e = 0; e < 8; e += 2) {
      const Q4Coord lo = q4_a_coord(lane, e), hi = q4_a_coord(lane, e + 1);
      if (lo.k % 2 != 0 || hi.k != lo.k + 1 || hi.n != lo.n) return false;
    }
  return true;
}
static_assert(q4_a_pairs_adjacent(), "A fragment pairs must be adjacent columns of one row");

// MT m16 tiles per warp; KW warps share each stage (warp w takes its k16 tiles w, w + KW, ..).
// Block: 4 warps, m (16 MT * 4 / KW) x n64; blockIdx = (n tile, m block, K split). A ring of
// RING stages in shared memory holds each stage's codes and the two param rows (scale, offset)
// its 4 k16 tiles can touch (group >= 32 = 2 tiles, so 4 aligned tiles span at most 2 groups),
// and with A_F32 (small) the block's float A rows too, which the warps turn into T fragments
// (as q4_convert_a: no separate kernel); without it A comes as fragments (`a`) read with __ldg.
template <class Ops, int MT, int KW, int RING, bool A_F32>
__global__ void __launch_bounds__(kThreads, kMinBlocks<A_F32>)
    q4_gemm_kernel(const float* __restrict__ a32,      // [m, k] (A_F32)
                   const uint4* __restrict__ a,        // [Mp/16, Kp/16, 32] T x 8 (!A_F32)
                   const uint4* __restrict__ codes,    // [Kp/16, Np/64, 32] int32 x 4
                   const uint4* __restrict__ scales,   // [groups, Np/64, 8] f16 x 8
                   const uint4* __restrict__ offsets,  // [groups, Np/64, 8] f16 x 8
                   const float* __restrict__ bias,     // [n] or null
                   float* __restrict__ y,              // [m, n]
                   float* __restrict__ partial,        // [splits, m, n], or null: no K split
                   int* __restrict__ counters,         // [grid y, grid x] zeros (K splits)
                   int m, int n, int k, int kt_count, int nt_count, int group_tiles,
                   int stages, int stages_per_split, int act, bool a_vec) {
  constexpr int kMSlots = 4 / KW;
  static_assert(KW == 1 || kMSlots == 1, "the K-sharing warps of a block add up through one `red`");
  static_assert(!A_F32 || (MT == 1 && kMSlots == 1), "float A: one m16 tile per block");
  struct Ring {
    uint4 codes[RING][4][32];                 // [stage, k16 tile, lane]
    uint4 params[RING][2][2][8];              // [stage, scale | offset, group row, g]
    float a32[A_F32 ? RING : 1][A_F32 ? 16 : 1][64];  // [stage, row, q4_a_pos(row, k)]
  };
  // The split's partial sums of warps 1..KW-1 reuse the ring once the main loop is done.
  union Smem {
    Ring ring;
    float red[KW > 1 ? KW - 1 : 1][MT * 32][32];  // [warp - 1, acc, lane]
  };
  // 48 KB of static shared memory at most; the small plan counts on kQ4SmallBlocksPerSm per SM
  // (228 KB, 1 KB reserved per block).
  static_assert(sizeof(Smem) <= 48 * 1024, "static shared memory");
  static_assert(!A_F32 || (sizeof(Smem) + 1024) * kQ4SmallBlocksPerSm <= 228 * 1024, "small blocks per SM");
  __shared__ __align__(16) Smem sm;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4;
  const int kslot = warp % KW, mslot = warp / KW;
  const int nt = blockIdx.x;
  const int mt0 = (blockIdx.y * kMSlots + mslot) * MT;  // first m16 tile of this warp
  const int mt_count = (m + 15) / 16;
  const int s_begin = blockIdx.z * stages_per_split;
  const int ns = min(stages, s_begin + stages_per_split) - s_begin;
  const int rows = min(16, m - mt0 * 16);  // A rows of the (first) m16 tile, > 0 while mt0 < mt_count

  float acc[MT][8][4];
#pragma unroll
  for (int i = 0; i < MT; i++)
#pragma unroll
    for (int s = 0; s < 8; s++)
#pragma unroll
      for (int r = 0; r < 4; r++) acc[i][s][r] = 0.0f;

  // Each thread copies one 16-byte piece of the codes (tile `warp`, its lane); warp 0 also the
  // 32 pieces of the param rows (lane: scale | offset, row, g); with A_F32 the threads share
  // the stage's `rows` x 64 floats of A in 16-byte pieces (a_vec: K % 4 == 0 and A 16-byte
  // aligned) or 4-byte ones, and store the zeros past K themselves.
  auto load = [&](int i) {
    if (i < ns) {
      const int slot = i % RING, kt0 = (s_begin + i) * 4, kt = kt0 + warp;
      cp_async16(&sm.ring.codes[slot][warp][lane], codes + ((size_t)kt * nt_count + nt) * 32 + lane);
      if constexpr (A_F32) {
        const int k0 = kt0 * 16;
        const float* src = a32 + (size_t)mt0 * 16 * k + k0;
        if (a_vec) {
          for (int p = threadIdx.x; p < rows * 16; p += kThreads) {
            const int r = p / 16, c = p % 16 * 4;
            float* dst = &sm.ring.a32[slot][r][q4_a_pos(r, c)];
            if (k0 + c < k)  // then k0 + c + 3 < k too (K % 4 == 0)
              cp_async16(dst, src + (size_t)r * k + c);
            else
              *reinterpret_cast<float4*>(dst) = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
          }
        } else {
          for (int p = threadIdx.x; p < rows * 64; p += kThreads) {
            const int r = p / 64, c = p % 64;
            float* dst = &sm.ring.a32[slot][r][q4_a_pos(r, c)];
            if (k0 + c < k)
              cp_async4(dst, src + (size_t)r * k + c);
            else
              *dst = 0.0f;
          }
        }
      }
      if (warp == 0) {
        const int which = lane / 16, row = lane / 8 % 2, gg = lane % 8;
        const int grp = (kt0 + 3 * row) / group_tiles;
        cp_async16(&sm.ring.params[slot][which][row][gg],
                   (which ? offsets : scales) + ((size_t)grp * nt_count + nt) * 8 + gg);
      }
    }
    cp_async_commit();  // empty groups too: the wait below counts groups
  };
#pragma unroll
  for (int i = 0; i < RING - 1; i++) load(i);

  for (int i = 0; i < ns; i++) {
    cp_async_wait<RING - 2>();  // stage i has landed (this thread's pieces) ...
    __syncthreads();            // ... everyone's, and stage i - 1's slot is free again
    load(i + RING - 1);
    if (mt0 >= mt_count) continue;  // a warp past M (large kernel) only helps load
    const int slot = i % RING, kt0 = (s_begin + i) * 4;
#pragma unroll
    for (int q = 0; q < 4 / KW; q++) {
      const int kk = kslot + q * KW, kt = kt0 + kk;
      const uint4 w = sm.ring.codes[slot][kk][lane];
      const int row = kt / group_tiles - kt0 / group_tiles;  // 0 or 1
      const uint4 s8 = sm.ring.params[slot][0][row][g], o8 = sm.ring.params[slot][1][row][g];
      uint4 af[MT];
      if constexpr (A_F32) {
        // This lane's fragment, as q4_convert_a builds it (elements 2h, 2h + 1 are adjacent
        // columns of one row); rows past M (never copied) are 0.
        uint32_t reg[4];
#pragma unroll
        for (int h = 0; h < 4; h++) {
          const Q4Coord c = q4_a_coord(lane, 2 * h);
          const float2 v = c.n < rows
              ? *reinterpret_cast<const float2*>(&sm.ring.a32[slot][c.n][q4_a_pos(c.n, kk * 16 + c.k)])
              : make_float2(0.0f, 0.0f);
          reg[h] = Ops::pack(v.x, v.y);
        }
        af[0] = make_uint4(reg[0], reg[1], reg[2], reg[3]);
      } else {
#pragma unroll
        for (int t = 0; t < MT; t++)
          af[t] = mt0 + t < mt_count ? __ldg(a + ((size_t)(mt0 + t) * kt_count + kt) * 32 + lane)
                                     : make_uint4(0, 0, 0, 0);
      }
      q4_mma_tile<Ops, MT>(acc, w, s8, o8, af);
    }
  }
  cp_async_wait<0>();
  q4_finish<MT, KW>(acc, sm.red, kslot, mt0, nt, bias, partial ? partial : y, m, n, act,
                    partial != nullptr);
  if (partial) q4_split_finish<16 * MT * kMSlots>(partial, bias, y, counters, m, n, act);
}

// Decode (plan.stream, M <= 16): a block is m16 x n64 and owns one split's k16 tiles, a
// quarter to each warp. A lane reads its codes, scales and offsets from global memory straight
// into a U-deep register ring (U tiles in flight a lane), so the main loop has no barrier and no
// shared-memory round trip; the block's A fragments are staged in shared memory once, while the
// first U tiles are in flight. NOTE: written without a GPU (verified on the emulated device,
// cuda/emu); opt-in (EMBER_CUDA_Q4_KERNEL=stream) until check_quant.sh has timed it.
template <class Ops, int U>
__global__ void __launch_bounds__(kThreads, kQ4StreamBlocksPerSm)
    q4_stream_kernel(const float* __restrict__ a32,      // [m, k]
                     const uint4* __restrict__ codes,    // [Kp/16, Np/64, 32] int32 x 4
                     const uint4* __restrict__ scales,   // [groups, Np/64, 8] f16 x 8
                     const uint4* __restrict__ offsets,  // [groups, Np/64, 8] f16 x 8
                     const float* __restrict__ bias,     // [n] or null
                     float* __restrict__ y,              // [m, n]
                     float* __restrict__ partial,        // [splits, m, n], or null: no K split
                     int* __restrict__ counters,         // [grid x] zeros (K splits)
                     int m, int n, int k, int nt_count, int group_tiles, int tiles,
                     int tiles_per_split, int act) {
  union Smem {
    uint4 a[kQ4StreamMaxTiles][32];  // [k16 tile of the split, lane] A fragments
    float red[3][32][32];            // warps 1..3's sums once the loop is done
  };
  __shared__ __align__(16) Smem sm;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4;
  const int nt = blockIdx.x, t0 = blockIdx.z * tiles_per_split;
  const int count = min(tiles, t0 + tiles_per_split) - t0;  // the block's tiles, > 0
  const int quarter = (count + 3) / 4;
  const int begin = min(count, warp * quarter), end = min(count, begin + quarter);  // the warp's

  // Tile i of the block (codes, and the scale and offset rows of its group) into one ring slot.
  auto fetch = [&](int i, uint4& w, uint4& s8, uint4& o8) {
    const int kt = t0 + i;
    const size_t grp = (size_t)(kt / group_tiles) * nt_count + nt;
    w = __ldg(codes + ((size_t)kt * nt_count + nt) * 32 + lane);
    s8 = __ldg(scales + grp * 8 + g);
    o8 = __ldg(offsets + grp * 8 + g);
  };
  uint4 rw[U], rs[U], ro[U];
#pragma unroll
  for (int u = 0; u < U; u++)
    if (begin + u < end) fetch(begin + u, rw[u], rs[u], ro[u]);
  for (int i = threadIdx.x; i < count * 32; i += kThreads)
    sm.a[i / 32][i % 32] = q4_a_fragment<Ops>(a32, m, k, blockIdx.y, t0 + i / 32, i % 32);
  __syncthreads();

  float acc[1][8][4];
#pragma unroll
  for (int s = 0; s < 8; s++)
#pragma unroll
    for (int r = 0; r < 4; r++) acc[0][s][r] = 0.0f;
  for (int base = begin; base < end; base += U) {
#pragma unroll
    for (int u = 0; u < U; u++) {
      const int i = base + u;
      if (i < end) {
        const uint4 w = rw[u], s8 = rs[u], o8 = ro[u];
        if (i + U < end) fetch(i + U, rw[u], rs[u], ro[u]);  // refill the slot: U stay in flight
        const uint4 af[1] = {sm.a[i][lane]};
        q4_mma_tile<Ops, 1>(acc, w, s8, o8, af);
      }
    }
  }
  q4_finish<1, 4>(acc, sm.red, warp, blockIdx.y, nt, bias, partial ? partial : y, m, n, act,
                  partial != nullptr);
  if (partial) q4_split_finish<16>(partial, bias, y, counters, m, n, act);
}

// One thread per (k16 tile, n64 tile, lane): its 32 nibbles, dequantized exactly as the mma
// kernels do (Ops::dequant on nibble pairs), scattered to their (row, column) of w16.
template <class Ops>
__global__ void q4_dequantize_kernel(const uint4* __restrict__ codes,    // [Kp/16, Np/64, 32]
                                     const uint4* __restrict__ scales,   // [groups, Np/64, 8]
                                     const uint4* __restrict__ offsets,  // [groups, Np/64, 8]
                                     uint16_t* __restrict__ w16,         // [n, k]
                                     int64_t n, int64_t k, int nt_count, int group_tiles,
                                     int64_t total) {
  const int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (idx >= total) return;
  const int lane = (int)(idx % 32), g = lane / 4;
  const int64_t nt = idx / 32 % nt_count, kt = idx / 32 / nt_count;
  const uint4 w = codes[idx];
  const size_t grp = (size_t)(kt / group_tiles) * nt_count + nt;
  const uint4 s8 = scales[grp * 8 + g], o8 = offsets[grp * 8 + g];
  const uint16_t* sh = reinterpret_cast<const uint16_t*>(&s8);
  const uint16_t* oh = reinterpret_cast<const uint16_t*>(&o8);
  const uint32_t words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
  for (int j = 0; j < 4; j++)
#pragma unroll
    for (int i = 0; i < 4; i++) {
      const int sub = 2 * j + i / 2;
      const uint32_t pair = Ops::dequant(words[j], i, Ops::param2(sh[sub]), Ops::param2(oh[sub]));
#pragma unroll
      for (int hi = 0; hi < 2; hi++) {
        const Q4Coord c = q4_nibble_coord(lane, j, i + 4 * hi);  // nibble i (low half), i + 4
        const int64_t row = nt * 64 + c.n, col = kt * 16 + c.k;
        if (row < n && col < k) w16[row * k + col] = (uint16_t)(pair >> (16 * hi));
      }
    }
}

__global__ void q4_bias_act_kernel(float* __restrict__ y, const float* __restrict__ bias,
                                   int64_t mn, int64_t n, int act) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < mn;
       i += (int64_t)gridDim.x * blockDim.x)
    y[i] = q4_act(bias ? y[i] + bias[i % n] : y[i], act);
}

template <class Ops>
void launch_gemm(const float* a32, const void* a_frag, const int32_t* codes, const uint16_t* scales,
                 const uint16_t* offsets, const float* bias, float* y, float* partial,
                 int* counters, int64_t m, int64_t n, int64_t k, int64_t group, int act,
                 const Q4Launch& p, cudaStream_t s) {
  const dim3 grid((unsigned)p.grid_x, (unsigned)p.grid_y, (unsigned)p.splits);
  if (p.splits == 1) partial = nullptr, counters = nullptr;
  const int kt_count = (int)(q4_padded_k(k) / 16);
  const bool a_vec = k % 4 == 0 && reinterpret_cast<uintptr_t>(a32) % 16 == 0;
  const auto* a = static_cast<const uint4*>(a_frag);
  const auto* c = reinterpret_cast<const uint4*>(codes);
  const auto* sc = reinterpret_cast<const uint4*>(scales);
  const auto* of = reinterpret_cast<const uint4*>(offsets);
  if (p.stream) {
    auto* kernel = q4_stream_kernel<Ops, kQ4StreamDepth>;
    EMBER_LAUNCH(kernel, grid, kThreads, 0, s)(
        a32, c, sc, of, bias, y, partial, counters, (int)m, (int)n, (int)k, (int)p.grid_x,
        (int)(group / 16), (int)p.stages, (int)p.stages_per_split, act);
  } else if (p.small) {
    auto* kernel = q4_gemm_kernel<Ops, 1, 4, kRingSmall, true>;
    // Four 46 KB blocks per SM need the largest shared-memory carveout (a hint; once per T).
    static const bool carveout = [kernel] {
      if (cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout,
                               cudaSharedmemCarveoutMaxShared) != cudaSuccess)
        cudaGetLastError();  // only a hint
      return true;
    }();
    (void)carveout;
    EMBER_LAUNCH(kernel, grid, kThreads, 0, s)(
        a32, a, c, sc, of, bias, y, partial, counters, (int)m, (int)n, (int)k, kt_count,
        (int)p.grid_x, (int)(group / 16), (int)p.stages, (int)p.stages_per_split, act, a_vec);
  } else {
    auto* kernel = q4_gemm_kernel<Ops, 2, 1, kRingLarge, false>;
    EMBER_LAUNCH(kernel, grid, kThreads, 0, s)(
        a32, a, c, sc, of, bias, y, partial, counters, (int)m, (int)n, (int)k, kt_count,
        (int)p.grid_x, (int)(group / 16), (int)p.stages, (int)p.stages_per_split, act, a_vec);
  }
}

}  // namespace

int q4_multiprocessors() {
  int dev = 0, sms = 0;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) {
    cudaGetLastError();  // not this launch's error: plan for one SM's worth
    return 1;
  }
  return sms;
}

void q4_convert_a(const float* a, void* a_frag, int64_t m, int64_t k, bool bf16, void* stream) {
  const int64_t kt_count = q4_padded_k(k) / 16, total = q4_padded_m(m) / 16 * kt_count * 32;
  if (total == 0) return;
  const unsigned blocks = (unsigned)((total + 255) / 256);
  auto s = static_cast<cudaStream_t>(stream);
  auto* frag = static_cast<uint4*>(a_frag);
  if (bf16)
    EMBER_LAUNCH(q4_convert_a_kernel<BF16Ops>, blocks, 256, 0, s)(a, frag, m, k, kt_count, total);
  else
    EMBER_LAUNCH(q4_convert_a_kernel<F16Ops>, blocks, 256, 0, s)(a, frag, m, k, kt_count, total);
}

void q4_dequantize(const int32_t* codes, const uint16_t* scales, const uint16_t* offsets, void* w16,
                   int64_t n, int64_t k, int64_t group, bool bf16, void* stream) {
  const int nt_count = (int)(q4_padded_n(n) / kQ4TileN);
  const int64_t total = q4_padded_k(k) / 16 * nt_count * 32;
  if (n == 0 || total == 0) return;
  auto s = static_cast<cudaStream_t>(stream);
  const auto* c = reinterpret_cast<const uint4*>(codes);
  const auto* sc = reinterpret_cast<const uint4*>(scales);
  const auto* of = reinterpret_cast<const uint4*>(offsets);
  auto* w = static_cast<uint16_t*>(w16);
  const unsigned blocks = (unsigned)((total + 255) / 256);
  if (bf16)
    EMBER_LAUNCH(q4_dequantize_kernel<BF16Ops>, blocks, 256, 0, s)(c, sc, of, w, n, k, nt_count,
                                                                   (int)(group / 16), total);
  else
    EMBER_LAUNCH(q4_dequantize_kernel<F16Ops>, blocks, 256, 0, s)(c, sc, of, w, n, k, nt_count,
                                                                  (int)(group / 16), total);
}

void q4_bias_act(float* y, const float* bias, int64_t m, int64_t n, int act, void* stream) {
  const int64_t mn = m * n;
  if (mn == 0 || (!bias && act == 0)) return;
  const int64_t blocks = std::min<int64_t>((mn + 255) / 256, 65535);
  const auto s = static_cast<cudaStream_t>(stream);
  EMBER_LAUNCH(q4_bias_act_kernel, (unsigned)blocks, 256, 0, s)(y, bias, mn, n, act);
}

void q4_gemm(const float* a, const void* a_frag, const int32_t* codes, const uint16_t* scales,
             const uint16_t* offsets, const float* bias, float* y, float* partial, int* counters,
             int64_t m, int64_t n, int64_t k, int64_t group, int act, bool bf16,
             const Q4Launch& plan, void* stream) {
  if (m == 0 || n == 0 || plan.stages == 0) return;
  auto s = static_cast<cudaStream_t>(stream);
  if (bf16)
    launch_gemm<BF16Ops>(a, a_frag, codes, scales, offsets, bias, y, partial, counters, m, n, k,
                         group, act, plan, s);
  else
    launch_gemm<F16Ops>(a, a_frag, codes, scales, offsets, bias, y, partial, counters, m, n, k,
                        group, act, plan, s);
}

}  // namespace ember::cuda
