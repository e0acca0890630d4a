// Generic (portable C++, auto-vectorised) fast CPU kernels, multithreaded on the shared pool.
// Each has its scalar reference in the OpDef row of its op (cpp/src/ops/); tests compare them.
// Registered in cpp/src/runtime/registry.cpp.
#pragma once
#include "ember/op.h"

namespace ember::cpu {

// ---- linalg (kernels/generic/gemm_f32.cpp, norm_f32.cpp) ----
// C = alpha * A @ B + beta * bias for a batch of f32 matrices. Every C element sums K in
// order k = 0..K-1 with one accumulator, whatever M, N, the tiling or the thread count.
struct SgemmArgs {
  int64_t M = 0, N = 0, K = 0;
  const float* a = nullptr;  // A[m, k] = a[m * a_rs + k * a_cs]
  int64_t a_rs = 0, a_cs = 1;
  const float* b = nullptr;  // B[k, n] = b[k * b_rs + n * b_cs]
  int64_t b_rs = 0, b_cs = 1;
  float* c = nullptr;        // C[m, n] = c[m * c_rs + n]
  int64_t c_rs = 0;
  float alpha = 1.0f, beta = 0.0f;
  const float* bias = nullptr;  // bias[m, n] = bias[m * bias_rs + n * bias_cs] (broadcast: 0)
  int64_t bias_rs = 0, bias_cs = 0;
  int64_t batch = 1;  // matrix i uses a + a_off[i], b + b_off[i], c + c_off[i] (nullptr: 0)
  const int64_t* a_off = nullptr;
  const int64_t* b_off = nullptr;
  const int64_t* c_off = nullptr;
  // B pre-packed by sgemm_pack_b (one matrix; b and its strides are then unused).
  const float* b_packed = nullptr;
  // B packed by a callback instead of read from b (Conv packs input patches straight into
  // panels, no im2col matrix): B[k0:k0+kc, j0:j1] of matrix `mat` as ceil((j1 - j0) / 16)
  // panels [kc, 16] at bp + p * kc * 16, columns past j1 zero. Called from several threads.
  void (*b_pack)(const void* ctx, int64_t mat, int64_t k0, int64_t kc, int64_t j0, int64_t j1,
                 float* bp) = nullptr;
  const void* b_pack_ctx = nullptr;
  // Applied in place to each finished row segment after alpha and bias (x == y).
  void (*act)(const float* x, float* y, int64_t n) = nullptr;
};
// An MR x 16 register micro-kernel: c[rows, 16] (+)= a[rows, kc] @ b[kc, 16] for rows <= MR
// (a row stride lda, b row stride ldb, c row stride ldc; only `rows` rows of a and c are
// touched); accumulate: add to c. Each c element is one chain over k = 0..kc-1, the same for
// every `rows`.
struct GemmMicro {
  int mr, nr;
  void (*fn)(int64_t kc, const float* a, int64_t lda, const float* b, int64_t ldb, float* c,
             int64_t ldc, int rows, bool accumulate);
  const char* name;
  // Optional, for one-row blocks (M = 1): c[0:64] (+)= a[0:kc] @ four 16-wide panels (panel p
  // at b + p * pstride), with the same per-element chains as fn.
  void (*row4)(int64_t kc, const float* a, const float* b, int64_t ldb, int64_t pstride, float* c,
               bool accumulate) = nullptr;
  // Optional: fn over two neighbouring panels at once, c[rows, 32] (+)= a @ [b | b + pstride]
  // (each A element loaded once for two FMAs), with the same per-element chains as fn.
  void (*fn2)(int64_t kc, const float* a, int64_t lda, const float* b, int64_t ldb,
              int64_t pstride, float* c, int64_t ldc, int rows, bool accumulate) = nullptr;
  // Optional: fn2 with A gathered in place, A[i, k] = a[off[k] + i * as] (FusedConv reads its
  // patches straight from the padded input: row i an output position, k a tap), with the
  // same per-element chains as fn. Also prefetches the lines pf + 16 l, l < pf_lines <= 2 kc,
  // spread over its steps (the weights of the next slice).
  void (*taps2)(int64_t kc, const float* a, int64_t as, const int32_t* off, const float* b,
                int64_t ldb, int64_t pstride, float* c, int64_t ldc, int rows, bool accumulate,
                const float* pf, int64_t pf_lines) = nullptr;
};
const GemmMicro& gemm_micro_generic();
// How a GEMM's batch x M x N output is cut into tasks for `threads` threads: blocks of equal
// size (mc a multiple of mr, nc of nr, at most mc_max x nc_max unless the threads want more
// tasks), the fewest tasks that keep every thread equally busy. mb x nb blocks per matrix.
// Shared by sgemm and the int8 GEMM (gemm_i8.h).
struct GemmBlocks {
  int64_t mc, nc, mb, nb;
};
GemmBlocks gemm_blocks(int64_t batch, int64_t M, int64_t N, int64_t mr, int64_t nr, int64_t mc_max,
                       int64_t nc_max, int threads);
void sgemm(const SgemmArgs& args, int max_threads, const GemmMicro& micro = gemm_micro_generic());
// B[K, N] (B[k, n] = b[k * rs + n * cs]) packed as [ceil(N / 16)][K][16], zero-padded.
int64_t sgemm_packed_b_size(int64_t K, int64_t N);
void sgemm_pack_b(const float* b, int64_t rs, int64_t cs, int64_t K, int64_t N, float* out);
// The ONNX kernels with a given micro-kernel (the registered ones use the generic one).
void matmul_f32_with(const KernelCtx& ctx, const GemmMicro& micro);
void gemm_f32_with(const KernelCtx& ctx, const GemmMicro& micro);
// FusedMatMul (ops_fused.cpp): the packed-weight GEMM with bias and activation in the epilogue;
// `acts` holds the row functions for relu, gelu (erf) and gelu_tanh on this ISA.
struct GemmActs {
  using Fn = void (*)(const float* x, float* y, int64_t n);
  Fn relu, gelu, gelu_tanh;
  // The row function for the node's attr "activation" (nullptr for "none"; the OpDef's shape
  // inference has refused anything else).
  Fn for_node(const Node& node) const {
    std::string a = node.attrs.get_string("activation", "none");
    return a == "relu" ? relu : a == "gelu" ? gelu : a == "gelu_tanh" ? gelu_tanh : nullptr;
  }
};
void fused_matmul_f32_with(const KernelCtx& ctx, const GemmMicro& micro, const GemmActs& acts);
void fused_matmul_f32(const KernelCtx& ctx);

void matmul_f32(const KernelCtx& ctx);  // any numpy matmul shapes
void gemm_f32(const KernelCtx& ctx);    // ONNX Gemm
void softmax_f32(const KernelCtx& ctx);
void softmax_f32_row(const float* x, float* y, int64_t n);  // one row [n] -> [n], n > 0
// Attention (ops_fused.cpp): per (batch, query block) Q Kt and P V on `micro` (one thread each),
// the score rows scaled, masked and exponentiated in between by `scores_row` (s in place:
// exp(x - max x) with x = s * scale or s / scale, + mask[t * mask_t] when mask is set; returns
// the row's sum, by which the row of P V is divided: Dv divisions a row, not T), scores kept
// in a per-thread buffer.
using AttentionRowFn = float (*)(float* s, int64_t n, float scale, bool div, const float* mask,
                                 int64_t mask_t);
float attention_scores_row(float* s, int64_t n, float scale, bool div, const float* mask,
                           int64_t mask_t);
// Optional: several score rows at once (row stride ld, row r's mask at mask + r * mask_s, its
// sum to sums[r]), each with the bits of the ISA's AttentionRowFn.
using AttentionRowsFn = void (*)(float* s, int64_t rows, int64_t ld, int64_t n, float scale,
                                 bool div, const float* mask, int64_t mask_s, int64_t mask_t,
                                 float* sums);
void attention_f32_with(const KernelCtx& ctx, const GemmMicro& micro, AttentionRowFn scores_row,
                        AttentionRowsFn scores_rows = nullptr);
void attention_f32(const KernelCtx& ctx);
void log_softmax_f32(const KernelCtx& ctx);
bool softmax_f32_supports(const InferCtx& ctx);  // normalised dims contiguous (last axis, or 2-D legacy)
void layer_norm_f32(const KernelCtx& ctx);
bool layer_norm_f32_supports(const InferCtx& ctx);  // Scale/B cover exactly X[axis:], stash float
// y = x / sqrt(mean(x^2) + eps) * scale (scale nullptr: ones), x^2 summed in double in a
// fixed lane order; n > 0, x == y allowed.
void rms_norm_f32_row(const float* x, const float* scale, float* y, int64_t n, float eps);
void rms_norm_f32(const KernelCtx& ctx);
// The row drivers every ISA shares (norm_f32.cpp): shapes, attributes and threads, whole rows
// per task, so results never depend on the split; each ISA passes its row function.
using SoftmaxRowFn = void (*)(const float* x, float* y, int64_t n);
using LayerNormRowFn = void (*)(const float* x, const float* scale, const float* bias, float* y,
                                int64_t n, float eps, float* mean, float* inv_std);
using RmsNormRowFn = void (*)(const float* x, const float* scale, float* y, int64_t n, float eps);
void softmax_rows_with(const KernelCtx& ctx, SoftmaxRowFn row);  // Softmax and LogSoftmax
void layer_norm_f32_with(const KernelCtx& ctx, LayerNormRowFn row);
void rms_norm_f32_with(const KernelCtx& ctx, RmsNormRowFn row);
bool rms_norm_f32_supports(const InferCtx& ctx);  // scale covers exactly X[axis:] or is one element
void reduce_mean_f32(const KernelCtx& ctx);
void reduce_sum_f32(const KernelCtx& ctx);
bool reduce_f32_supports(const InferCtx& ctx);  // reduced dims are one contiguous run
// ---- elementwise (kernels/generic/elementwise_f32.cpp) ----
// y[i] = exp(x[i]) for i < n, <= 2 ulp, vectorised; x == y is allowed. For other kernels.
void exp_f32_array(const float* x, float* y, int64_t n);  // [n] -> [n]
void relu_f32_array(const float* x, float* y, int64_t n);        // [n] -> [n], x == y allowed
void sigmoid_f32_array(const float* x, float* y, int64_t n);     // as sigmoid_f32, x == y allowed
void gelu_f32_array(const float* x, float* y, int64_t n);        // erf form, as gelu_f32
void gelu_tanh_f32_array(const float* x, float* y, int64_t n);   // tanh form
void exp_f32(const KernelCtx& ctx);
void tanh_f32(const KernelCtx& ctx);
void erf_f32(const KernelCtx& ctx);
void sigmoid_f32(const KernelCtx& ctx);
void relu_f32(const KernelCtx& ctx);
void gelu_f32(const KernelCtx& ctx);  // both forms (attr approximate)
void sqrt_f32(const KernelCtx& ctx);
void neg_f32(const KernelCtx& ctx);
void abs_f32(const KernelCtx& ctx);
void reciprocal_f32(const KernelCtx& ctx);
// Add/Sub/Mul/Div: same shapes, a scalar operand, or a row [.., N] op [N] (either side).
bool binary_f32_supports(const InferCtx& ctx);
void add_f32(const KernelCtx& ctx);
void sub_f32(const KernelCtx& ctx);
void mul_f32(const KernelCtx& ctx);
void div_f32(const KernelCtx& ctx);
bool pow_f32_supports(const InferCtx& ctx);  // scalar exponent
void pow_f32(const KernelCtx& ctx);
bool where_f32_supports(const InferCtx& ctx);  // equal shapes
void where_f32(const KernelCtx& ctx);
// ---- quantize / dequantize, one scale for the whole tensor (kernels/generic/quant_linear.cpp) ----
bool quantize_linear_f32_supports(const InferCtx& ctx);   // f32 x, scalar scale and zero point
void quantize_linear_f32(const KernelCtx& ctx);           // QuantizeLinear -> uint8 | int8
// The same on one ISA's row quantizer: y[0:n] = clamp(round(x / s) + zp, qmin, qmax) as bytes.
using QuantizeRowQ8Fn = void (*)(const float* x, int64_t n, float s, int32_t zp, int32_t qmin,
                                 int32_t qmax, uint8_t* y);
void quantize_linear_f32_with(const KernelCtx& ctx, QuantizeRowQ8Fn row);
bool dequantize_linear_q8_supports(const InferCtx& ctx);  // uint8 | int8 x, scalar scale and zp
void dequantize_linear_q8(const KernelCtx& ctx);          // DequantizeLinear -> float32
// ---- pooling (kernels/generic/pool_f32.cpp) ----
bool max_pool_f32_supports(const InferCtx& ctx);  // f32 [N, C, H, W], no Indices output
void max_pool_f32(const KernelCtx& ctx);
// ---- data movement (kernels/generic/movement.cpp) ----
// Any element dtype (moved as bytes); references in cpp/src/ops/ops_index.cpp, ops_shape.cpp.
void gather_rows(const KernelCtx& ctx);        // Gather: checks indices, one row memcpy each
void transpose_blocked(const KernelCtx& ctx);  // Transpose: coalesced dims; row copies or tiles
void concat_blocks(const KernelCtx& ctx);      // Concat: one memcpy per (outer index, input)
void slice_blocks(const KernelCtx& ctx);       // Slice: contiguous runs over the outer dims

}  // namespace ember::cpu
