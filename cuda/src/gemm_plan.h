// GEMM plans: how a MatMul or Gemm node's row-major operands become one cuBLASLt call, and the
// column-major arguments of that call. Plain C++ (no CUDA, no cuBLAS) so host tests cover it.
//
// Row-major trick: a row-major X [r, c] is the column-major X^T [c, r] with the same leading
// dimension, so D = op(A) @ op(B) (row-major [m, n]) is computed as the column-major
// D^T [n, m] = op(B)^T @ op(A)^T: cuBLASLt's A is our B and its B is our A, transposes kept.
// Every layout stays CUBLASLT_ORDER_COL (the order every cuBLASLt kernel supports).
#pragma once
#include <cstdint>
#include <optional>

#include "ember/tensor.h"

namespace ember::cuda {

// How Gemm's C reaches the output.
enum class GemmC : uint8_t {
  None,       // no C, or beta == 0 (C is not read, as in the reference)
  Full,       // C is [m, n] (as many elements as D): cuBLASLt reads it as its C matrix
  Bias,       // C is a row [n] or [1, n] and beta == 1: cuBLASLt's BIAS epilogue adds it
  Broadcast,  // any other C: gemm_fill_c writes it broadcast into D, then D = alpha AB + beta D
};

// D [batch, m, n] = alpha * op(A) @ op(B) + beta * C; every operand row-major and contiguous per
// batch. Dims and strides are in elements.
struct GemmPlan {
  int64_t m = 0, n = 0, k = 0;
  int64_t batch = 1;
  bool trans_a = false, trans_b = false;             // A stored [k, m] / B stored [n, k]
  int64_t lda = 0, ldb = 0, ldd = 0;                 // row-major leading dims as stored
  int64_t stride_a = 0, stride_b = 0, stride_d = 0;  // between batches; 0: shared by all
  float alpha = 1, beta = 0;
  GemmC c = GemmC::None;
  int64_t c_rs = 0, c_cs = 0;  // C's strides once broadcast to [m, n] (0 on broadcast dims)
};

// numpy matmul of A and B (1-D operands promoted and their dim dropped, as numpy does). B 2-D
// or with batch dims all 1: A's batch folds into m (one GEMM). A's batch all 1: B's batches
// share A (stride 0). Equal batch dims (after left-padding with 1s): strided batched GEMM.
// nullopt: mismatched K, any other batch broadcast, or a dim past cuBLASLt's 32-bit limits.
std::optional<GemmPlan> gemm_plan_matmul(const Shape& a, const Shape& b);

// ONNX Gemm: A, B 2-D, transA / transB, alpha, beta, C broadcast to [m, n] (c may be null).
// bias_epilogue=false never picks GemmC::Bias (deterministic runs: one path for every C).
std::optional<GemmPlan> gemm_plan_gemm(const Shape& a, const Shape& b, const Shape* c,
                                       bool trans_a, bool trans_b, double alpha, double beta,
                                       bool bias_epilogue = true);

// The same plan for another m (the heuristic query of deterministic runs, which picks one
// algorithm for every m): the m-dependent leading dim and strides follow.
GemmPlan gemm_plan_with_m(const GemmPlan& p, int64_t m);

// The column-major call: cuBLASLt's A = our B, its B = our A, D^T [n, m]. Layout rows/cols are
// of the matrices as stored (before the op), as cublasLtMatrixLayoutCreate takes them.
struct LtGemmArgs {
  bool trans_a = false, trans_b = false;  // CUBLAS_OP_T on cuBLASLt's A / B
  int64_t a_rows = 0, a_cols = 0, lda = 0;
  int64_t b_rows = 0, b_cols = 0, ldb = 0;
  int64_t d_rows = 0, d_cols = 0, ldd = 0;  // C's layout is D's
  int64_t batch = 1;
  int64_t stride_a = 0, stride_b = 0, stride_d = 0;
  // cuBLASLt's scalars. beta is 0 with the BIAS epilogue: that adds C itself, and cuBLASLt's
  // C matrix (D, uninitialised then) must not be read.
  float alpha = 1, beta = 0;
};
LtGemmArgs gemm_lt_args(const GemmPlan& p);

}  // namespace ember::cuda
