// QConv (cpp/src/ops/ops_qconv.cpp): static W8A8 convolution, group 1. X is quantized once into
// int16 codes, each output position's receptive field is gathered into a row (im2row, padding
// 0), and the int8 GEMM (gemm_i8.h) multiplies [positions, C * kernel] by the packed weights
// into [positions, M], transposed into Y [M, positions]. Registered in runtime/registry.cpp.
#pragma once
#include "ember/op.h"
#include "kernels/generic/gemm_i8.h"

namespace ember::cpu {

bool qconv_i8_supports(const InferCtx& ctx);  // the im2row buffer stays under 2^28 codes
void qconv_i8_with(const KernelCtx& ctx, const QGemmI8Micro& micro, const QuantizeRowsI8& quant,
                   const GemmActs& acts);
// dst[j * ldd + i] = src[i * lds + j] for i, j < 16: one whole tile of the output transpose.
using TransposeTile16 = void (*)(const float* src, int64_t lds, float* dst, int64_t ldd);
// The same with a whole GEMM in qgemm_i8's place (the VNNI one) and, unless nullptr, a tile
// transpose for the output.
void qconv_i8_with_gemm(const KernelCtx& ctx, QGemmI8Fn gemm, const QuantizeRowsI8& quant,
                        const GemmActs& acts, TransposeTile16 tile16 = nullptr);
void qconv_i8(const KernelCtx& ctx);
#if defined(__x86_64__)
void qconv_i8_avx2(const KernelCtx& ctx);    // kernels/x86/conv_i8_x86.cpp
void qconv_i8_avx512(const KernelCtx& ctx);  // the same, on qgemm_i8_vnni
#endif

}  // namespace ember::cpu
