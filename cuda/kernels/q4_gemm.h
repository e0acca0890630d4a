// W4A16 int4 GEMM for Q4MatMul on CUDA (q4_gemm.cu): the tile layouts the kernels read, the
// launch plan, and the launchers. Plain C++17 (no CUDA headers): the host packing
// (cuda/src/q4_pack.cpp), the adapter (cuda/src/ops_q4.cpp) and the host tests include it.
//
// Layouts (T = fp16 or bf16; mma.sync m16n8k16, A row-major m16 x k16, B "col" k16 x n8):
//  - codes: int32 [Kp/16, Np/64, 32 lanes, 4 words]. Tile (kt, nt) is k16 x n64 = 8 n8
//    subtiles; lane l's word j holds subtiles 2j, 2j+1; nibble p of the word is
//    W[16 kt + q4_nibble_coord(l, j, p).k, 64 nt + q4_nibble_coord(l, j, p).n]. The kernel takes
//    nibbles (i, i + 4) with (word >> 4i) & 0x000f000f: the two halves of B register i % 2 of
//    subtile 2j + i / 2.
//  - scales, offsets: f16 [ceil(Kp / group), Np/64, 8, 8]: element (grp, nt, g, s) is the value
//    of column 64 nt + 8 s + g (0 past N and K), so lane l reads its 8 with one 16-byte load.
//  - A: T fragments [Mp/16, Kp/16, 32 lanes, 8], element e of lane l at q4_a_coord(l, e) of the
//    m16 x k16 tile (0 past M and K), written by q4_convert_a.
// Kp = K rounded up to 64 (one pipeline stage), Np = N rounded up to 64, Mp = M rounded up to 16.
#pragma once
#include <algorithm>
#include <cstdint>

// The layout functions run in the kernels too (nvcc: host and device).
#ifdef __CUDACC__
#define EMBER_Q4_HD __host__ __device__
#else
#define EMBER_Q4_HD
#endif

