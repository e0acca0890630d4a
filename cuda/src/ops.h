// Adapters of each op family (cuda/src/ops_*.cpp), listed in registry.cpp's table.
#pragma once
#include "cuda/src/cuda_ops.h"

namespace ember::cuda {

// ---- elementwise, activations, reductions, softmax, norms (ops_elementwise.cpp) ----
void binary_cuda(const KernelCtx& ctx);  // Add ... Xor: f32, i64 (+ - * compare), bool logic
bool binary_cuda_supports(const InferCtx& ctx, const DeviceOptions& options);
void unary_cuda(const KernelCtx& ctx);  // Sqrt ... Cos, Gelu, LeakyRelu, HardSigmoid, HardSwish, Elu
bool unary_cuda_supports(const InferCtx& ctx, const DeviceOptions& options);
void dropout_cuda(const KernelCtx& ctx);
bool dropout_cuda_supports(const InferCtx& ctx, const DeviceOptions& options);
void clip_cuda(const KernelCtx& ctx);
bool clip_cuda_supports(const InferCtx& ctx, const DeviceOptions& options);
void where_cuda(const KernelCtx& ctx);
bool where_cuda_supports(const InferCtx& ctx, const DeviceOptions& options);
void cast_cuda(const KernelCtx& ctx);  // Cast, CastLike
bool cast_cuda_supports(const InferCtx& ctx, const DeviceOptions& options);
void swiglu_cuda(const KernelCtx& ctx);
bool swiglu_cuda_supports(const InferCtx& ctx, const DeviceOptions& options);
void reduce_cuda(const KernelCtx& ctx);  // ReduceSum, ReduceMean, ReduceMax
bool reduce_cuda_supports(const InferCtx& ctx, const DeviceOptions& options);
void softmax_cuda(const KernelCtx& ctx);  // Softmax, LogSoftmax
bool softmax_cuda_supports(const InferCtx& ctx, const DeviceOptions& options);
void layer_norm_cuda(const KernelCtx& ctx);
bool layer_norm_cuda_supports(const InferCtx& ctx, const DeviceOptions& options);
void rms_norm_cuda(const KernelCtx& ctx);
bool rms_norm_cuda_supports(const InferCtx& ctx, const DeviceOptions& options);
// ---- data movement, RoPE (ops_movement.cpp) ----
void copy_cuda(const KernelCtx& ctx);  // Reshape, Flatten, Squeeze, Unsqueeze, Identity
bool copy_cuda_supports(const InferCtx& ctx, const DeviceOptions& options);
void transpose_cuda(const KernelCtx& ctx);
bool transpose_cuda_supports(const InferCtx& ctx, const DeviceOptions& options);
void slice_cuda(const KernelCtx& ctx);
bool slice_cuda_supports(const InferCtx& ctx, const DeviceOptions& options);
void expand_cuda(const KernelCtx& ctx);
bool expand_cuda_supports(const InferCtx& ctx, const DeviceOptions& options);
void tile_cuda(const KernelCtx& ctx);
bool tile_cuda_supports(const InferCtx& ctx, const DeviceOptions& options);
void concat_cuda(const KernelCtx& ctx);
bool concat_cuda_supports(const InferCtx& ctx, const DeviceOptions& options);
void split_cuda(const KernelCtx& ctx);
bool split_cuda_supports(const InferCtx& ctx, const DeviceOptions& options);
void gather_cuda(const KernelCtx& ctx);
bool gather_cuda_supports(const InferCtx& ctx, const DeviceOptions& options);
void gather_elements_cuda(const KernelCtx& ctx);
bool gather_elements_cuda_supports(const InferCtx& ctx, const DeviceOptions& options);
void pad_cuda(const KernelCtx& ctx);
bool pad_cuda_supports(const InferCtx& ctx, const DeviceOptions& options);
void trilu_cuda(const KernelCtx& ctx);
bool trilu_cuda_supports(const InferCtx& ctx, const DeviceOptions& options);
void rope_cuda(const KernelCtx& ctx);
bool rope_cuda_supports(const InferCtx& ctx, const DeviceOptions& options);
// ---- GGUF Q8_0 (ops_q8_0.cpp) ----
void q8_0_matmul_cuda(const KernelCtx& ctx);
bool q8_0_matmul_cuda_supports(const InferCtx& ctx, const DeviceOptions& options);
void q8_0_gather_cuda(const KernelCtx& ctx);
bool q8_0_gather_cuda_supports(const InferCtx& ctx, const DeviceOptions& options);
// ---- paged attention (ops_paged_attention.cpp) ----
void paged_attention_cuda(const KernelCtx& ctx);
bool paged_attention_cuda_supports(const InferCtx& ctx, const DeviceOptions& options);
// ---- attention (ops_attention.cpp) ----
void attention_cuda(const KernelCtx& ctx);
bool attention_cuda_supports(const InferCtx& ctx, const DeviceOptions& options);
// ---- GEMM through cuBLASLt (ops_gemm.cpp, cublaslt.cpp) ----
void matmul_cuda(const KernelCtx& ctx);
bool matmul_cuda_supports(const InferCtx& ctx, const DeviceOptions& options);
void gemm_cuda(const KernelCtx& ctx);
bool gemm_cuda_supports(const InferCtx& ctx, const DeviceOptions& options);
void fused_matmul_cuda(const KernelCtx& ctx);  // FusedMatMul with W unpacked (packed 0)
bool fused_matmul_cuda_supports(const InferCtx& ctx, const DeviceOptions& options);
// Load-time rounding of input 1 (MatMul's and Gemm's B, Conv's W) when a constant, at fp16 /
// bf16 precision: it lives on the device as F16 / BF16 and the kernels read it as it is (the
// registry picks these by precision). Other inputs: an undefined Tensor (kept as they are).
Tensor weight_prepare_f16(const Node& node, int input, const Tensor& host);
Tensor weight_prepare_bf16(const Node& node, int input, const Tensor& host);
// ---- convolution, pooling (ops_conv.cpp) ----
void conv_cuda(const KernelCtx& ctx);
bool conv_cuda_supports(const InferCtx& ctx, const DeviceOptions& options);
void pool_cuda(const KernelCtx& ctx);  // MaxPool, AveragePool
bool pool_cuda_supports(const InferCtx& ctx, const DeviceOptions& options);
void global_pool_cuda(const KernelCtx& ctx);  // GlobalAveragePool, GlobalMaxPool
bool global_pool_cuda_supports(const InferCtx& ctx, const DeviceOptions& options);
void batch_norm_cuda(const KernelCtx& ctx);
bool batch_norm_cuda_supports(const InferCtx& ctx, const DeviceOptions& options);
// ---- residual add + norm (ops_add_norm.cpp) ----
void add_norm_cuda(const KernelCtx& ctx);  // AddNorm: kind "layer" | "rms"
bool add_norm_cuda_supports(const InferCtx& ctx, const DeviceOptions& options);
// ---- int8 GEMM (ops_q8.cpp) ----
void qmatmul_cuda(const KernelCtx& ctx);  // QMatMul: a_mode token | static | tensor_u8
bool qmatmul_cuda_supports(const InferCtx& ctx, const DeviceOptions& options);
Tensor qmatmul_cuda_prepare(const Node& node, int input, const Tensor& host);  // q8_prepare
// ---- int4 weight-only GEMM (ops_q4.cpp) ----
void q4matmul_cuda(const KernelCtx& ctx);  // Q4MatMul: W4A16 on tensor cores
bool q4matmul_cuda_supports(const InferCtx& ctx, const DeviceOptions& options);
Tensor q4_prepare(const Node& node, int input, const Tensor& host);  // q4_pack.h

}  // namespace ember::cuda
