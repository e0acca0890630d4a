// Q8MatMul: Y = act(A @ W^T + bias) with W int8 per 32-block, computed W8A16i (int16 activations:
// int8 ones made SmolLM2's logits noisy enough to flip greedy tokens). Replaces MatMul on GGUF
// Q8_0 weights [-> Add(., bias)] [-> Relu | Gelu] (e.g. SmolLM2's tied LM head); the weights are
// repacked at load (kernels/generic/gemm_q8.h: q8_pack_from_q8_0, q8_quantize).
//   0 A      f32 [..., K]
//   1 codes  i8 [N, nb, 32], nb = ceil(K / 32): W[n, 32b + j] at codes[n, b, j] (past K: 0 when
//            packed, ignored here)
//   2 scales f32 [N, nb]     W[n, k] = codes[n, k] * scales[n, k / 32]
//   3 bias   f32 [N] (optional)
// attrs n = N, k = K, activation "none" | "relu" | "gelu" | "gelu_tanh". Output f32 [..., N].
// Exact float semantics (every kernel follows it bit for bit but for the activation):
//  - A row m, per 32-block b zero-padded past K: amax = max |a|, d_b = amax / 32767 (NaN when
//    the block holds an inf or NaN: that row's outputs are NaN), q = d_b ? clamp(nearbyint(a /
//    d_b), -32767, 32767) : 0 (int16, 0 in a non-finite block; division; round half to even).
//  - Per (m, n): s_b = d_b * scales[n, b] (one float product); 8 lanes, lane l of block b is
//    p_l = sum over j in {2l, 2l+1, 2l+16, 2l+17} of q[32b + j] * codes[n, b, j] (AVX2's
//    madd_epi16 of elements 0..15 plus that of 16..31; int, exact, |p_l| <= 4 * 32767 * 128 =
//    16776704 < 2^24 so (float)p_l is exact); acc_l = fma(p_l, s_b, acc_l) over b in order,
//    from 0.
//  - y = sum8(acc), sum8(a) = ((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7)), then
//    y + bias[n], then the activation (in double here, as FusedMatMul; kernels use their ISA's
//    activation rows).
// Q8Gather: embedding rows from the same packed table. 0 codes i8 [V, nb, 32], 1 scales f32
// [V, nb], 2 indices i32 | i64 [...] (-V .. V-1, negative ones wrap as ONNX Gather; others are
// an Input error); attr k = K. Output f32 [..., K], out[i, k] = codes[idx_i, k] * scales[idx_i,
// k / 32] (one float product). Its reference is its kernel (cpu::q8gather).
#include <cmath>
#include <string>
#include <vector>

#include "kernels/generic/gemm_q8.h"
#include "ops/op_util.h"

namespace ember {
namespace {

// codes i8 [rows, nb, 32] and scales f32 [rows, nb]; rows < 0: any number V, taken from codes.
void check_table(const InferCtx& ctx, int ci, int si, int64_t rows, int64_t k) {
  const int64_t nb = k / 32 + (k % 32 != 0);  // k may be any attribute value: no k + 31
  const TensorType& c = ctx.in[ci];
  const TensorType& s = ctx.in[si];
  const std::string rows_str = rows < 0 ? std::string("V") : std::to_string(rows);
  if (rows < 0 && c.shape.size() == 3) rows = c.shape[0];
  if (c.dtype != DType::I8 || c.shape != Shape{rows, nb, 32})
    ctx.fail("codes must be int8 [", rows_str, ", ", nb, ", 32], got ", dtype_name(c.dtype), " ",
             shape_str(c.shape));
  if (s.dtype != DType::F32 || s.shape != Shape{rows, nb})
    ctx.fail("scales must be float32 [", rows, ", ", nb, "], got ", dtype_name(s.dtype), " ",
             shape_str(s.shape));
}

std::vector<TensorType> infer_q8matmul(const InferCtx& ctx) {
  const Attrs& at = ctx.node.attrs;
  int64_t n = at.get_int("n", -1), k = at.get_int("k", -1);
  fused_activation(&ctx, ctx.node);
  if (n < 0 || k <= 0) ctx.fail("invalid n = ", n, ", k = ", k);
  const TensorType& a = ctx.in[0];
  if (a.dtype != DType::F32) ctx.fail("A must be float32, got ", dtype_name(a.dtype));
  if (a.shape.empty() || a.shape.back() != k)
    ctx.fail("A ", shape_str(a.shape), " does not end in K = ", k);
  check_table(ctx, 1, 2, n, k);
  if (ctx.has(3) && (ctx.in[3].dtype != DType::F32 || ctx.in[3].shape != Shape{n}))
    ctx.fail("bias must be float32 [", n, "], got ", dtype_name(ctx.in[3].dtype), " ",
             shape_str(ctx.in[3].shape));
  Shape out = a.shape;
  out.back() = n;
  return one(DType::F32, out);
}

float sum8(const float* a) { return ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7])); }

