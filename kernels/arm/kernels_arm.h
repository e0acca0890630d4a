// AArch64 kernels: raw-pointer functions per ISA file (*_neon.cpp: baseline ASIMD, no extra
// flags; *_dotprod.cpp: -march=armv8.2-a+dotprod, behind a HWCAP check), and the
// baseline-compiled drivers that call them (KernelCtx in, threads on the shared pool). Only
// drivers are registered, in the aarch64 section of cpp/src/runtime/registry.cpp; each has its
// scalar reference in its op's OpDef row, and tests compare the two (tests/cpp/test_gemm.cpp,
// test_gemm_i8.cpp, test_rms_norm.cpp, test_arm_kernels.cpp).
#pragma once
#include <cstdint>

#include "ember/op.h"

namespace ember::cpu {

// ---- f32 GEMM micro-kernels (gemm_f32_neon.cpp; driver kernels/generic/gemm_f32.cpp) ----
// The GemmMicro contract (kernels_generic.h): c[rows, 16] (+)= a[rows, kc] @ b[kc, 16], rows <= 6.
void sgemm_micro_6x16_neon(int64_t kc, const float* a, int64_t lda, const float* b, int64_t ldb,
                           float* c, int64_t ldc, int rows, bool accumulate);
// One row: c[0:64] (+)= a[0:kc] @ four 16-wide panels of b (panel p at b + p * pstride, row
// stride ldb) — GemmMicro::row4.
void sgemm_row_1x64_neon(int64_t kc, const float* a, const float* b, int64_t ldb, int64_t pstride,
                         float* c, bool accumulate);
// Drivers (gemm_arm.cpp).
struct GemmMicro;
const GemmMicro& gemm_micro_neon();
void matmul_f32_neon(const KernelCtx& ctx);
void gemm_f32_neon(const KernelCtx& ctx);
void fused_matmul_f32_neon(const KernelCtx& ctx);
void winograd_conv_f32_neon(const KernelCtx& ctx);

// ---- INT8 W8A8 (gemm_i8_neon.cpp; driver gemm_i8_arm.cpp): the contracts of gemm_i8.h ----
void qgemm_i8_micro_6x16_neon(int64_t kp, const int16_t* a, int64_t lda, const int8_t* b,
                              int32_t* c, int64_t ldc, int rows, bool accumulate);
void qgemm_i8_epilogue_neon(const int32_t* acc, int64_t n, float a_scale, const float* w_scale,
                            const float* bias, float* y);  // [n] -> [n]
// sdot (gemm_i8_dotprod.cpp, -march=armv8.2-a+dotprod): the same contract for codes in
// [-128, 127] only (per-token activations); call only where arm_has_dotprod().
void qgemm_i8_micro_6x16_dotprod(int64_t kp, const int16_t* a, int64_t lda, const int8_t* b,
                                 int32_t* c, int64_t ldc, int rows, bool accumulate);
bool arm_has_dotprod();  // HWCAP_ASIMDDP, read once
struct QGemmI8Micro;
const QGemmI8Micro& qgemm_i8_micro_neon();
const QGemmI8Micro& qgemm_i8_micro_dotprod();
// a_mode "token" runs the sdot micro-kernel where the CPU has it, other modes (codes up to
// +-255) the smlal one.
void qmatmul_i8_neon(const KernelCtx& ctx);

// ---- normalisation rows (norm_f32_neon.cpp; drivers norm_arm.cpp) ----
// rms_norm_f32_row's contract and bits (kernels_generic.h); n > 0, x == y allowed.
void rms_norm_f32_row_neon(const float* x, const float* scale, float* y, int64_t n, float eps);
void rms_norm_f32_neon(const KernelCtx& ctx);  // accepts what rms_norm_f32_supports accepts
// layer_norm_f32's row: y = (x - mean) * inv_std * scale + bias (bias may be nullptr); mean_out /
// inv_std_out (may be nullptr) receive the row's statistics; n > 0, x == y allowed.
void layer_norm_f32_row_neon(const float* x, const float* scale, const float* bias, float* y,
                             int64_t n, float eps, float* mean_out, float* inv_std_out);
void layer_norm_f32_neon(const KernelCtx& ctx);  // accepts what layer_norm_f32_supports accepts

// ---- softmax rows (softmax_f32_neon.cpp; driver norm_arm.cpp) ----
// One row of n > 0 elements, exps summed in double in a fixed lane order; x == y is allowed.
// Within 4 ulp of the references (tests/cpp/test_arm_kernels.cpp).
void softmax_f32_row_neon(const float* x, float* y, int64_t n);      // [n] -> [n]
void log_softmax_f32_row_neon(const float* x, float* y, int64_t n);  // [n] -> [n]
void softmax_f32_neon(const KernelCtx& ctx);      // accepts what softmax_f32_supports accepts
void log_softmax_f32_neon(const KernelCtx& ctx);  // the same

}  // namespace ember::cpu
