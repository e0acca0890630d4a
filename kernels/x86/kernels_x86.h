// x86 kernels: raw-pointer functions compiled for one ISA each (*_avx2.cpp: -mavx2 -mfma
// -mf16c), and the baseline-compiled drivers that call them (KernelCtx in, threads on the
// shared pool). Only drivers are registered in cpp/src/runtime/registry.cpp; each ISA function
// has its scalar reference in the OpDef row of its op, and tests compare the two.
#pragma once
#include <cstdint>

#include "ember/op.h"

namespace ember::cpu {

// ---- GEMM micro-kernels (gemm_f32_avx2.cpp; driver in kernels/generic/gemm_f32.cpp) ----
// The GemmMicro contract (kernels_generic.h): c[rows, 16] (+)= a[rows, kc] @ b[kc, 16], rows <= 6.
void sgemm_micro_6x16_avx2(int64_t kc, const float* a, int64_t lda, const float* b, int64_t ldb,
                           float* c, int64_t ldc, int rows, bool accumulate);
// One row: c[0:64] (+)= a[0:kc] @ four 16-wide panels of b (panel p at b + p * pstride, row
// stride ldb) — GemmMicro::row4.
void sgemm_row_1x64_avx2(int64_t kc, const float* a, const float* b, int64_t ldb, int64_t pstride,
                         float* c, bool accumulate);
// Drivers (gemm_x86.cpp).
struct GemmMicro;
const GemmMicro& gemm_micro_avx2();
void matmul_f32_avx2(const KernelCtx& ctx);
void gemm_f32_avx2(const KernelCtx& ctx);
void conv_f32_avx2(const KernelCtx& ctx);
void winograd_conv_f32_avx2(const KernelCtx& ctx);
void fused_conv_f32_avx2(const KernelCtx& ctx);
// WinogradTiles (kernels/generic/winograd_f32.h) in winograd_avx2.cpp: 8 tiles per step.
void winograd_input_avx2(const float* s, int64_t ss, int64_t n, float* v, int64_t vs);
void winograd_output_avx2(const float* m, int64_t ms, int64_t n, float bias, bool relu, float* y0,
                          float* y1, const float* r0, const float* r1);
void fused_matmul_f32_avx2(const KernelCtx& ctx);
void attention_f32_avx2(const KernelCtx& ctx);  // AVX2 GEMMs and score rows

// ---- AVX-512 GEMM micro-kernels (gemm_f32_avx512.cpp; driver kernels/generic/gemm_f32.cpp) ----
// The GemmMicro contract: c[rows, 16] (+)= a[rows, kc] @ b[kc, 16], rows <= 12 (GemmMicro::fn).
void sgemm_micro_12x16_avx512(int64_t kc, const float* a, int64_t lda, const float* b,
                              int64_t ldb, float* c, int64_t ldc, int rows, bool accumulate);
// Two panels: c[rows, 32] (+)= a[rows, kc] @ [b | b + pstride] (GemmMicro::fn2).
void sgemm_micro_12x32_avx512(int64_t kc, const float* a, int64_t lda, const float* b,
                              int64_t ldb, int64_t pstride, float* c, int64_t ldc, int rows,
                              bool accumulate);
// Two panels, A gathered: A[i, k] = a[off[k] + i * as] (GemmMicro::taps2).
void sgemm_taps_12x32_avx512(int64_t kc, const float* a, int64_t as, const int32_t* off,
                             const float* b, int64_t ldb, int64_t pstride, float* c, int64_t ldc,
                             int rows, bool accumulate, const float* pf, int64_t pf_lines);
// One row: c[0:64] (+)= a[0:kc] @ four 16-wide panels (GemmMicro::row4).
void sgemm_row_1x64_avx512(int64_t kc, const float* a, const float* b, int64_t ldb,
                           int64_t pstride, float* c, bool accumulate);
// Row kernels of the AVX-512 drivers (elementwise_avx512.cpp): the AVX2 ones' bits.
void gelu_erf_f32_array_avx512(const float* x, float* y, int64_t n);  // [n] -> [n], x == y ok
float attention_scores_row_avx512(float* s, int64_t n, float scale, bool div, const float* mask,
                                  int64_t mask_t);  // as attention_scores_row_avx2
// `rows` rows of s (row stride ld) at once, row r's mask at mask + r * mask_s, its sum to
// sums[r]: each row the bits of attention_scores_row_avx512 (AttentionRowsFn).
void attention_scores_rows_avx512(float* s, int64_t rows, int64_t ld, int64_t n, float scale,
                                  bool div, const float* mask, int64_t mask_s, int64_t mask_t,
                                  float* sums);
// Drivers (gemm_x86.cpp): AVX-512 micro-kernels and rows above, the rest as the AVX2 drivers.
const GemmMicro& gemm_micro_avx512();
void matmul_f32_avx512(const KernelCtx& ctx);
void gemm_f32_avx512(const KernelCtx& ctx);
void conv_f32_avx512(const KernelCtx& ctx);
void winograd_conv_f32_avx512(const KernelCtx& ctx);
void fused_conv_f32_avx512(const KernelCtx& ctx);
// FusedConv's epilogue (ConvTileStore, kernels/generic/conv_packed_f32.h) in
// conv_packed_avx512.cpp: 16 x 16 blocks transposed in registers.
void conv_tile_store_avx512(const float* tile, int64_t rows, int64_t cols, const float* bias,
                            bool relu, float* y, int64_t ys);
void fused_matmul_f32_avx512(const KernelCtx& ctx);
void attention_f32_avx512(const KernelCtx& ctx);

// ---- elementwise and normalisation (elementwise_avx2.cpp; drivers in elementwise_x86.cpp) ----
// y[i] = f(x[i]) for i < n; x == y is allowed. Within 1 ulp (exp, tanh, erf), 2 (sigmoid,
// gelu_tanh), 3 (gelu_erf) of the double references: tests/cpp/test_x86_kernels.cpp.
void exp_f32_array_avx2(const float* x, float* y, int64_t n);        // [n] -> [n]
void tanh_f32_array_avx2(const float* x, float* y, int64_t n);       // [n] -> [n]
void sigmoid_f32_array_avx2(const float* x, float* y, int64_t n);    // [n] -> [n]
void erf_f32_array_avx2(const float* x, float* y, int64_t n);        // [n] -> [n]
void gelu_erf_f32_array_avx2(const float* x, float* y, int64_t n);   // [n] -> [n]
void gelu_tanh_f32_array_avx2(const float* x, float* y, int64_t n);  // [n] -> [n]
// One row of n > 0 elements, summed in a fixed lane order; x == y is allowed.
void softmax_f32_row_avx2(const float* x, float* y, int64_t n);      // [n] -> [n]
void log_softmax_f32_row_avx2(const float* x, float* y, int64_t n);  // [n] -> [n]
// One attention score row in place: s = softmax(s * scale (or / scale) + mask[t * mask_t]);
// mask may be nullptr, mask_t 0 broadcasts mask[0]. Float sums (Attention's tolerance).
float attention_scores_row_avx2(float* s, int64_t n, float scale, bool div, const float* mask,
                                int64_t mask_t);
// y = (x - mean) * inv_std * scale + bias (bias may be nullptr); mean_out / inv_std_out
// (may be nullptr) receive the row's statistics.
void layer_norm_f32_row_avx2(const float* x, const float* scale, const float* bias, float* y,
                             int64_t n, float eps, float* mean_out, float* inv_std_out);
// y = x / sqrt(mean(x^2) + eps) * scale (scale may be nullptr: ones); x^2 summed in double.
void rms_norm_f32_row_avx2(const float* x, const float* scale, float* y, int64_t n, float eps);
// Drivers (elementwise_x86.cpp); each accepts what its generic kernel's supports() accepts.
void exp_f32_avx2(const KernelCtx& ctx);
void tanh_f32_avx2(const KernelCtx& ctx);
void sigmoid_f32_avx2(const KernelCtx& ctx);
void erf_f32_avx2(const KernelCtx& ctx);
void gelu_f32_avx2(const KernelCtx& ctx);  // both forms (attr approximate)
void softmax_f32_avx2(const KernelCtx& ctx);
void log_softmax_f32_avx2(const KernelCtx& ctx);
void layer_norm_f32_avx2(const KernelCtx& ctx);
void rms_norm_f32_avx2(const KernelCtx& ctx);

// ---- pooling (pool_avx2.cpp; driver in pool_x86.cpp) ----
// MaxPool over one plane: x [H, W] -> y [OH, OW]; k, s, d, pb [2] (h, w): kernel, stride,
// dilation, begin pad as pool_geom gives them. Bit-exact with the reference (NaN, +-0).
void max_pool_f32_plane_avx2(const float* x, float* y, int64_t H, int64_t W, int64_t OH,
                             int64_t OW, const int64_t* k, const int64_t* s, const int64_t* d,
                             const int64_t* pb);
void max_pool_f32_avx2(const KernelCtx& ctx);  // accepts what max_pool_f32_supports accepts

}  // namespace ember::cpu
