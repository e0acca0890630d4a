// Q4MatMul: Y = act(A @ W^T + bias) with W int4, each row computed W4A16i (activations quantized
// to int16 per 32-block: int8 blocks cost SmolLM2-135M its greedy chat answer) or, where
// f32_rows says so, in f32 on the dequantized weights. Replaces MatMulNBits
// (bits 4) [-> Add(., bias)] [-> Relu | Gelu], and MatMul on GGUF Q4_0 / Q4_1 weights; the
// weights are repacked at load (kernels/generic/gemm_q4.h: q4_pack_from_*).
//   0 A       f32 [..., K]
//   1 codes   u8 [N, nb, 16], nb = ceil(K / 32): byte j of block b of row n holds the code of
//             W[n, 32b + j] in its low nibble and of W[n, 32b + j + 16] in its high (past K:
//             0 when packed, ignored here)
//   2 scales  f32 or f16 [N, ng], ng = ceil(K / group)
//   3 offsets the dtype of scales [N, ng]
//             W[n, k] = code[n, k] * scales[n, k / group] + offsets[n, k / group]
//             (f16: GGUF's d and m as stored, 20 bytes per block with the codes instead of 24;
//             each value enters every step below as its exact f32 value)
//   4 bias    f32 [N] (optional)
//   5 f32_rows bool or u8 [M], M = A's rows (optional; absent: all 0): rows marked non-zero
//             take the f32 path. The LLM step graph marks prompt tokens (prefill: large M, where
//             the f32 GEMM is the faster one); a row's path never depends on the other rows.
// attrs n = N, k = K, group (a positive multiple of 32), activation "none" | "relu" | "gelu" |
// "gelu_tanh". Output f32 [..., N].
// f32 rows: y = sum over k of a[k] * W[n, k], W[n, k] = fma(code, scale, offset) (one rounding),
// summed as the ISA's f32 GEMM sums (sgemm: one accumulator per element over k in order, the
// same for every M), then y + bias[n], then the activation. The reference sums in double.
// W4A16i rows, exact float semantics (every kernel follows it bit for bit but for the activation):
//  - A row m, per 32-block b zero-padded past K: amax = max |a|, d_b = amax / 32767 (NaN when
//    the block holds an inf or NaN: that row's outputs are NaN), q = d_b ? clamp(nearbyint(a /
//    d_b), -32767, 32767) : 0 (int16; division; round half to even), isum_b = sum of the
//    block's 32 q (int32; |isum| < 2^24, so exact in float). G_g = fma(d_b, isum_b, .) over the
//    blocks of group g in order, from 0.
//  - Per (m, n): 8 lanes; lane l of block b is p_l = sum of q[32b + j] * code[32b + j] over
//    j in {2l, 2l + 1, 2l + 16, 2l + 17} (int, exact; |p| < 2^21: exact in float; the lanes of
//    madd_epi16 on elements 0..15 plus madd_epi16 on 16..31). Per group g: gacc_l = fma(p_l,
//    d_b, gacc_l) over its blocks in order from 0; then acc_l = fma(gacc_l, scales[n, g],
//    acc_l), from 0 over g in order. The offset term in 8 lanes too:
//    off_{g % 8} = fma(offsets[n, g], G_g, off_{g % 8}) over g in order from 0.
//  - y = sum8(acc) + sum8(off), sum8(a) = ((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7)),
//    then y + bias[n], then the activation (in double here, as FusedMatMul; kernels use their
//    ISA's activation rows).
#include <cmath>
#include <vector>

#include "ops/op_util.h"

namespace ember {
namespace {

std::vector<TensorType> infer_q4matmul(const InferCtx& ctx) {
  const Attrs& at = ctx.node.attrs;
  int64_t n = at.get_int("n", -1), k = at.get_int("k", -1), group = at.get_int("group", -1);
  fused_activation(&ctx, ctx.node);
  if (n < 0 || k <= 0) ctx.fail("invalid n = ", n, ", k = ", k);
  if (group < 32 || group % 32 != 0) ctx.fail("group ", group, " is not a positive multiple of 32");
  const TensorType& a = ctx.in[0];
  if (a.dtype != DType::F32) ctx.fail("A must be float32, got ", dtype_name(a.dtype));
  if (a.shape.empty() || a.shape.back() != k)
    ctx.fail("A ", shape_str(a.shape), " does not end in K = ", k);
  const int64_t nb = (k + 31) / 32, ng = (k + group - 1) / group;
  if (ctx.in[1].dtype != DType::U8 || ctx.in[1].shape != Shape{n, nb, 16})
    ctx.fail("codes must be uint8 [", n, ", ", nb, ", 16], got ", dtype_name(ctx.in[1].dtype), " ",
             shape_str(ctx.in[1].shape));
  for (int i : {2, 3})
    if ((ctx.in[i].dtype != DType::F32 && ctx.in[i].dtype != DType::F16) ||
        ctx.in[i].shape != Shape{n, ng})
      ctx.fail(i == 2 ? "scales" : "offsets", " must be float32 or float16 [", n, ", ", ng,
               "], got ", dtype_name(ctx.in[i].dtype), " ", shape_str(ctx.in[i].shape));
  if (ctx.in[2].dtype != ctx.in[3].dtype)
    ctx.fail("scales (", dtype_name(ctx.in[2].dtype), ") and offsets (",
             dtype_name(ctx.in[3].dtype), ") must have the same dtype");
  if (ctx.has(4) && (ctx.in[4].dtype != DType::F32 || ctx.in[4].shape != Shape{n}))
    ctx.fail("bias must be float32 [", n, "], got ", dtype_name(ctx.in[4].dtype), " ",
             shape_str(ctx.in[4].shape));
  const int64_t m = shape_numel(a.shape) / k;
  if (ctx.has(5) && ((ctx.in[5].dtype != DType::Bool && ctx.in[5].dtype != DType::U8) ||
                     ctx.in[5].shape != Shape{m}))
    ctx.fail("f32_rows must be bool or uint8 [", m, "] (one flag per row of A), got ",
             dtype_name(ctx.in[5].dtype), " ", shape_str(ctx.in[5].shape));
  Shape out = a.shape;
  out.back() = n;
  return one(DType::F32, out);
}

float sum8(const float* a) { return ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7])); }

