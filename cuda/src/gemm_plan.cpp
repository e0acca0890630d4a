// GEMM plans for MatMul and Gemm (see gemm_plan.h); the shape rules mirror matmul_dims and
// gemm_dims in cpp/src/ops/ops_linalg.cpp, narrowed to what one cuBLASLt call can do.
#include "cuda/src/gemm_plan.h"

#include <algorithm>
#include <climits>

namespace ember::cuda {
namespace {

int64_t product(const Shape& s) {
  int64_t p = 1;
  for (int64_t d : s) p *= d;
  return p;
}

// cuBLASLt takes 64-bit dims in its layouts, but its kernels index with 32 bits and the batch
// count is an int32 attribute: larger problems run on the CPU.
bool fits_lt(const GemmPlan& p) {
  return p.m <= INT32_MAX && p.n <= INT32_MAX && p.k <= INT32_MAX && p.batch <= INT32_MAX;
}

}  // namespace

std::optional<GemmPlan> gemm_plan_matmul(const Shape& a, const Shape& b) {
  if (a.empty() || b.empty()) return std::nullopt;
  bool a1 = a.size() == 1, b1 = b.size() == 1;
  int64_t M = a1 ? 1 : a[a.size() - 2];
  int64_t K = a.back();
  int64_t kb = b1 ? b[0] : b[b.size() - 2];
  int64_t N = b1 ? 1 : b.back();
  if (K != kb) return std::nullopt;
  Shape a_batch(a.begin(), a.end() - (a1 ? 1 : 2));
  Shape b_batch(b.begin(), b.end() - (b1 ? 1 : 2));
  int64_t na = product(a_batch), nb = product(b_batch);

  GemmPlan p;
  p.n = N;
  p.k = K;
  p.lda = K;
  p.ldb = N;  // a 1-D B is [K, 1]: ld 1
  p.ldd = N;
  if (nb == 1) {
    // One B for every batch of A: contiguous A [..., M, K] is A [na * M, K], and the output
    // [..., M, N] is [na * M, N].
    p.m = na * M;
  } else {
    size_t r = std::max(a_batch.size(), b_batch.size());
    Shape pa(r - a_batch.size(), 1), pb(r - b_batch.size(), 1);
    pa.insert(pa.end(), a_batch.begin(), a_batch.end());
    pb.insert(pb.end(), b_batch.begin(), b_batch.end());
    p.m = M;
    p.stride_b = K * N;
    p.stride_d = M * N;
    if (na == 1) {
      p.batch = nb;  // every batch of B against the one A
      p.stride_a = 0;
    } else if (pa == pb) {
      p.batch = na;
      p.stride_a = M * K;
    } else {
      return std::nullopt;  // a true two-sided broadcast: no single strided batch covers it
    }
  }
  if (!fits_lt(p)) return std::nullopt;
  return p;
}

std::optional<GemmPlan> gemm_plan_gemm(const Shape& a, const Shape& b, const Shape* c,
                                       bool trans_a, bool trans_b, double alpha, double beta,
                                       bool bias_epilogue) {
  if (a.size() != 2 || b.size() != 2) return std::nullopt;
  GemmPlan p;
  p.trans_a = trans_a;
  p.trans_b = trans_b;
  p.m = trans_a ? a[1] : a[0];
  p.k = trans_a ? a[0] : a[1];
  int64_t kb = trans_b ? b[1] : b[0];
  p.n = trans_b ? b[0] : b[1];
  if (p.k != kb) return std::nullopt;
  p.lda = a[1];
  p.ldb = b[1];
  p.ldd = p.n;
  p.alpha = (float)alpha;
  p.beta = (float)beta;
  if (c && beta != 0) {
    const Shape& s = *c;
    if (s.size() > 2) return std::nullopt;
    int64_t rows = s.size() == 2 ? s[0] : 1;
    int64_t cols = s.empty() ? 1 : s.back();
    if ((rows != 1 && rows != p.m) || (cols != 1 && cols != p.n)) return std::nullopt;
    if (rows * cols == p.m * p.n) {
      p.c = GemmC::Full;  // same elements in the same order as D (a [1, n] when m == 1, ...)
      p.c_rs = p.n;
      p.c_cs = 1;
    } else {
      p.c_rs = rows == 1 ? 0 : cols;
      p.c_cs = cols == 1 ? 0 : 1;
      // The epilogue adds the bias after alpha and beta scaling: only beta == 1 matches.
      bool row = rows == 1 && cols == p.n;
      p.c = row && beta == 1 && bias_epilogue ? GemmC::Bias : GemmC::Broadcast;
    }
  } else {
    p.beta = 0;  // the reference ignores C when beta == 0 (even NaNs in it)
  }
  if (!fits_lt(p)) return std::nullopt;
  return p;
}

GemmPlan gemm_plan_with_m(const GemmPlan& p, int64_t m) {
  GemmPlan q = p;
  q.m = m;
  if (q.trans_a) q.lda = m;  // A stored [k, m]
  if (q.stride_a != 0) q.stride_a = m * q.k;
  if (q.stride_d != 0) q.stride_d = m * q.n;
  return q;
}

LtGemmArgs gemm_lt_args(const GemmPlan& p) {
  LtGemmArgs g;
  // cuBLASLt's A is our B: row-major [k, n] (ld n) is column-major [n, k]; a transposed B,
  // row-major [n, k] (ld k), is column-major [k, n] and takes CUBLAS_OP_T.
  g.trans_a = p.trans_b;
  g.a_rows = p.trans_b ? p.k : p.n;
  g.a_cols = p.trans_b ? p.n : p.k;
  g.lda = p.ldb;
  // cuBLASLt's B is our A: row-major [m, k] is column-major [k, m]; transposed, [m, k].
  g.trans_b = p.trans_a;
  g.b_rows = p.trans_a ? p.m : p.k;
  g.b_cols = p.trans_a ? p.k : p.m;
  g.ldb = p.lda;
  g.d_rows = p.n;
  g.d_cols = p.m;
  g.ldd = p.ldd;
  g.batch = p.batch;
  g.stride_a = p.stride_b;
  g.stride_b = p.stride_a;
  g.stride_d = p.stride_d;
  g.alpha = p.alpha;
  g.beta = p.c == GemmC::Bias ? 0.0f : p.beta;
  return g;
}

}  // namespace ember::cuda
