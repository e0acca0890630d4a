// The CUDA kernel table: one line per kernel, `{op, name, adapter, supports}`. The backend
// (backend.cpp) offers a node the first row whose op matches and whose supports() accepts the
// node's types, shapes and options; a node with no row runs on the CPU (a logged fallback).
#include "cuda/src/cuda_ops.h"
#include "cuda/src/ops.h"

namespace ember::cuda {
namespace {

// A row for one precision only: `supports` and options.precision == P.
template <bool (*Supports)(const InferCtx&, const DeviceOptions&), Precision P>
bool at_precision(const InferCtx& ctx, const DeviceOptions& options) {
  return options.precision == P && Supports(ctx, options);
}

}  // namespace

const std::vector<CudaKernel>& cuda_kernels() {
  static const std::vector<CudaKernel> table = {
      // ---- elementwise, activations, reductions, softmax, norms (ops_elementwise.cpp) ----
      {OpType::Add, "add_cuda", binary_cuda, binary_cuda_supports},
      {OpType::Sub, "sub_cuda", binary_cuda, binary_cuda_supports},
      {OpType::Mul, "mul_cuda", binary_cuda, binary_cuda_supports},
      {OpType::Div, "div_cuda", binary_cuda, binary_cuda_supports},
      {OpType::Pow, "pow_cuda", binary_cuda, binary_cuda_supports},
      {OpType::Min, "min_cuda", binary_cuda, binary_cuda_supports},
      {OpType::Max, "max_cuda", binary_cuda, binary_cuda_supports},
      {OpType::Equal, "equal_cuda", binary_cuda, binary_cuda_supports},
      {OpType::Less, "less_cuda", binary_cuda, binary_cuda_supports},
      {OpType::Greater, "greater_cuda", binary_cuda, binary_cuda_supports},
      {OpType::LessOrEqual, "less_or_equal_cuda", binary_cuda, binary_cuda_supports},
      {OpType::GreaterOrEqual, "greater_or_equal_cuda", binary_cuda, binary_cuda_supports},
      {OpType::And, "and_cuda", binary_cuda, binary_cuda_supports},
      {OpType::Or, "or_cuda", binary_cuda, binary_cuda_supports},
      {OpType::Xor, "xor_cuda", binary_cuda, binary_cuda_supports},
      {OpType::Sqrt, "sqrt_cuda", unary_cuda, unary_cuda_supports},
      {OpType::Exp, "exp_cuda", unary_cuda, unary_cuda_supports},
      {OpType::Log, "log_cuda", unary_cuda, unary_cuda_supports},
      {OpType::Neg, "neg_cuda", unary_cuda, unary_cuda_supports},
      {OpType::Abs, "abs_cuda", unary_cuda, unary_cuda_supports},
      {OpType::Reciprocal, "reciprocal_cuda", unary_cuda, unary_cuda_supports},
      {OpType::Erf, "erf_cuda", unary_cuda, unary_cuda_supports},
      {OpType::Tanh, "tanh_cuda", unary_cuda, unary_cuda_supports},
      {OpType::Sigmoid, "sigmoid_cuda", unary_cuda, unary_cuda_supports},
      {OpType::Relu, "relu_cuda", unary_cuda, unary_cuda_supports},
      {OpType::Gelu, "gelu_cuda", unary_cuda, unary_cuda_supports},
      {OpType::Softplus, "softplus_cuda", unary_cuda, unary_cuda_supports},
      {OpType::Sin, "sin_cuda", unary_cuda, unary_cuda_supports},
      {OpType::Cos, "cos_cuda", unary_cuda, unary_cuda_supports},
      {OpType::LeakyRelu, "leaky_relu_cuda", unary_cuda, unary_cuda_supports},
      {OpType::HardSigmoid, "hard_sigmoid_cuda", unary_cuda, unary_cuda_supports},
      {OpType::HardSwish, "hard_swish_cuda", unary_cuda, unary_cuda_supports},
      {OpType::Elu, "elu_cuda", unary_cuda, unary_cuda_supports},
      {OpType::Dropout, "dropout_cuda", dropout_cuda, dropout_cuda_supports},
      {OpType::Clip, "clip_cuda", clip_cuda, clip_cuda_supports},
      {OpType::Where, "where_cuda", where_cuda, where_cuda_supports},
      {OpType::Cast, "cast_cuda", cast_cuda, cast_cuda_supports},
      {OpType::CastLike, "cast_like_cuda", cast_cuda, cast_cuda_supports},
      {OpType::SwiGLU, "swiglu_cuda", swiglu_cuda, swiglu_cuda_supports},
      {OpType::ReduceSum, "reduce_sum_cuda", reduce_cuda, reduce_cuda_supports},
      {OpType::ReduceMean, "reduce_mean_cuda", reduce_cuda, reduce_cuda_supports},
      {OpType::ReduceMax, "reduce_max_cuda", reduce_cuda, reduce_cuda_supports},
      {OpType::Softmax, "softmax_cuda", softmax_cuda, softmax_cuda_supports},
      {OpType::LogSoftmax, "log_softmax_cuda", softmax_cuda, softmax_cuda_supports},
      {OpType::LayerNormalization, "layer_norm_cuda", layer_norm_cuda, layer_norm_cuda_supports},
      {OpType::RMSNormalization, "rms_norm_cuda", rms_norm_cuda, rms_norm_cuda_supports},
      // ---- data movement, RoPE (ops_movement.cpp) ----
      {OpType::Reshape, "reshape_cuda", copy_cuda, copy_cuda_supports},
      {OpType::Flatten, "flatten_cuda", copy_cuda, copy_cuda_supports},
      {OpType::Squeeze, "squeeze_cuda", copy_cuda, copy_cuda_supports},
      {OpType::Unsqueeze, "unsqueeze_cuda", copy_cuda, copy_cuda_supports},
      {OpType::Identity, "identity_cuda", copy_cuda, copy_cuda_supports},
      {OpType::Transpose, "transpose_cuda", transpose_cuda, transpose_cuda_supports},
      {OpType::Slice, "slice_cuda", slice_cuda, slice_cuda_supports},
      {OpType::Expand, "expand_cuda", expand_cuda, expand_cuda_supports},
      {OpType::Tile, "tile_cuda", tile_cuda, tile_cuda_supports},
      {OpType::Concat, "concat_cuda", concat_cuda, concat_cuda_supports},
      {OpType::Split, "split_cuda", split_cuda, split_cuda_supports},
      {OpType::Gather, "gather_cuda", gather_cuda, gather_cuda_supports},
      {OpType::GatherElements, "gather_elements_cuda", gather_elements_cuda, gather_elements_cuda_supports},
      {OpType::Pad, "pad_cuda", pad_cuda, pad_cuda_supports},
      {OpType::Trilu, "trilu_cuda", trilu_cuda, trilu_cuda_supports},
      {OpType::Rope, "rope_cuda", rope_cuda, rope_cuda_supports},
      // ---- attention (ops_attention.cpp) ----
      {OpType::Attention, "attention_cuda", attention_cuda, attention_cuda_supports},
      {OpType::Q8MatMul, "q8_0_matmul_cuda", q8_0_matmul_cuda, q8_0_matmul_cuda_supports},
      {OpType::Q8Gather, "q8_0_gather_cuda", q8_0_gather_cuda, q8_0_gather_cuda_supports},
      {OpType::PagedAttention, "paged_attention_cuda", paged_attention_cuda,
       paged_attention_cuda_supports},
      // ---- GEMM through cuBLASLt (ops_gemm.cpp) ----
      // fp16 / bf16: constant weights rounded at load (weight_prepare_*), else as the rows below.
      {OpType::MatMul, "matmul_cuda", matmul_cuda, at_precision<matmul_cuda_supports, Precision::F16>,
       weight_prepare_f16},
      {OpType::MatMul, "matmul_cuda", matmul_cuda, at_precision<matmul_cuda_supports, Precision::BF16>,
       weight_prepare_bf16},
      {OpType::MatMul, "matmul_cuda", matmul_cuda, matmul_cuda_supports},
      {OpType::Gemm, "gemm_cuda", gemm_cuda, at_precision<gemm_cuda_supports, Precision::F16>,
       weight_prepare_f16},
      {OpType::Gemm, "gemm_cuda", gemm_cuda, at_precision<gemm_cuda_supports, Precision::BF16>,
       weight_prepare_bf16},
      {OpType::Gemm, "gemm_cuda", gemm_cuda, gemm_cuda_supports},
      {OpType::FusedMatMul, "fused_matmul_cuda", fused_matmul_cuda,
       at_precision<fused_matmul_cuda_supports, Precision::F16>, weight_prepare_f16},
      {OpType::FusedMatMul, "fused_matmul_cuda", fused_matmul_cuda,
       at_precision<fused_matmul_cuda_supports, Precision::BF16>, weight_prepare_bf16},
      {OpType::FusedMatMul, "fused_matmul_cuda", fused_matmul_cuda, fused_matmul_cuda_supports},
      // ---- convolution, pooling (ops_conv.cpp) ----
      {OpType::Conv, "conv_cuda", conv_cuda, at_precision<conv_cuda_supports, Precision::F16>,
       weight_prepare_f16},
      {OpType::Conv, "conv_cuda", conv_cuda, at_precision<conv_cuda_supports, Precision::BF16>,
       weight_prepare_bf16},
      {OpType::Conv, "conv_cuda", conv_cuda, conv_cuda_supports},
      {OpType::MaxPool, "max_pool_cuda", pool_cuda, pool_cuda_supports},
      {OpType::AveragePool, "average_pool_cuda", pool_cuda, pool_cuda_supports},
      {OpType::GlobalAveragePool, "global_average_pool_cuda", global_pool_cuda, global_pool_cuda_supports},
      {OpType::GlobalMaxPool, "global_max_pool_cuda", global_pool_cuda, global_pool_cuda_supports},
      {OpType::BatchNormalization, "batch_norm_cuda", batch_norm_cuda, batch_norm_cuda_supports},
      // ---- residual add + norm (ops_add_norm.cpp) ----
      {OpType::AddNorm, "add_norm_cuda", add_norm_cuda, add_norm_cuda_supports},
      // ---- int8 GEMM (ops_q8.cpp) ----
      {OpType::QMatMul, "qmatmul_cuda", qmatmul_cuda, qmatmul_cuda_supports, qmatmul_cuda_prepare},
      // ---- int4 weight-only GEMM (ops_q4.cpp) ----
      {OpType::Q4MatMul, "q4matmul_cuda", q4matmul_cuda, q4matmul_cuda_supports, q4_prepare},
  };
  return table;
}

}  // namespace ember::cuda
