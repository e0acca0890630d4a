// FusedConv (cpp/src/ops/ops_fused_conv.cpp, made by fuse_conv_packed from a 2-D group-1 Conv
// [-> Relu]): the convolution as one GEMM per image with the roles of Conv's kernel swapped,
//   Y^T [OH OW, M] = P [OH OW, C kh kw] @ W^T [C kh kw, M],
// P's rows the input patches (im2row, built per strip of rows: runs of kw neighbours), W^T
// packed at load into 32-wide panels (each panel one contiguous stream), so the weights,
// which outgrow the caches in late layers, stream from memory once per image and column block;
// the output channels fill whole panels where Conv's GEMM had OH OW (49 for 7 x 7) columns.
// Every output is one FMA chain over (c, ky, kx) in order from 0, then + bias, then relu: the
// bits of Conv's kernel on the same micro-kernel (tests/cpp/test_fused_conv.cpp).
#pragma once
#include "kernels/generic/conv_f32.h"
#include "kernels/generic/kernels_generic.h"

namespace ember {

// FusedConv's geometry: Conv's (conv_geom) for X and W [m, C, kernel_shape]; 2-D, group 1.
// Fails via ctx. Defined in ops_fused_conv.cpp.
ConvGeom fused_conv_geom(const InferCtx& ctx, const Shape& x);

}  // namespace ember

namespace ember::cpu {

// Output channels per packed panel (two 16-wide micro-kernel panels side by side).
constexpr int64_t kConvPanel = 32;

// wp [ceil(M / 32), K, 32] <- w [M, K] (K = C kh kw) transposed into 32-column panels, the
// columns past M zero.
void conv_packed_weights_f32(const float* w, int64_t M, int64_t K, float* wp);

// The epilogue: y[m * ys + i] <- act(tile[i * 32 + m] + bias[m]) for i < rows, m < cols
// (<= 32); no bias: no addition (-0 stays -0, as in Conv's GEMM); relu: v < 0 ? 0 : v.
using ConvTileStore = void (*)(const float* tile, int64_t rows, int64_t cols, const float* bias,
                               bool relu, float* y, int64_t ys);
void conv_tile_store(const float* tile, int64_t rows, int64_t cols, const float* bias, bool relu,
                     float* y, int64_t ys);

// FusedConv: X [N, C, H, W], Wp [ceil(M / 32), C kh kw, 32] (or Conv's W [M, C, kh, kw]: then
// Conv's kernel with the relu in its epilogue), bias [M] (optional); Conv's attrs plus m (M),
// kernel_shape and activation "none" | "relu". Y [N, M, OH, OW].
void fused_conv_f32(const KernelCtx& ctx);
void fused_conv_f32_with(const KernelCtx& ctx, const GemmMicro& micro,
                         ConvTileStore store = conv_tile_store);

}  // namespace ember::cpu