void ref_q8matmul(const KernelCtx& ctx) {
  const Attrs& at = ctx.node.attrs;
  const int64_t N = at.get_int("n", 0), K = at.get_int("k", 0), nb = (K + 31) / 32;
  const float* a = ctx.input(0).ptr<float>();          // [M, K]
  const int8_t* codes = ctx.input(1).ptr<int8_t>();    // [N, nb, 32]
  const float* scales = ctx.input(2).ptr<float>();     // [N, nb]
  const float* bias = ctx.has_input(3) ? ctx.input(3).ptr<float>() : nullptr;  // [N]
  float* y = ctx.output(0).ptr<float>();                // [M, N]
  const int64_t M = ctx.input(0).numel() / K;
  FusedAct act = fused_activation(nullptr, ctx.node);
  std::vector<int> q(nb * 32);  // int16 values
  std::vector<float> d(nb);
  for (int64_t m = 0; m < M; m++) {
    // The row's activations, quantized per 32-block.
    for (int64_t b = 0; b < nb; b++) {
      float v[32], amax = 0.0f;
      bool finite = true;
      for (int j = 0; j < 32; j++) {
        v[j] = 32 * b + j < K ? a[m * K + 32 * b + j] : 0.0f;
        amax = std::max(amax, std::fabs(v[j]));
        finite = finite && std::isfinite(v[j]);
      }
      d[b] = finite ? amax / 32767.0f : NAN;
      for (int j = 0; j < 32; j++) {
        int c = finite && d[b] != 0.0f ? (int)std::nearbyint(v[j] / d[b]) : 0;
        q[32 * b + j] = std::min(32767, std::max(-32767, c));
      }
    }
    for (int64_t n = 0; n < N; n++) {
      float acc[8] = {};
      for (int64_t b = 0; b < nb; b++) {
        const int8_t* blk = codes + (n * nb + b) * 32;
        float s = d[b] * scales[n * nb + b];
        for (int l = 0; l < 8; l++) {
          int p = 0;
          for (int j : {2 * l, 2 * l + 1, 2 * l + 16, 2 * l + 17}) p += q[32 * b + j] * blk[j];
          acc[l] = std::fma((float)p, s, acc[l]);
        }
      }
      float v = sum8(acc);
      if (bias) v = v + bias[n];
      y[m * N + n] = (float)fused_activate_d(act, v);
    }
  }
}

std::vector<TensorType> infer_q8gather(const InferCtx& ctx) {
  int64_t k = ctx.node.attrs.get_int("k", -1);
  if (k <= 0) ctx.fail("invalid k = ", k);
  check_table(ctx, 0, 1, -1, k);
  const TensorType& idx = ctx.in[2];
  if (idx.dtype != DType::I32 && idx.dtype != DType::I64)
    ctx.fail("indices must be int32 or int64, got ", dtype_name(idx.dtype));
  Shape out = idx.shape;
  out.push_back(k);
  return one(DType::F32, out);
}

const OpDef kOps[] = {
    {OpType::Q8MatMul, "Q8MatMul", 3, 4, 1, 1, kOpFused,
     {{"n", AttrKind::Int, true}, {"k", AttrKind::Int, true}, {"activation", AttrKind::String}},
     infer_q8matmul, ref_q8matmul},
    {OpType::Q8Gather, "Q8Gather", 3, 3, 1, 1, kOpFused, {{"k", AttrKind::Int, true}}, infer_q8gather,
     cpu::q8gather},
};

}  // namespace

std::span<const OpDef> op_defs_q8matmul() { return kOps; }

}  // namespace ember
