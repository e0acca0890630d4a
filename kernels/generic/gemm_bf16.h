// bf16 GEMM for precision="bf16" on the CPU (gemm_bf16.cpp): A rounded to bf16 per call, W
// rounded to bf16 and packed at load (graph/fuse.cpp), products of bf16 pairs summed in fp32 as
// AVX512_BF16's vdpbf16ps does. The micro-kernels: a portable emulation here (generic, the
// fallback and the bit-level specification of the chain), AVX512_BF16 in
// kernels/x86/gemm_bf16_avx512bf16.cpp. The OpDef reference (FusedMatMul, ops_fused.cpp) sums
// the same pairs in the same order.
#pragma once
#include <cstdint>

#include "kernels/generic/kernels_generic.h"

namespace ember::cpu {

// W [K, N] (W[k, n] = w[k * rs + n * cs]) as bf16 pairs for vdpbf16ps: [ceil(N / 16),
// ceil(K / 2), 16, 2], out[p, q, j, e] = bf16(W[2 q + e, 16 p + j]) rounded to nearest even,
// zero past K and N. One 32-bit lane holds the pair (k, k + 1) of one column.
Shape bgemm_packed_b_shape(int64_t K, int64_t N);
void bgemm_pack_b(const float* w, int64_t rs, int64_t cs, int64_t K, int64_t N, uint16_t* out);

// An MR x 32 micro-kernel over bf16 pairs: c[rows, cols] (+)= A[rows, 2 kp] @ B[2 kp, cols] for
// rows <= mr, cols <= 32. A row i's pair q is a[i * lda + q] (two bf16 in a uint32, even k in
// the low half); B is one panel [kp, 16] of pairs at b and, when cols > 16, a second at
// b + pstride; c has row stride ldc and only [rows, cols] of it is touched. Every c element is
// one fp32 chain: acc = accumulate ? c : 0, then for q = 0..kp-1, acc += a[2q+1] * b[2q+1];
// acc += a[2q] * b[2q] (exact products, each add rounded to nearest even): vdpbf16ps's order
// (the tests find Zen 5's bits equal to it). NOTE: vdpbf16ps also flushes subnormal inputs
// and results to zero; the generic kernel does not, so the two differ only there.
// `round_a` converts n floats to bf16 (nearest even), for A rows; `round_pairs` rounds two
// rows x0, x1 [n] into one pair line of B's panels: out[p * pstride + j] = bf16(x0[16 p + j]) |
// bf16(x1[16 p + j]) << 16 for every p < ceil(n / 16), j < 16, zero past n.
struct BgemmMicro {
  int mr;
  void (*fn)(int64_t kp, const uint32_t* a, int64_t lda, const uint32_t* b, int64_t pstride,
             float* c, int64_t ldc, int rows, int cols, bool accumulate);
  void (*round_a)(const float* x, uint16_t* y, int64_t n);
  void (*round_pairs)(const float* x0, const float* x1, int64_t n, uint32_t* out,
                      int64_t pstride);
  const char* name;
};
const BgemmMicro& bgemm_micro_generic();

// C = act(A @ W + bias) with W from bgemm_pack_b. Batch invariant: each C element is one
// chain over k in order whatever M, N, the tiling or the thread count.
struct BgemmArgs {
  int64_t M = 0, N = 0, K = 0;
  const float* a = nullptr;  // A[m, k] = a[m * a_rs + k]
  int64_t a_rs = 0;
  const uint16_t* b_packed = nullptr;  // bgemm_pack_b of W [K, N]
  float* c = nullptr;                  // C[m, n] = c[m * c_rs + n]
  int64_t c_rs = 0;
  const float* bias = nullptr;  // [N] or nullptr; [M] with bias_per_row (Conv's channels)
  bool bias_per_row = false;
  void (*act)(const float* x, float* y, int64_t n) = nullptr;  // on finished rows, in place
};
void bgemm(const BgemmArgs& args, int max_threads, const BgemmMicro& micro);

// bgemm_pack_b per call (activations: Attention's K and V), rounding with `micro`'s row
// functions where W's rows (cs 1) or columns (rs 1) are contiguous.
void bgemm_pack_b_with(const float* w, int64_t rs, int64_t cs, int64_t K, int64_t N, uint16_t* out,
                       const BgemmMicro& micro);

// FusedMatMul whose W is bf16 pairs (bgemm_pack_b; FuseOptions::bf16_weights).
bool fused_matmul_bf16_supports(const InferCtx& ctx);
void fused_matmul_bf16_with(const KernelCtx& ctx, const BgemmMicro& micro, const GemmActs& acts);
void fused_matmul_bf16(const KernelCtx& ctx);  // the generic micro-kernel (slow: a fallback)
// Attention with precision "bf16" (attention_bf16.cpp): as attention_f32_with (scores and P V
// per query block, one thread each, softmax rows in fp32 by `scores_row`) with both GEMMs on
// bf16 operands: Q, K, V and the exponentials P rounded to bf16, pairs summed in fp32.
bool attention_bf16_supports(const InferCtx& ctx);  // attr precision "bf16"
void attention_bf16_with(const KernelCtx& ctx, const BgemmMicro& micro, AttentionRowFn scores_row);
void attention_bf16(const KernelCtx& ctx);
// Conv with precision "bf16" (conv_bf16.cpp): per (batch, group) W @ patches on the bf16 GEMM,
// the patches gathered straight into bf16 pair panels; the bias added in fp32.
bool conv_bf16_supports(const InferCtx& ctx);  // attr precision "bf16", f32 X and W
void conv_bf16_with(const KernelCtx& ctx, const BgemmMicro& micro);
void conv_bf16(const KernelCtx& ctx);

}  // namespace ember::cpu
