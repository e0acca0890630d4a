// Load-time fusion passes (after constant folding): patterns rewritten into single ops whose
// kernels do the work in one pass over memory. Each returns how many patterns it rewrote.
#pragma once
#include "ember/graph.h"

namespace ember {

// x * 0.5 * (1 + erf(x / sqrt 2)) in the forms exporters write (Div by sqrt 2 or Mul by its
// inverse; the 0.5 on x, on the sum, or last) -> Gelu(x).
int fuse_gelu(Graph& graph);
// MatMul(A, W) with W a constant f32 [K, N], then optionally Add(., bias [N] constant) and
// Relu / Gelu -> FusedMatMul(A, W packed, bias) (ops_fused.cpp). Gemm(A, W[, C]) that is
// A @ W (+ C) (transA 0, alpha 1, beta 1; W constant, transB either way; C a constant of N
// elements or one) likewise, C as the bias. bf16: W packed as bf16 pairs instead
// (kernels/generic/gemm_bf16.h; precision="bf16" sessions).
int fuse_matmul(Graph& graph, bool bf16 = false);
// Device sessions: MatMul(A, W constant f32 [K, N]) followed by Add(., bias [N] constant)
// and / or Relu / Gelu -> FusedMatMul(A, W, bias) with packed 0 (W as it is): the device's
// GEMM adds the bias in its epilogue and applies the activation, one kernel pass fewer per
// absorbed node. A MatMul with nothing to absorb stays.
int fuse_matmul_epilogue(Graph& graph);
// Conv(X, W, B) -> BatchNormalization (inference, constant parameters) -> Conv(X, W', B') with
// the normalisation folded into the weights and bias.
int fuse_conv_batch_norm(Graph& graph);
// MatMul(Q, Kt) -> Mul/Div by a scalar constant -> [Add(., mask)] -> Softmax(axis -1) ->
// MatMul(., V) -> Attention(Q, Kt, V, mask) (ops_fused.cpp): scores never reach memory.
// bf16: the node gets precision "bf16" (its two GEMMs on bf16 operands).
int fuse_attention(Graph& graph, bool bf16 = false);
// Attention whose Q, Kt, V come from head transposes (q, k, v [B, S, H, D] permuted 0 2 1 3,
// 0 2 3 1, 0 2 1 3) and whose output goes through the inverse one -> Attention layout "bshd"
// reading q, k, v and writing [B, S, H, Dv] in place: four transposes fewer per layer.
int fuse_attention_heads(Graph& graph);
// LayerNorm written out (opset < 17 exports): d = x - ReduceMean(x, [-1]); d / Sqrt(
// ReduceMean(d^2, [-1]) + eps) * gamma [+ beta] (constants) -> LayerNormalization(axis -1).
int fuse_layer_norm(Graph& graph);
// RMSNorm written out (torch exports of LlamaRMSNorm / T5LayerNorm, HF graphs), float32:
//   rms = Sqrt(ReduceMean(Pow(x, 2) | Mul(x, x), axes [-1], keepdims 1) + eps)
//   n   = Div(x, rms) | Mul(x, Reciprocal(rms)) | Mul(x, Div(1, rms))
//   y   = [Cast(to float)] n [* w]
// Add, the Muls and the weight multiply in either operand order; eps a float32 scalar
// constant, w a float32 constant [D] or scalar; every intermediate read once (x may have
// other readers). -> RMSNormalization(x, w or ones [1], axis -1, epsilon eps). The no-op Cast
// is torch's `.to(input_dtype)` in f32 exports; x = Cast(to float) of an fp16 input and a
// Cast back before * w (fp16 exports) stay outside: the float middle fuses.
int fuse_rms_norm(Graph& graph);
// Residual Add(a, b) (float32, neither operand a constant nor declared with another shape)
// read by LayerNormalization (axis -1, only Y used, constant scale and bias) or
// RMSNormalization (axis -1, constant scale) -> AddNorm(a, b, scale[, bias]) (ops_add_norm.cpp)
// in the Add's place; its output 1 is the sum where anything else reads it. In graph/fuse_add_norm.cpp.
int fuse_add_norm(Graph& graph);
// Device sessions, after fuse_add_norm: an AddNorm whose Y QMatMuls of a_mode "token" read
// also writes Y's per-token int8 codes and scales, and those QMatMuls read them (a_mode "rows"):
// one quantization of the rows for all of them. In graph/fuse_norm_quant.cpp.
int fuse_norm_quant(Graph& graph);
// Runs of elementwise nodes, each the single reader of the one before -> ElementwiseChain
// (ops_chain.cpp; CPU sessions). In graph/fuse_chain.cpp.
int fuse_elementwise_chain(Graph& graph);
// Conv 3x3, stride 1, dilation 1, group 1, constant f32 weights, at least 16 input and output
// channels [-> Add(., R)] [-> Relu] -> WinogradConv (ops_winograd.cpp) with the filters
// transformed at load; not 512-channel convs onto planes of at most 64 outputs (as far as
// the declared input dims tell at load). In graph/fuse_winograd.cpp.
int fuse_conv_winograd(Graph& graph);
// precision="bf16" CPU sessions: float32 Conv nodes with constant weights, other than depthwise
// ones, get precision "bf16" (ops_conv.cpp; the bf16 GEMM on their patches). Runs after
// fuse_conv_winograd, so the 3x3 stride-1 convs it takes keep the fp32 Winograd kernel.
int mark_conv_bf16(Graph& graph);
// CPU sessions: the Conv nodes left after fuse_conv_winograd and mark_conv_bf16 (2-D, group 1,
// constant f32 weights, not 1x1 stride-1 unpadded) [-> Relu] -> FusedConv (ops_fused_conv.cpp)
// with weights packed at load (all of them where `gathers`, else from 256 output channels).
// In graph/fuse_conv_packed.cpp.
int fuse_conv_packed(Graph& graph, bool gathers = false);
struct FuseOptions {
  // fuse_matmul packs weights for the CPU's GEMM; a session with a device runs
  // fuse_matmul_epilogue instead (the device reads plain weights; CPU fallbacks pack them per
  // call).
  bool pack_cpu_weights = true;
  // fuse_add_norm: a device reads x and r once for both ops; the CPU gains nothing (its
  // AddNorm runs the pair's own kernels), so CPU sessions keep the pair.
  bool fuse_add_norm = false;
  // fuse_conv_winograd (CPU sessions; EMBER_WINOGRAD=0 turns it off): results differ from the
  // direct sums by rounding only.
  bool winograd = true;
  // fuse_conv_packed (CPU sessions; EMBER_FUSED_CONV=0 turns it off): the same bits as Conv's
  // kernel then Relu's.
  bool fused_conv = true;
  // The CPU's FusedConv kernel reads its patches in place (no packing per call): every
  // FusedConv gets packed weights, not only those of 256 or more output channels.
  bool conv_gathers = false;
  // precision="bf16" on CPUs with AVX512_BF16 (CPU sessions): fuse_matmul packs weights as
  // bf16 pairs (the FusedMatMul rounds its activations to bf16 too), fuse_attention and
  // mark_conv_bf16 mark their nodes precision "bf16"; norms, softmax and epilogues stay fp32.
  bool bf16 = false;
};
// All of the above, in order; then dead nodes and constants removed.
int fuse_graph(Graph& graph, const FuseOptions& options = {});

// ---- quantization (fuse_quant.cpp): run BEFORE constant folding, which would dequantize
// constant weights into floats ----
// int8 matmuls -> QMatMul (ops_qmatmul.cpp) with packed weights, absorbing a bias Add and
// Relu / Gelu after them: ember.quantize's per-token form (a_mode "token"), onnxruntime's
// DynamicQuantizeLinear + MatMulInteger ("tensor_u8"), and QDQ MatMul / Gemm ("static").
int fuse_qmatmul(Graph& graph);
// com.microsoft MatMulNBits (4 bits, constant weights) -> Q4MatMul (ops_q4matmul.cpp).
int fuse_matmul_nbits(Graph& graph);
// QLinearMatMul / QLinearConv (group 1) with constant weights and scalar activation scales ->
// DequantizeLinear -> QMatMul | QConv (static: the codes come back exactly) -> QuantizeLinear;
// the float multiplier ((acc * sa) * sw [+ bias]) / sy may round a value one code apart from
// the integer-multiplier form.
int fuse_qlinear(Graph& graph);
// Both; then dead nodes and constants removed.
int fuse_quant(Graph& graph);
// QMatMul / Q4MatMul / QConv without an activation, read only by Relu or Gelu (made by
// fuse_gelu after fuse_quant ran) -> the activation in the node's epilogue. Part of fuse_graph.
int fuse_quant_activation(Graph& graph);
// The quantization nodes left in `graph` after fuse_quant that mean a slow path: integer ops
// run by their references (MatMulInteger, QLinearMatMul, ConvInteger, QLinearConv,
// MatMulNBits, DynamicQuantizeLinear) and a DequantizeLinear read by a float MatMul / Gemm /
// Conv. QuantizeLinear and other DequantizeLinear nodes are elementwise (fast kernels, or
// folded when their inputs are constants) and are not listed.
std::vector<const Node*> quant_leftovers(const Graph& graph);

}  // namespace ember