void ref_q4matmul(const KernelCtx& ctx) {
  const Attrs& at = ctx.node.attrs;
  const int64_t N = at.get_int("n", 0), K = at.get_int("k", 0), group = at.get_int("group", 32);
  const int64_t nb = (K + 31) / 32, ng = (K + group - 1) / group, bpg = group / 32;
  const float* a = ctx.input(0).ptr<float>();           // [M, K]
  const uint8_t* codes = ctx.input(1).ptr<uint8_t>();  // [N, nb, 16]
  const Tensor& scales = ctx.input(2);                  // [N, ng] f32 or f16
  const Tensor& offsets = ctx.input(3);                 // [N, ng] the same dtype
  // f16 -> f32 is exact: the same arithmetic on the same values.
  auto value = [](const Tensor& t, int64_t i) {
    return t.dtype() == DType::F16 ? f16_to_f32(t.ptr<uint16_t>()[i]) : t.ptr<float>()[i];
  };
  const float* bias = ctx.has_input(4) ? ctx.input(4).ptr<float>() : nullptr;  // [N]
  float* y = ctx.output(0).ptr<float>();                // [M, N]
  const int64_t M = ctx.input(0).numel() / K;
  const uint8_t* f32_rows = ctx.has_input(5) ? ctx.input(5).ptr<uint8_t>() : nullptr;  // [M]
  FusedAct act = fused_activation(nullptr, ctx.node);
  std::vector<int> q(nb * 32);
  std::vector<float> d(nb), gs(ng);
  for (int64_t m = 0; m < M; m++) {
    if (f32_rows && f32_rows[m]) {
      for (int64_t n = 0; n < N; n++) {
        double sum = 0.0;
        for (int64_t k = 0; k < K; k++) {
          const uint8_t byte = codes[(n * nb + k / 32) * 16 + k % 16];
          const int64_t g = n * ng + k / group;
          float w = std::fma((float)(k % 32 < 16 ? byte & 0x0f : byte >> 4), value(scales, g),
                             value(offsets, g));
          sum += (double)a[m * K + k] * (double)w;
        }
        float v = (float)sum;
        if (bias) v = v + bias[n];
        y[m * N + n] = (float)fused_activate_d(act, v);
      }
      continue;
    }
    // The row's activations, quantized per 32-block.
    std::fill(gs.begin(), gs.end(), 0.0f);
    for (int64_t b = 0; b < nb; b++) {
      float v[32], amax = 0.0f;
      bool finite = true;
      for (int j = 0; j < 32; j++) {
        v[j] = 32 * b + j < K ? a[m * K + 32 * b + j] : 0.0f;
        amax = std::max(amax, std::fabs(v[j]));
        finite = finite && std::isfinite(v[j]);
      }
      d[b] = finite ? amax / 32767.0f : NAN;
      int isum = 0;
      for (int j = 0; j < 32; j++) {
        int c = finite && d[b] != 0.0f ? (int)std::nearbyint(v[j] / d[b]) : 0;
        q[32 * b + j] = std::min(32767, std::max(-32767, c));
        isum += q[32 * b + j];
      }
      gs[b / bpg] = std::fma(d[b], (float)isum, gs[b / bpg]);
    }
    for (int64_t n = 0; n < N; n++) {
      float acc[8] = {}, off[8] = {};
      for (int64_t g = 0; g < ng; g++) {
        float gacc[8] = {};
        for (int64_t b = g * bpg; b < std::min(nb, (g + 1) * bpg); b++) {
          const uint8_t* blk = codes + (n * nb + b) * 16;
          for (int l = 0; l < 8; l++) {
            int p = 0;
            for (int j : {2 * l, 2 * l + 1, 2 * l + 16, 2 * l + 17})
              p += q[32 * b + j] * (j < 16 ? blk[j] & 0x0f : blk[j - 16] >> 4);
            gacc[l] = std::fma((float)p, d[b], gacc[l]);
          }
        }
        const float sc = value(scales, n * ng + g);
        for (int l = 0; l < 8; l++) acc[l] = std::fma(gacc[l], sc, acc[l]);
        off[g % 8] = std::fma(value(offsets, n * ng + g), gs[g], off[g % 8]);
      }
      float v = sum8(acc) + sum8(off);
      if (bias) v = v + bias[n];
      y[m * N + n] = (float)fused_activate_d(act, v);
    }
  }
}

const OpDef kOps[] = {
    {OpType::Q4MatMul, "Q4MatMul", 4, 6, 1, 1, kOpFused,
     {{"n", AttrKind::Int, true},
      {"k", AttrKind::Int, true},
      {"group", AttrKind::Int, true},
      {"activation", AttrKind::String}},
     infer_q4matmul, ref_q4matmul},
};

}  // namespace

std::span<const OpDef> op_defs_q4matmul() { return kOps; }

}  // namespace ember