namespace ember::cuda {

constexpr int kQ4TileN = 64;   // columns of a weight tile (and of a block)
constexpr int kQ4StageK = 64;  // K of one pipeline stage: 4 k16 tiles

inline int64_t q4_padded_k(int64_t k) { return (k + kQ4StageK - 1) / kQ4StageK * kQ4StageK; }
inline int64_t q4_padded_n(int64_t n) { return (n + kQ4TileN - 1) / kQ4TileN * kQ4TileN; }
inline int64_t q4_padded_m(int64_t m) { return (m + 15) / 16 * 16; }
// Groups of the packed scales: every k16 tile of Kp has one (group is a multiple of 32).
inline int64_t q4_packed_groups(int64_t k, int64_t group) { return (q4_padded_k(k) + group - 1) / group; }

struct Q4Coord {
  int k, n;  // for A fragments: k = column, n = row
};
// Source of nibble p (0..7) of word j (0..3) of `lane` in a k16 x n64 weight tile.
EMBER_Q4_HD constexpr Q4Coord q4_nibble_coord(int lane, int j, int p) {
  const int g = lane / 4, t = lane % 4, i = p % 4, hi = p / 4;
  return {2 * t + 8 * (i % 2) + hi, 8 * (2 * j + i / 2) + g};
}
// Element e (0..7) of lane's A fragment: register e / 2, half e % 2 (PTX m16n8k16 .f16 A).
EMBER_Q4_HD constexpr Q4Coord q4_a_coord(int lane, int e) {
  return {2 * (lane % 4) + 8 * (e / 4) + e % 2, lane / 4 + 8 * ((e / 2) % 2)};
}

// How q4_gemm runs: the "small" kernel (a block is m16 x n64; its 4 warps split each stage's
// k16 tiles; more m16 tiles on grid.y), the "large" one (a block is m128 x n64; each warp
// owns 32 rows), or, for decode when asked (q4_launch's `stream`), the "stream" one (a block is
// m16 x n64; its 4 warps each take a quarter of the block's k16 tiles and read their codes and
// params from global memory straight into registers, q4 tiles ahead, with no barrier in the
// loop). K is split over `splits` blocks of `stages_per_split` stages each (a stage is 64 K,
// or for "stream" 16 K); the last block of each tile to finish adds the partial sums in split
// order (deterministic at any setting; no second kernel).
struct Q4Launch {
  bool small = true;               // A as float (small and stream), else fragments (large)
  bool stream = false;
  int64_t grid_x = 0, grid_y = 0;  // n64 tiles, m blocks
  int64_t stages = 0;              // Kp / 64, or Kp / 16 (stream)
  int64_t splits = 1, stages_per_split = 0;
};
// Stages of the small kernel's shared-memory ring (RING - 1 in flight per block), and how many
// of its blocks an SM holds at once (shared memory: 4 x 46.5 KB; registers: <= 128 a thread).
constexpr int kQ4RingSmall = 7, kQ4SmallBlocksPerSm = 4;
// The stream kernel: k16 tiles a block at most (its A fragments fill 32 KB of shared memory),
// tiles each lane has in flight, and blocks it plans per SM (one wave).
constexpr int kQ4StreamMaxTiles = 64, kQ4StreamDepth = 4, kQ4StreamBlocksPerSm = 4;

// The stream kernel's plan (m <= 16): about kQ4StreamBlocksPerSm blocks per SM, so every
// weight byte is requested in the first moments; at least 8 k16 tiles a block (2 a warp) and
// at most kQ4StreamMaxTiles; partial sums at most 1/8 of the codes' bytes (splits <= k / 64m).
inline Q4Launch q4_launch_stream(int64_t m, int64_t n, int64_t k, int sms) {
  Q4Launch p;
  p.stream = true;
  p.grid_x = q4_padded_n(n) / kQ4TileN;
  p.grid_y = 1;
  p.stages = q4_padded_k(k) / 16;
  const int64_t slots = kQ4StreamBlocksPerSm * std::max(sms, 1);
  const int64_t want = std::max<int64_t>(1, slots / std::max<int64_t>(p.grid_x, 1));
  const int64_t small_partials = std::max<int64_t>(1, k / (64 * std::max<int64_t>(m, 1)));
  int64_t splits = std::min({want, std::max<int64_t>(1, p.stages / 8), small_partials});
  splits = std::max(splits, (p.stages + kQ4StreamMaxTiles - 1) / kQ4StreamMaxTiles);
  p.stages_per_split = p.stages ? (p.stages + splits - 1) / splits : 0;
  p.splits = p.stages ? (p.stages + p.stages_per_split - 1) / p.stages_per_split : 1;
  return p;
}

// stream: use the stream kernel for m <= 16 unless deterministic (which keeps the small kernel
// at every M, so a row's sums never depend on its batch).
inline Q4Launch q4_launch(int64_t m, int64_t n, int64_t k, int sms, bool deterministic,
                          bool stream = false) {
  if (stream && !deterministic && m <= 16) return q4_launch_stream(m, n, k, sms);
  Q4Launch p;
  // Deterministic: one kernel and a split count independent of M, so a row's sums do not
  // depend on the batch it came in.
  p.small = deterministic || m <= 64;
  const int64_t block_m = p.small ? 16 : 128;
  p.grid_x = q4_padded_n(n) / kQ4TileN;
  p.grid_y = (m + block_m - 1) / block_m;
  p.stages = q4_padded_k(k) / kQ4StageK;
  const int64_t blocks = std::max<int64_t>(1, p.grid_x * (deterministic ? 1 : p.grid_y));
  // Decode (small kernel) streams each weight byte once, so it lives on HBM latency: at ~4.2 TB/s
  // over 132 SMs an SM drains ~17 B/cycle (~32 GB/s), and with ~1 us of loaded latency it needs
  // >= ~32 KB of loads outstanding. A small block has RING - 1 = 6 stages in flight, 6 x 2.25 KB
  // of codes and params from HBM (+ A from L2), and an SM holds 4 of them: ~54 KB outstanding,
  // so 4096 x 4096 (8.4 MB, 64 KB per SM) is issued almost whole up front. Splits round down:
  // all blocks resident in one wave (a second, partial wave would stream latency-bound at
  // ~1 block per SM). The large kernel is compute-bound: about 2 blocks per SM.
  // NOTE: measured on the H200 (CUDA graphs, 4096 x 4096, M = 1) the small kernel still runs
  // at ~600 GB/s: per wave ~3 us fixed plus ~0.7 us per stage for a lone block whatever the
  // ring depth, so something besides bytes outstanding limits it. TODO: profile (stall reasons,
  // DRAM sectors) before deeper rings or more splits; 8 splits beat 1, 2, 4, 16 and 32 there.
  // Those figures include a second kernel that added the splits (q4_reduce), now gone: the
  // last block of each tile adds them.
  int64_t splits = 1;
  if (p.small) {
    splits = std::max<int64_t>(1, kQ4SmallBlocksPerSm * std::max(sms, 1) / blocks);
  } else {
    const int64_t target = 2 * std::max(sms, 1);
    splits = blocks >= target ? 1 : (target + blocks - 1) / blocks;
  }
  // At least 4 stages per split (the partial sums cost splits * m * n * 4 bytes, <= m / 32 of
  // the codes' bytes then); at most 32 partial sums.
  splits = std::clamp<int64_t>(splits, 1, std::min<int64_t>(32, std::max<int64_t>(1, p.stages / 4)));
  p.stages_per_split = p.stages ? (p.stages + splits - 1) / splits : 0;
  p.splits = p.stages ? (p.stages + p.stages_per_split - 1) / p.stages_per_split : 1;
  return p;
}

// Prefill-sized M (not deterministic): W is dequantized once into a 16-bit [n, k] scratch (the
// bits the mma kernels dequantize to) and cuBLASLt's 16-bit GEMM runs at the tensor cores' peak:
// on the H200 the large kernel ran 4096^3 at 178 TOPS, cuBLASLt's fp16 GEMM at 765 TFLOP/s,
// and the dequantization moves ~5 bytes per weight (~10 us at 4096^2). Below this M the mma
// kernels read the codes once and win. NOTE: the crossover is estimated, not yet measured.
constexpr int64_t kQ4DequantMinM = 256;
inline bool q4_use_dequant_gemm(int64_t m, bool deterministic) {
  return !deterministic && m >= kQ4DequantMinM;
}

// The device's multiprocessor count (the current device).
int q4_multiprocessors();

// A (float) to T fragments, zero past M and K; bf16 picks bf16 over fp16. Only the large plan
// (!plan.small) reads them: the small and stream kernels convert A themselves.
void q4_convert_a(const float* a,  // [m, k]
                  void* a_frag,    // [Mp/16, Kp/16, 32, 8] T
                  int64_t m, int64_t k, bool bf16, void* stream);

// w16[r, c] = W[r, c] as T (fp16, or bf16 when `bf16`), with the mma kernels' bits: T
// fma(code, scale, offset) from the packed codes and params (q4_gemm's layouts), r < n, c < k.
void q4_dequantize(const int32_t* codes,     // [Kp/16, Np/64, 32, 4]
                   const uint16_t* scales,   // [ceil(Kp / group), Np/64, 8, 8] f16
                   const uint16_t* offsets,  // same
                   void* w16,                // [n, k] T
                   int64_t n, int64_t k, int64_t group, bool bf16, void* stream);
// y = act(y + bias) in place (bias may be null), y [m, n]: after the dequantized GEMM.
void q4_bias_act(float* y, const float* bias, int64_t m, int64_t n, int act, void* stream);

// y = act(A @ W^T + bias), W[n, k] = code * scale + offset, dequantized to T in registers,
// fp32 accumulation. act: 0 none, 1 relu, 2 gelu (erf), 3 gelu (tanh). When plan.splits > 1,
// `partial` holds plan.splits * m * n floats and `counters` plan.grid_x * plan.grid_y ints that
// are 0 (tile_counters), and are 0 again once the kernel is done; else both may be null.
void q4_gemm(const float* a,          // [m, k]: read by the small plan
             const void* a_frag,      // [Mp/16, Kp/16, 32, 8] T: large plan only, else null
             const int32_t* codes,    // [Kp/16, Np/64, 32, 4]
             const uint16_t* scales,  // [ceil(Kp / group), Np/64, 8, 8] f16
             const uint16_t* offsets, // [ceil(Kp / group), Np/64, 8, 8] f16
             const float* bias,       // [n] or null
             float* y,                // [m, n]
             float* partial,          // [splits, m, n] or null
             int* counters,           // [grid_y, grid_x] zeros, or null
             int64_t m, int64_t n, int64_t k, int64_t group, int act, bool bf16,
             const Q4Launch& plan, void* stream);

}  // namespace ember::cuda
