// Launchers of the convolution, pooling and BatchNormalization kernels (conv.cu), f32. Plain
// C++: the geometry structs are filled on the host (cuda/src/conv_plan.h) and passed by value.
// Every launcher returns at once (no sync) and launches nothing for empty work.
#pragma once
#include <cstdint>

#include "cuda/src/conv_plan.h"

namespace ember::cuda {

// cols [nb, C*kh*kw, pc]: images n0 .. n0+nb, output pixels p0 .. p0+pc; zeros for padding.
// cols_type: 0 float, 1 fp16, 2 bf16 (rounded to nearest even: the 16-bit GEMM operand).
void conv_im2col(const float* x,  // [N, C, H, W]
                 void* cols,      // [nb, C * kh * kw, pc]
                 const Conv2d& g, int64_t n0, int64_t nb, int64_t p0, int64_t pc, int cols_type,
                 void* stream);

// y[n, m, p] = float(y16[n, m, p]) + bias[m] (bias may be null): a conv cuDNN ran on 16-bit
// tensors (fp16, or bf16 when `bf16`) back to F32 with its bias.
void conv_finish_16(const void* y16,     // [N, M, P] fp16 / bf16
                    const float* bias,   // [M] or null
                    float* y,            // [N, M, P]
                    int64_t N, int64_t M, int64_t P, bool bf16, void* stream);

// y[n, m, :] = bias[m] (0 where bias is null): the C a GEMM with beta 1 then adds onto.
void conv_bias_fill(float* y,            // [N, M, P]
                    const float* bias,   // [M] or null
                    int64_t N, int64_t M, int64_t P, void* stream);

// A conv with one input channel per group (depthwise, any channel multiplier): one thread per
// output, fp32 sums, bias added.
void conv_direct(const float* x,     // [N, C, H, W]
                 const float* w,     // [M, 1, kh, kw]
                 const float* bias,  // [M] or null
                 float* y,           // [N, M, OH, OW]
                 const Conv2d& g, void* stream);

// MaxPool / AveragePool: one thread per output, walking its window as the reference does.
void pool_2d(const float* x,  // [planes, H, W]
             float* y,        // [planes, OH, OW]
             const Pool2d& g, void* stream);

// GlobalMaxPool / GlobalAveragePool: y[r] = max or mean of x[r, :] (max: a NaN wins; empty
// rows give -inf and NaN, as the reference).
void pool_global(const float* x,  // [rows, cols]
                 float* y,        // [rows]
                 int64_t rows, int64_t cols, bool is_max, void* stream);

// BatchNormalization (inference): y = (x - mean[c]) * scale[c] / sqrt(var[c] + eps) + b[c].
void batch_norm(const float* x,      // [N, C, inner]
                const float* scale,  // [C]
                const float* b,      // [C]
                const float* mean,   // [C]
                const float* var,    // [C]
                float* y,            // [N, C, inner]
                int64_t N, int64_t C, int64_t inner, float eps, void* stream);

}  // namespace ember::cuda
