// CPU kernel registry: every fast CPU kernel, one line each, best first within an op.
// A node runs the first entry whose op and dtype match, whose ISA this CPU has, and whose
// `supports` (if any) accepts the node; otherwise its OpDef reference kernel.
#include "runtime/registry.h"

#include <cstdlib>
#include <cstring>

#include "kernels/generic/conv_f32.h"
#include "kernels/generic/conv_i8.h"
#include "kernels/generic/gemm_bf16.h"
#include "kernels/generic/winograd_f32.h"
#include "kernels/generic/conv_packed_f32.h"
#include "kernels/generic/gemm_i8.h"
#include "kernels/generic/gemm_q4.h"
#include "kernels/generic/gemm_q8.h"
#include "kernels/generic/kernels_generic.h"
#include "kernels/generic/llm_kernels.h"
#include "ops/op_util.h"
#if defined(__x86_64__)
#include "kernels/x86/gemm_bf16_x86.h"
#include "kernels/x86/kernels_x86.h"
#endif
#if defined(__aarch64__)
#include "kernels/arm/kernels_arm.h"
#endif

namespace ember {
namespace {

using namespace cpu;

const KernelEntry kCpuKernels[] = {
    // ---- precision="bf16" (kernels/generic/gemm_bf16.h): first, ahead of every ISA's f32 rows.
    // Only these read bf16-packed FusedMatMul weights; Attention and Conv nodes marked
    // precision "bf16".
#if defined(__x86_64__)
    {OpType::FusedMatMul, DType::F32, Isa::Avx512Bf16, fused_matmul_bf16_avx512bf16, "fused_matmul_bf16_avx512bf16", fused_matmul_bf16_supports},
    {OpType::Attention, DType::F32, Isa::Avx512Bf16, attention_bf16_avx512bf16, "attention_bf16_avx512bf16", attention_bf16_supports},
    {OpType::Conv, DType::F32, Isa::Avx512Bf16, conv_bf16_avx512bf16, "conv_bf16_avx512bf16", conv_bf16_supports},
#endif
    {OpType::FusedMatMul, DType::F32, Isa::Generic, fused_matmul_bf16, "fused_matmul_bf16", fused_matmul_bf16_supports},
    {OpType::Attention, DType::F32, Isa::Generic, attention_bf16, "attention_bf16", attention_bf16_supports},
    {OpType::Conv, DType::F32, Isa::Generic, conv_bf16, "conv_bf16", conv_bf16_supports},
#if defined(__aarch64__)
    // ---- aarch64: NEON kernels (kernels/arm/kernels_arm.h), ahead of their ops' generic rows.
    // Isa::Neon rows exist only in aarch64 builds (and x86 rows only in x86 ones): the Isa enum
    // orders levels within one CPU family, never across families.
    {OpType::MatMul, DType::F32, Isa::Neon, matmul_f32_neon, "matmul_f32_neon"},
    {OpType::Gemm, DType::F32, Isa::Neon, gemm_f32_neon, "gemm_f32_neon"},
    {OpType::FusedMatMul, DType::F32, Isa::Neon, fused_matmul_f32_neon, "fused_matmul_f32_neon"},
    {OpType::WinogradConv, DType::F32, Isa::Neon, winograd_conv_f32_neon, "winograd_conv_f32_neon"},
    {OpType::QMatMul, DType::F32, Isa::Neon, qmatmul_i8_neon, "qmatmul_i8_neon"},
    {OpType::LayerNormalization, DType::F32, Isa::Neon, layer_norm_f32_neon, "layer_norm_f32_neon", layer_norm_f32_supports},
    {OpType::RMSNormalization, DType::F32, Isa::Neon, rms_norm_f32_neon, "rms_norm_f32_neon", rms_norm_f32_supports},
    {OpType::Softmax, DType::F32, Isa::Neon, softmax_f32_neon, "softmax_f32_neon", softmax_f32_supports},
    {OpType::LogSoftmax, DType::F32, Isa::Neon, log_softmax_f32_neon, "log_softmax_f32_neon", softmax_f32_supports},
#endif
    // ---- linalg ----
#if defined(__x86_64__)
    {OpType::MatMul, DType::F32, Isa::Avx512, matmul_f32_avx512, "matmul_f32_avx512"},
    {OpType::MatMul, DType::F32, Isa::Avx2, matmul_f32_avx2, "matmul_f32_avx2"},
    {OpType::Gemm, DType::F32, Isa::Avx512, gemm_f32_avx512, "gemm_f32_avx512"},
    {OpType::Gemm, DType::F32, Isa::Avx2, gemm_f32_avx2, "gemm_f32_avx2"},
    {OpType::FusedMatMul, DType::F32, Isa::Avx512, fused_matmul_f32_avx512, "fused_matmul_f32_avx512"},
    {OpType::FusedMatMul, DType::F32, Isa::Avx2, fused_matmul_f32_avx2, "fused_matmul_f32_avx2"},
#endif
    {OpType::FusedMatMul, DType::F32, Isa::Generic, fused_matmul_f32, "fused_matmul_f32"},
#if defined(__x86_64__)
    {OpType::Attention, DType::F32, Isa::Avx512, attention_f32_avx512, "attention_f32_avx512"},
    {OpType::Attention, DType::F32, Isa::Avx2, attention_f32_avx2, "attention_f32_avx2"},
#endif
    {OpType::Attention, DType::F32, Isa::Generic, attention_f32, "attention_f32"},
#if defined(__x86_64__)
    {OpType::PagedAttention, DType::F32, Isa::Avx2, paged_attention_f32_avx2, "paged_attention_f32_avx2", paged_attention_avx2_supports},
#endif
    {OpType::PagedAttention, DType::F32, Isa::Generic, paged_attention_f32, "paged_attention_f32"},
#if defined(__x86_64__)
    {OpType::SwiGLU, DType::F32, Isa::Avx2, swiglu_f32_avx2, "swiglu_f32_avx2"},
#endif
    {OpType::SwiGLU, DType::F32, Isa::Generic, swiglu_f32, "swiglu_f32"},
    {OpType::MatMul, DType::F32, Isa::Generic, matmul_f32, "matmul_f32"},
    {OpType::Gemm, DType::F32, Isa::Generic, gemm_f32, "gemm_f32"},
#if defined(__x86_64__)
    {OpType::QuantizeLinear, DType::F32, Isa::Avx2, quantize_linear_f32_avx2, "quantize_linear_f32_avx2", quantize_linear_f32_supports},
#endif
    {OpType::QuantizeLinear, DType::F32, Isa::Generic, quantize_linear_f32, "quantize_linear_f32", quantize_linear_f32_supports},
    {OpType::DequantizeLinear, DType::U8, Isa::Generic, dequantize_linear_q8, "dequantize_linear_u8", dequantize_linear_q8_supports},
    {OpType::DequantizeLinear, DType::I8, Isa::Generic, dequantize_linear_q8, "dequantize_linear_i8", dequantize_linear_q8_supports},
    // ---- quantized conv (kernels/generic/conv_i8.h) ----
#if defined(__x86_64__)
    {OpType::QConv, DType::F32, Isa::Avx512, qconv_i8_avx512, "qconv_i8_avx512", qconv_i8_supports},
    {OpType::QConv, DType::F32, Isa::Avx2, qconv_i8_avx2, "qconv_i8_avx2", qconv_i8_supports},
#endif
    {OpType::QConv, DType::F32, Isa::Generic, qconv_i8, "qconv_i8", qconv_i8_supports},
    // ---- quantized int8 (kernels/generic/gemm_i8.h) ----
#if defined(__x86_64__)
    {OpType::QMatMul, DType::F32, Isa::Avx512, qmatmul_i8_avx512, "qmatmul_i8_avx512"},
    {OpType::QMatMul, DType::F32, Isa::Avx2, qmatmul_i8_avx2, "qmatmul_i8_avx2"},
#endif
    {OpType::QMatMul, DType::F32, Isa::Generic, qmatmul_i8, "qmatmul_i8"},
    // ---- quantized int4 (kernels/generic/gemm_q4.h) ----
#if defined(__x86_64__)
    {OpType::Q4MatMul, DType::F32, Isa::Avx512, q4matmul_avx512, "q4matmul_avx512"},
    {OpType::Q4MatMul, DType::F32, Isa::Avx2, q4matmul_avx2, "q4matmul_avx2"},
#endif
    {OpType::Q4MatMul, DType::F32, Isa::Generic, q4matmul, "q4matmul"},
    // ---- quantized int8 per 32-block, GGUF Q8_0 (kernels/generic/gemm_q8.h) ----
#if defined(__x86_64__)
    {OpType::Q8MatMul, DType::F32, Isa::Avx512, q8matmul_avx512, "q8matmul_avx512"},
    {OpType::Q8MatMul, DType::F32, Isa::Avx2, q8matmul_avx2, "q8matmul_avx2"},
#endif
    {OpType::Q8MatMul, DType::F32, Isa::Generic, q8matmul, "q8matmul"},
    {OpType::Q8Gather, DType::I8, Isa::Generic, q8gather, "q8gather"},
#if defined(__x86_64__)
    {OpType::LayerNormalization, DType::F32, Isa::Avx2, layer_norm_f32_avx2, "layer_norm_f32_avx2", layer_norm_f32_supports},
#endif
    {OpType::LayerNormalization, DType::F32, Isa::Generic, layer_norm_f32, "layer_norm_f32", layer_norm_f32_supports},
#if defined(__x86_64__)
    {OpType::RMSNormalization, DType::F32, Isa::Avx2, rms_norm_f32_avx2, "rms_norm_f32_avx2", rms_norm_f32_supports},
#endif
    {OpType::RMSNormalization, DType::F32, Isa::Generic, rms_norm_f32, "rms_norm_f32", rms_norm_f32_supports},
    // Add, then the norm, each by its row here (ops_add_norm.cpp): the unfused pair's bits
    {OpType::AddNorm, DType::F32, Isa::Generic, add_norm_cpu, "add_norm_cpu"},
    // each step by its own kernel, block by block (ops_chain.cpp): the unfused chain's bits
    {OpType::ElementwiseChain, DType::F32, Isa::Generic, elementwise_chain_cpu, "elementwise_chain_cpu"},
#if defined(__x86_64__)
    {OpType::Softmax, DType::F32, Isa::Avx2, softmax_f32_avx2, "softmax_f32_avx2", softmax_f32_supports},
#endif
    {OpType::Softmax, DType::F32, Isa::Generic, softmax_f32, "softmax_f32", softmax_f32_supports},
#if defined(__x86_64__)
    {OpType::LogSoftmax, DType::F32, Isa::Avx2, log_softmax_f32_avx2, "log_softmax_f32_avx2", softmax_f32_supports},
#endif
    {OpType::LogSoftmax, DType::F32, Isa::Generic, log_softmax_f32, "log_softmax_f32", softmax_f32_supports},
    {OpType::ReduceMean, DType::F32, Isa::Generic, reduce_mean_f32, "reduce_mean_f32", reduce_f32_supports},
    {OpType::ReduceSum, DType::F32, Isa::Generic, reduce_sum_f32, "reduce_sum_f32", reduce_f32_supports},
    // ---- elementwise ----
    {OpType::Add, DType::F32, Isa::Generic, add_f32, "add_f32", binary_f32_supports},
    {OpType::Sub, DType::F32, Isa::Generic, sub_f32, "sub_f32", binary_f32_supports},
    {OpType::Mul, DType::F32, Isa::Generic, mul_f32, "mul_f32", binary_f32_supports},
    {OpType::Div, DType::F32, Isa::Generic, div_f32, "div_f32", binary_f32_supports},
    {OpType::Pow, DType::F32, Isa::Generic, pow_f32, "pow_f32", pow_f32_supports},
#if defined(__x86_64__)
    {OpType::Exp, DType::F32, Isa::Avx2, exp_f32_avx2, "exp_f32_avx2"},
#endif
    {OpType::Exp, DType::F32, Isa::Generic, exp_f32, "exp_f32"},
#if defined(__x86_64__)
    {OpType::Tanh, DType::F32, Isa::Avx2, tanh_f32_avx2, "tanh_f32_avx2"},
#endif
    {OpType::Tanh, DType::F32, Isa::Generic, tanh_f32, "tanh_f32"},
#if defined(__x86_64__)
    {OpType::Erf, DType::F32, Isa::Avx2, erf_f32_avx2, "erf_f32_avx2"},
#endif
    {OpType::Erf, DType::F32, Isa::Generic, erf_f32, "erf_f32"},
#if defined(__x86_64__)
    {OpType::Sigmoid, DType::F32, Isa::Avx2, sigmoid_f32_avx2, "sigmoid_f32_avx2"},
#endif
    {OpType::Sigmoid, DType::F32, Isa::Generic, sigmoid_f32, "sigmoid_f32"},
    {OpType::Relu, DType::F32, Isa::Generic, relu_f32, "relu_f32"},
#if defined(__x86_64__)
    {OpType::Gelu, DType::F32, Isa::Avx2, gelu_f32_avx2, "gelu_f32_avx2"},
#endif
    {OpType::Gelu, DType::F32, Isa::Generic, gelu_f32, "gelu_f32"},
    {OpType::Sqrt, DType::F32, Isa::Generic, sqrt_f32, "sqrt_f32"},
    {OpType::Neg, DType::F32, Isa::Generic, neg_f32, "neg_f32"},
    {OpType::Abs, DType::F32, Isa::Generic, abs_f32, "abs_f32"},
    {OpType::Reciprocal, DType::F32, Isa::Generic, reciprocal_f32, "reciprocal_f32"},
    {OpType::Where, DType::Bool, Isa::Generic, where_f32, "where_f32", where_f32_supports},
    // ---- data movement ----
    {OpType::Gather, DType::F32, Isa::Generic, gather_rows, "gather_rows_f32"},
    {OpType::Gather, DType::F16, Isa::Generic, gather_rows, "gather_rows_f16"},
    {OpType::Gather, DType::BF16, Isa::Generic, gather_rows, "gather_rows_bf16"},
    {OpType::Gather, DType::I64, Isa::Generic, gather_rows, "gather_rows_i64"},
    {OpType::Transpose, DType::F32, Isa::Generic, transpose_blocked, "transpose_blocked_f32"},
    {OpType::Transpose, DType::F16, Isa::Generic, transpose_blocked, "transpose_blocked_f16"},
    {OpType::Transpose, DType::BF16, Isa::Generic, transpose_blocked, "transpose_blocked_bf16"},
    {OpType::Transpose, DType::I64, Isa::Generic, transpose_blocked, "transpose_blocked_i64"},
    {OpType::Concat, DType::F32, Isa::Generic, concat_blocks, "concat_blocks_f32"},
    {OpType::Concat, DType::F16, Isa::Generic, concat_blocks, "concat_blocks_f16"},
    {OpType::Concat, DType::BF16, Isa::Generic, concat_blocks, "concat_blocks_bf16"},
    {OpType::Concat, DType::I64, Isa::Generic, concat_blocks, "concat_blocks_i64"},
    {OpType::Slice, DType::F32, Isa::Generic, slice_blocks, "slice_blocks_f32"},
    {OpType::Slice, DType::F16, Isa::Generic, slice_blocks, "slice_blocks_f16"},
    {OpType::Slice, DType::BF16, Isa::Generic, slice_blocks, "slice_blocks_bf16"},
    {OpType::Slice, DType::I64, Isa::Generic, slice_blocks, "slice_blocks_i64"},
    // ---- convolution ----
#if defined(__x86_64__)
    {OpType::Conv, DType::F32, Isa::Avx512, conv_f32_avx512, "conv_f32_avx512", conv_f32_supports},
    {OpType::Conv, DType::F32, Isa::Avx2, conv_f32_avx2, "conv_f32_avx2", conv_f32_supports},
    {OpType::WinogradConv, DType::F32, Isa::Avx512, winograd_conv_f32_avx512, "winograd_conv_f32_avx512"},
    {OpType::WinogradConv, DType::F32, Isa::Avx2, winograd_conv_f32_avx2, "winograd_conv_f32_avx2"},
    {OpType::FusedConv, DType::F32, Isa::Avx512, fused_conv_f32_avx512, "fused_conv_f32_avx512"},
    {OpType::FusedConv, DType::F32, Isa::Avx2, fused_conv_f32_avx2, "fused_conv_f32_avx2"},
#endif
    {OpType::Conv, DType::F32, Isa::Generic, conv_f32, "conv_f32", conv_f32_supports},
    {OpType::WinogradConv, DType::F32, Isa::Generic, winograd_conv_f32, "winograd_conv_f32"},
    {OpType::FusedConv, DType::F32, Isa::Generic, fused_conv_f32, "fused_conv_f32"},
#if defined(__x86_64__)
    {OpType::MaxPool, DType::F32, Isa::Avx2, max_pool_f32_avx2, "max_pool_f32_avx2", max_pool_f32_supports},
#endif
    {OpType::MaxPool, DType::F32, Isa::Generic, max_pool_f32, "max_pool_f32", max_pool_f32_supports},
    {OpType::Count, DType::Count, Isa::Generic, nullptr, "end"},
};

}  // namespace

const char* isa_name(Isa isa) {
  static const char* names[] = {"generic", "avx2", "avx512", "avx512bf16", "neon"};
  return names[(int)isa];
}

Isa cpu_isa() {
  static const Isa isa = [] {
    Isa best = Isa::Generic;
#if defined(__x86_64__)
    __builtin_cpu_init();
    // libgcc's cpuinfo also checks that the OS saves the ymm / zmm state (XCR0).
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = Isa::Avx2;
    if (best == Isa::Avx2 && __builtin_cpu_supports("avx512f") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vnni"))
      best = Isa::Avx512;
    if (best == Isa::Avx512 && __builtin_cpu_supports("avx512bf16")) best = Isa::Avx512Bf16;
#elif defined(__aarch64__)
    best = Isa::Neon;
#endif
    if (const char* env = std::getenv("EMBER_CPU_ISA")) {
      for (int i = 0; i < (int)Isa::Count; i++) {
        if (std::strcmp(env, isa_name((Isa)i)) == 0 && i < (int)best) best = (Isa)i;
      }
    }
    return best;
  }();
  return isa;
}

bool cpu_bf16_dot() {
#if defined(__x86_64__)
  return cpu_isa() >= Isa::Avx512Bf16;
#else
  return false;
#endif
}

const KernelEntry* cpu_kernel_find(const InferCtx& ctx, Isa max_isa) {
  DType dtype = ctx.num_inputs() > 0 ? ctx.in[0].dtype : DType::Count;
  for (const KernelEntry& e : kCpuKernels) {
    if (e.fn == nullptr || e.op != ctx.node.op || e.dtype != dtype || e.isa > max_isa) continue;
    if (e.supports && !e.supports(ctx)) continue;
    return &e;
  }
  return nullptr;
}

}  // namespace ember
